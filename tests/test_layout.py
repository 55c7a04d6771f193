"""The layout keeps its promises: frameworks only behind the adapters, no import cycles, a thin CLI."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The repository's folders and the package names they install as (pyproject.toml).
PACKAGES = {"infercost": "infercost", "bench": "infercost.bench", "kernels": "infercost.kernels",
            "hardware": "infercost.hardware"}
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


def framework_offenders(known: dict[str, Path]) -> dict[str, list[str]]:
    """Modules that import a framework without naming it (torch_backend, llama_jax, int8_gemv_torch_cpu
    say what they load; a module whose name does not may import none)."""
    offenders = {}
    for name, path in known.items():
        leaf = name.rsplit(".", 1)[-1]
        bad = sorted(m for m in imports(name, path, set(known))
                     if m.split(".")[0] in FRAMEWORKS and not any(f in leaf for f in ("torch", "jax")))
        if bad:
            offenders[name] = bad
    return offenders


def test_a_module_that_imports_a_framework_says_so_in_its_name():
    known = modules()
    assert framework_offenders(known) == {}
    assert "infercost.bench.llm" in known and "infercost.kernels.matmul" in known  # the check looks where it should
    assert {"infercost.bench.adapters.torch_backend", "infercost.kernels.llama_jax"} <= set(known)


def test_the_framework_check_finds_a_plain_named_module_that_imports_torch(tmp_path):
    (tmp_path / "sums.py").write_text("def f():\n    import torch.nn\n")
    (tmp_path / "sums_torch.py").write_text("import torch\n")
    known = {"pkg.sums": tmp_path / "sums.py", "pkg.sums_torch": tmp_path / "sums_torch.py"}
    assert framework_offenders(known) == {"pkg.sums": ["torch.nn"]}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None (depth-first search)."""
    state, path = {}, []

    def visit(n):
        state[n] = "open"
        path.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                return path[path.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        path.pop()
        state[n] = "done"
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    return {n: {m for m in imports(n, p, set(known)) if m in known and m != n} for n, p in known.items()}


def test_the_project_modules_import_no_cycle():
    assert find_cycle(import_graph(modules())) is None


def test_the_cycle_check_finds_a_cycle_and_only_a_cycle(tmp_path):
    # Three modules: a imports b, b imports c (inside a function), c imports a; then without c's import.
    files = {"pkg.a": "from pkg import b\n", "pkg.b": "def f():\n    import pkg.c\n", "pkg.c": "from pkg.a import x\n"}
    known = {}
    for name, text in files.items():
        known[name] = tmp_path / f"{name}.py"
        known[name].write_text(text)
    assert find_cycle(import_graph(known)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    known["pkg.c"].write_text("import json\n")
    assert find_cycle(import_graph(known)) is None


def test_the_cli_only_dispatches_and_each_command_is_a_module():
    lines = len((ROOT / "infercost" / "cli.py").read_text().splitlines())
    assert lines < 100, f"infercost/cli.py has {lines} lines: it builds the parser and dispatches, nothing more"
    from infercost.commands import COMMANDS
    folder = ROOT / "infercost" / "commands"
    assert {c.__name__.rsplit(".", 1)[1] for c in COMMANDS} == {p.stem for p in folder.glob("*.py")} - {"__init__", "common"}
    for c in COMMANDS:
        assert isinstance(c.NAME, str) and isinstance(c.HELP, str) and callable(c.arguments) and callable(c.run), c


def assigned_args(path: Path) -> list[str]:
    """`args.x = ...` (or +=, or a tuple of them) anywhere in a file: a handler changing what was parsed."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "args":
                    found.append(f"{path.name}:{n.lineno} args.{n.attr}")
    return found


def test_no_command_changes_its_parsed_arguments(tmp_path):
    assert [f for p in sorted((ROOT / "infercost" / "commands").glob("*.py")) for f in assigned_args(p)] == []
    (tmp_path / "bad.py").write_text("def run(args):\n    args.mfu, args.mbu = 1, 2\n    args.n += 1\n")
    assert assigned_args(tmp_path / "bad.py") == ["bad.py:2 args.mfu", "bad.py:2 args.mbu", "bad.py:3 args.n"]


JAX_ONLY = """
import sys
from infercost.bench.backend import open_backend
from infercost.kernels.llama import CONFIGS
backend = open_backend("jax-cpu", threads=2)
runner = backend.load_model(CONFIGS["tiny"], "float32", 1, 16)
bandwidth, basis = backend.read_bandwidth(runner.streamed())
print(bandwidth > 0, "this model's weights" in basis, sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
"""


def test_jax_cpu_measures_its_read_ceiling_without_loading_torch():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", JAX_ONLY], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[-2] == "True True []"


def test_every_package_folder_is_installed():
    # pyproject.toml lists the packages one by one: a folder left out works in an editable checkout
    # and is missing from a built wheel (commands/ and serving/ once were).
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert folders == listed
