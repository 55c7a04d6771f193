"""The targets a benchmark script prints last: one line each, met or NOT met, and the exit status.

    checks: (name, value, target, op) with op ">=", "<=" or "within" (target: tolerance around 1)
"""

from __future__ import annotations


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
