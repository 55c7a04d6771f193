"""The changes of every series in the history, what changed at each (a version, the commit, the
host, the price row), whether a cost moved because the price did or the speed did, and the alarms
of `history check`: the newest points of a series forming a regression beyond a threshold."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .detect import MIN_POINTS, Change, changes
from .points import PRICE_METRICS, direction


@dataclass(frozen=True)
class Found:
    instance: str
    case_name: str
    key: str
    metric: str
    time: object          # the first point after the change
    change: Change
    kind: str             # "speed", "price" or "price and speed"
    what: tuple[str, ...]  # what differs between the two sides: versions, commit, host, price row
    points: int           # points in the series
    after: int            # points from the change to the newest

    @property
    def regression(self) -> bool:
        return self.change.size * direction(self.metric) < 0


def series(df):
    """(instance, key, metric, rows sorted by time) for each series of a store's frame."""
    for (instance, key, metric), rows in df.groupby(["instance", "key", "metric"], sort=True):
        yield instance, key, metric, rows.sort_values("time", kind="stable").reset_index(drop=True)


def find(df) -> tuple[list[Found], list[tuple]]:
    """(every change found, the series too short for a verdict as (instance, case, metric, points))."""
    found, short = [], []
    for instance, key, metric, rows in series(df):
        if len(rows) < MIN_POINTS:
            short.append((instance, rows["case_name"].iloc[0], metric, len(rows)))
            continue
        cuts = changes(rows["value"].to_numpy())
        bounds = [0] + [c.index for c in cuts] + [len(rows)]
        for i, c in enumerate(cuts):
            before, after = rows.iloc[bounds[i]:c.index], rows.iloc[c.index:bounds[i + 2]]
            found.append(Found(instance, rows["case_name"].iloc[0], key, metric, rows["time"].iloc[c.index], c,
                               kind(metric, before, after, c), what_changed(before, after), len(rows), len(rows) - c.index))
    return found, short


def kind(metric: str, before, after, c: Change) -> str:
    """A cost moves with the price row and with the speed (cost = price / throughput): which one
    moved is read from the price each point was priced at."""
    if metric not in PRICE_METRICS:
        return "speed"
    p0, p1 = before["usd_per_hour"].median(), after["usd_per_hour"].median()
    price = p1 / p0 - 1 if p0 and p1 else 0.0
    speed = (1 + c.size) / (1 + price) - 1  # the part of the cost's change that the price does not explain
    if abs(price) < 1e-9:
        return "speed"
    return "price" if abs(speed) < max(0.01, abs(c.size) / 3) else "price and speed"


def _usual(rows, column: str):
    values = rows[column].dropna()
    return values.mode().iloc[0] if len(values) else None


def what_changed(before, after) -> tuple[str, ...]:
    """What differs between the usual values on the two sides of a change (each side's most common)."""
    out = []
    v0, v1 = (json.loads(_usual(s, "versions") or "{}") for s in (before, after))
    for name in sorted(set(v0) | set(v1)):
        if v0.get(name) != v1.get(name):
            out.append(f"{name} {_short(v0.get(name))} -> {_short(v1.get(name))}")
    for column, label in (("infercost", "infercost"), ("cpu_model", "cpu"), ("device", "device")):
        a, b = _usual(before, column), _usual(after, column)
        if a != b:
            out.append(f"{label} {_short(a)} -> {_short(b)}")
    a, b = before["host"].dropna().unique(), after["host"].dropna().unique()
    if len(a) == 1 and len(b) == 1 and a[0] != b[0]:  # a fleet's instances get a new host name every night: said
        out.append(f"host {_short(a[0])} -> {_short(b[0])}")  # only where each side ran on one host
    a, b = before["git_commit"].iloc[-1], after["git_commit"].iloc[0]  # the range a bisection would search
    if a != b:
        out.append(f"commits {_short(a)}..{_short(b)}")
    a, b = _usual(before, "usd_per_hour"), _usual(after, "usd_per_hour")
    if a != b and a is not None and b is not None:
        out.append(f"price ${a:g}/h -> ${b:g}/h (as of {_usual(after, 'price_as_of')})")
    elif _usual(before, "price_as_of") != _usual(after, "price_as_of"):
        out.append(f"price row as of {_usual(before, 'price_as_of')} -> {_usual(after, 'price_as_of')}")
    return tuple(out)


def _short(value) -> str:
    if value is None:
        return "none"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:8] if len(text) == 40 and all(ch in "0123456789abcdef" for ch in text) else text[:60]


def alarms(found: list[Found], thresholds: dict, default: float, recent: int) -> list[Found]:
    """The regressions beyond their metric's threshold among a series' newest `recent` points,
    the last change of each series only (a later change supersedes it)."""
    last: dict = {}
    for f in found:
        last[(f.instance, f.key, f.metric)] = f
    return [f for f in last.values()
            if f.regression and f.after <= recent and abs(f.change.size) >= thresholds.get(f.metric, default)]
