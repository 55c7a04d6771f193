"""The layout keeps its promises: frameworks only behind the adapters, no import cycles, a thin CLI."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The repository's folders and the package names they install as (pyproject.toml).
PACKAGES = {"infercost": "infercost", "bench": "infercost.bench", "kernels": "infercost.kernels",
            "hardware": "infercost.hardware"}
# The only modules that may import torch or jax: the adapters (torch_dist: the torch adapter's ranks)
# and the per-framework model files.
FRAMEWORK_MODULES = {"infercost.bench.torch_backend", "infercost.bench.torch_dist", "infercost.bench.jax_backend",
                     "infercost.kernels.llama_torch", "infercost.kernels.llama_torch_cpu", "infercost.kernels.int8_gemv_cpu",
                     "infercost.kernels.llama_jax"}
FRAMEWORKS = ("torch", "jax", "jaxlib", "triton")


def modules() -> dict[str, Path]:
    """Every installed module of the harness (bench/perf holds scripts, not the harness)."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            if rel.parts[0] == "perf":
                continue
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules this one imports anywhere in its body (functions included), resolved to module names."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
            out.update(subs or [mod])
    return out


def test_only_adapters_and_model_files_import_a_framework():
    known = modules()
    offenders = {}
    for name, path in known.items():
        if name in FRAMEWORK_MODULES:
            continue
        bad = sorted(m for m in imports(name, path, set(known)) if m.split(".")[0] in FRAMEWORKS)
        if bad:
            offenders[name] = bad
    assert not offenders, offenders
    assert "infercost.bench.llm" in known and "infercost.kernels.matmul" in known  # the check looks where it should


def test_the_project_modules_import_no_cycle():
    known = modules()
    graph = {n: {m for m in imports(n, p, set(known)) if m in known and m != n} for n, p in known.items()}
    # A package's __init__ that only re-exports is not a cycle with its own modules.
    state, path = {}, []

    def visit(n):
        state[n] = "open"
        path.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
            if m not in state:
                visit(m)
        path.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_the_cycle_check_finds_a_cycle(tmp_path):
    # The check itself can fail: two modules that import each other are reported.
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from pkg import b\n")
    b.write_text("import pkg.a\n")
    known = {"pkg.a", "pkg.b"}
    assert imports("pkg.a", a, known) == {"pkg.b"} and imports("pkg.b", b, known) == {"pkg.a"}


def test_the_cli_stays_thin():
    lines = len((ROOT / "infercost" / "cli.py").read_text().splitlines())
    assert lines < 400, f"infercost/cli.py has {lines} lines: move logic below it"
