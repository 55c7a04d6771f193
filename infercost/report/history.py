"""The report's history section: series over time with their change points, what changed at each,
and the table of changes (from a store's points and infercost/history/changes.find)."""

from __future__ import annotations

import html

from .figures import _plt

SHOWN = 6  # series drawn: those with changes first, then the longest


def chosen(df, found) -> list:
    """The series to draw: those with the most changes first, newest change first, one series for
    each metric and set of change times before any repeats one; then the longest."""
    from infercost.history.changes import series
    times: dict = {}
    for f in found:
        times.setdefault((f.instance, f.key, f.metric), []).append(f.time)
    ranked = sorted(((len(rows), (i, k, m), rows) for i, k, m, rows in series(df)),
                    key=lambda s: (-len(times.get(s[1], ())), -max((t.timestamp() for t in times.get(s[1], ())), default=0), -s[0]))
    firsts, seen = [], set()
    for s in ranked:
        shape = (s[1][2], len(times.get(s[1], ())))
        if shape not in seen:
            seen.add(shape)
            firsts.append(s)
    return (firsts + [s for s in ranked if s not in firsts])[:SHOWN]


def fig_history(df, found):
    """One panel a series: its points, each segment's mean, a line at every change labelled with
    its size and what changed there (a version, the commit, the price row)."""
    picked = chosen(df, found)
    if not picked:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(picked), 1, figsize=(7, 2.1 * len(picked) + 0.4), squeeze=False)
    by_series: dict = {}
    for f in found:
        by_series.setdefault((f.instance, f.key, f.metric), []).append(f)
    for ax, (_, name, rows) in zip(axes[:, 0], picked):
        t, v = rows["time"], rows["value"]
        ax.plot(t, v, "o", ms=2.5, color="C0")
        ours = by_series.get(name, [])
        bounds = [0] + [f.change.index for f in ours] + [len(rows)]
        for a, b in zip(bounds, bounds[1:]):
            ax.hlines(v.iloc[a:b].mean(), t.iloc[a], t.iloc[b - 1], color="C1", lw=1.2)
        for n, f in enumerate(ours):
            ax.axvline(f.time, color="C3" if f.regression else "C2", lw=0.9, ls="--")
            what = [w for w in f.what if not w.startswith("commits")][:1]
            note = (f"{f.change.size:+.1%} ({f.kind})" + (f": {what[0]}" if what else "")).replace("$", r"\$")
            right = f.change.index > len(rows) / 2  # the label on the side with room
            ax.annotate(note, (f.time, ax.get_ylim()[1]), fontsize=6, va="top", ha="right" if right else "left",
                        xytext=(-3 if right else 3, -2 - 8 * n), textcoords="offset points")
        ax.set_title(f"{name[0]}  {rows['case_name'].iloc[-1]}  {name[2]}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    fig.suptitle("History: points, segment means, change points (red: worse, green: better)", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


HEAD = ["instance", "case", "metric", "at", "size (95% interval)", "kind", "what changed there"]


def change_rows(found) -> list[list[str]]:
    return [[f.instance, f.case_name, f.metric, f"{f.time:%Y-%m-%d %H:%M}",
             f"{f.change.size:+.1%} ({f.change.low:+.1%} to {f.change.high:+.1%})" + (" worse" if f.regression else ""),
             f.kind, ", ".join(f.what) or "-"] for f in found]


def section(df, found, store: str) -> tuple[list[str], str, bytes | None]:
    """(Markdown lines, HTML, the figure's PNG or None) of the history section."""
    from .figures import png
    fig = fig_history(df, found)
    image = png(fig) if fig is not None else None
    n = df.groupby(["instance", "key", "metric"]).ngroups
    note = (f"{len(df)} points in {n} series from the history {store}; changes found by ruptures' PELT search "
            "with Welch's t-test (p < 0.01) on each side's points")
    rows = change_rows(found)
    md = ["## History", "", f"*{note}.*", ""]
    if image:
        md += ["![History](history.png)", ""]
    e = html.escape
    body = f"<h2>History</h2><p>{e(note)}.</p>"
    if rows:
        md += ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD),
               *["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows], ""]
        body += ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEAD) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
    else:
        md += ["No change found in any series.", ""]
        body += "<p>No change found in any series.</p>"
    return md, body, image
