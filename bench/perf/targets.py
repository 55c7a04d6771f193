"""The targets a benchmark script prints last: one line each, met or NOT met, and the exit status.

    checks: (name, value, target, op) with op ">=", "<=" or "within" (target: tolerance around 1)
"""

from __future__ import annotations

import os


def cap_isa() -> str:
    """Apply INFERCOST_CPU_ISA to this process (call before torch or jax is imported) and say which
    CPU flags decide the CPU paths, for the header: two hosts' results are told apart by it."""
    from infercost.hardware.host import cpu_model, isa_env, isa_summary
    os.environ.update(isa_env(dict(os.environ)))
    return f"{cpu_model()}; flags: {isa_summary()}"


def report(checks: list[tuple[str, float, float, str]]) -> bool:
    width = max(len(c[0]) for c in checks) + 1
    ok = True
    for name, value, target, op in checks:
        good = {">=": value >= target, "<=": value <= target, "within": abs(value - 1) <= target}[op]
        ok &= good
        shown = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3f}"
        goal = f"1 +- {target:g}" if op == "within" else f"{op} {target:g}"
        print(f"{name:<{width}} {shown:>8}  target {goal}  {'met' if good else 'NOT met'}")
    return ok
