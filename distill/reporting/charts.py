"""The charts of `distill report`: one matplotlib figure per figure set, returned as inline SVG text.

Charts are drawn with matplotlib's object API (`matplotlib.figure.Figure`, no pyplot): nothing global is touched,
no GUI backend is ever selected, and the SVG writer needs no display. Text stays text (`svg.fonttype: none`), ids
are salted per chart so several charts can share one HTML page, and the XML prologue and metadata block are
stripped, so the SVG embeds as is and refers to nothing outside itself.
"""

from __future__ import annotations

import io
import itertools
import re
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["CHARTS", "COLORS", "render_chart"]

COLORS = {
    "accepted": "#2a9d8f",
    "rejected": "#e76f51",
    "failed": "#8d99ae",
    "train": "#2a9d8f",
    "validation": "#457b9d",
    "over_limit": "#e76f51",
    "target": "#264653",
    "requested": "#c9d6df",
    "limit": "#d62828",
    "bar": "#457b9d",
}
_MAX_BARS = 30


def _figure(height: float = 3.2, width: float = 8.0) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _style(ax: Any, title: str | None = None) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="both", alpha=0.25, linewidth=0.6)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, loc="left", fontsize=10)


def _short(label: str, width: int = 38) -> str:
    """A label that fits: whole path components from the end ("…/corpus/a.md"), else the last characters."""
    if len(label) <= width:
        return label
    parts = label.replace("\\", "/").split("/")
    tail = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + len(tail) + 3 > width:
            break
        tail = f"{part}/{tail}"
    return "…/" + tail if len(tail) + 2 <= width else "…" + label[-(width - 1) :]


def _integers(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _legend(fig: Any, ncols: int = 4) -> None:
    fig.legend(loc="outside upper right", frameon=False, fontsize=8, ncols=ncols)


def _tokens(fig: Any, data: dict[str, Any]) -> None:
    ax = fig.add_subplot()
    edges = data["bins"]
    bottoms = [0] * (len(edges) - 1)
    for series in ("train", "validation", "over_limit"):
        counts = data["counts"][series]
        if not any(counts):
            continue
        widths = [b - a for a, b in itertools.pairwise(edges)]
        label = {"over_limit": "rejected: over the limit"}.get(series, series)
        ax.bar(edges[:-1], counts, width=widths, bottom=bottoms, align="edge", color=COLORS[series], label=label,
               edgecolor="white", linewidth=0.3)
        bottoms = [b + c for b, c in zip(bottoms, counts)]
    right = max(data["limit"], edges[-1])
    if data["log_x"]:
        ax.set_xscale("log")
        ax.set_xlim(edges[0] / 1.3, right * 1.4)
    else:
        ax.set_xlim(0, right * 1.05)
    ax.axvline(data["limit"], color=COLORS["limit"], linestyle="--", linewidth=1.4)
    ax.text(data["limit"], ax.get_ylim()[1] * 0.95, f" limit {data['limit']:,}\n {data['model']} ",
            color=COLORS["limit"], ha="right", va="top", fontsize=8)
    ax.set_xlabel("tokens per example" + (" (log scale)" if data["log_x"] else ""))
    ax.set_ylabel("examples")
    _integers(ax.yaxis)
    _legend(fig)
    _style(ax)


def _stacked_bars(fig: Any, keys: list[str], series: dict[str, list[int]], xlabel: str, ylabel: str) -> None:
    ax = fig.add_subplot()
    bottoms = [0] * len(keys)
    for name, counts in series.items():
        if not any(counts):
            continue
        ax.bar(keys, counts, bottom=bottoms, color=COLORS.get(name, COLORS["bar"]), label=name, width=0.7)
        bottoms = [b + c for b, c in zip(bottoms, counts)]
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _integers(ax.yaxis)
    _legend(fig)
    _style(ax)


def _steps(fig: Any, data: dict[str, Any]) -> None:
    keys = [str(k) for k in data["steps"]]
    series = {o: [data["by_outcome"][o].get(k, 0) for k in keys] for o in ("accepted", "rejected", "failed")}
    _stacked_bars(fig, keys, series, "model calls (steps) in the conversation", "conversations")


def _hbars(fig: Any, labels: list[str], values: list[float], colors: list[str] | str, xlabel: str,
           fmt: Callable[[float], str] = lambda v: f"{v:,.0f}", integer: bool = True) -> None:
    ax = fig.add_subplot()
    y = list(range(len(labels)))
    ax.barh(y, values, color=colors, height=0.65)
    ax.set_yticks(y, [_short(lab) for lab in labels], fontsize=8)
    ax.invert_yaxis()
    top = max(values, default=0) or 1
    for i, v in enumerate(values):
        ax.text(v + top * 0.01, i, fmt(v), va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel(xlabel)
    if integer:
        _integers(ax.xaxis)
    _style(ax)
    ax.grid(axis="y", visible=False)


def _height(n: int) -> float:
    return max(1.8, 0.9 + 0.28 * min(n, _MAX_BARS))


def _actions(fig: Any, data: dict[str, Any]) -> None:
    items = list(data["counts"].items())[:_MAX_BARS]
    _hbars(fig, [k for k, _ in items], [v for _, v in items], COLORS["bar"], "steps in accepted conversations")


def _rejects(fig: Any, data: dict[str, Any]) -> None:
    items = [(r, n, "rejected") for r, n in data["rejected"].items()] + [
        (r, n, "failed") for r, n in data["failed"].items()
    ]
    items.sort(key=lambda x: -x[1])
    items = items[:_MAX_BARS]
    _hbars(fig, [f"{r} ({o})" for r, _, o in items], [n for _, n, _ in items],
           [COLORS[o] for _, _, o in items], "conversations")


def _mix(fig: Any, data: dict[str, Any]) -> None:
    ax = fig.add_subplot()
    kinds = list(data["by_kind"])
    x = list(range(len(kinds)))
    cells = [data["by_kind"][k] for k in kinds]
    ax.bar([i - 0.2 for i in x], [c["requested"] for c in cells], width=0.4, color=COLORS["requested"],
           label="requested")
    ax.bar([i + 0.2 for i in x], [c["accepted"] for c in cells], width=0.4, color=COLORS["accepted"],
           label="accepted")
    slack = data.get("allowed_shortfall", 0)
    for i, c in enumerate(cells):
        ax.hlines(c["target"], i - 0.45, i + 0.45, color=COLORS["target"], linewidth=2,
                  label="target" if i == 0 else None)
        if slack:
            ax.fill_between([i - 0.45, i + 0.45], c["target"] - slack, c["target"], color=COLORS["target"],
                            alpha=0.12, label="tolerance" if i == 0 else None)
        rate = f"{c['rate']:.0%} accepted" if c["rate"] is not None else "none requested"
        top = max(c["target"], c["requested"], c["accepted"])
        ax.text(i, top * 1.04 + 0.5, f"{'met' if c['met'] else 'SHORT'} · {c['accepted']}/{c['target']} · {rate}",
                ha="center", va="bottom", fontsize=8, color=COLORS["target"] if c["met"] else COLORS["rejected"])
    ax.set_xticks(x, kinds)
    ax.set_ylabel("conversations")
    ax.margins(y=0.25)
    _integers(ax.yaxis)
    _legend(fig)
    _style(ax)


def _grouped_h(fig: Any, cells: dict[str, dict[str, Any]], unit: str) -> None:
    ax = fig.add_subplot()
    names = list(cells)[:_MAX_BARS]
    y = list(range(len(names)))
    ax.barh([i - 0.2 for i in y], [cells[n]["requested"] for n in names], height=0.4, color=COLORS["requested"],
            label="requested")
    ax.barh([i + 0.2 for i in y], [cells[n]["accepted"] for n in names], height=0.4, color=COLORS["accepted"],
            label="accepted")
    top = max((cells[n]["requested"] for n in names), default=0) or 1
    for i, n in enumerate(names):
        rate = cells[n]["rate"]
        text = f"{cells[n]['accepted']} ({rate:.0%})" if rate is not None else "0"
        ax.text(max(cells[n]["requested"], cells[n]["accepted"]) + top * 0.01, i, text, va="center", fontsize=8)
    ax.set_yticks(y, [_short(n) for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.2)
    ax.set_xlabel(unit)
    _integers(ax.xaxis)
    _legend(fig)
    _style(ax)
    ax.grid(axis="y", visible=False)


def _tools(fig: Any, data: dict[str, Any]) -> None:
    _grouped_h(fig, data["by_tool"], "conversations planned for the tool (accepted, acceptance rate)")


def _without_common_folder(names: list[str]) -> list[str]:
    """Document names without the folders they all share ("../corpus/a.md", "../corpus/b.md" -> "a.md", "b.md")."""
    split = [n.replace("\\", "/").split("/") for n in names]
    common = 0
    while len(split) > 1 and all(len(p) > common + 1 and p[common] == split[0][common] for p in split):
        common += 1
    return ["/".join(p[common:]) for p in split]


def _documents(fig: Any, data: dict[str, Any]) -> None:
    docs = data["by_document"]
    cells = dict(zip(_without_common_folder(list(docs)), docs.values(), strict=True))
    _grouped_h(fig, cells, "conversations from the document (accepted, acceptance rate)")


def _duplicates(fig: Any, data: dict[str, Any]) -> None:
    items = list(data["by_reason"].items())
    _hbars(fig, [k for k, _ in items], [v for _, v in items], COLORS["rejected"], "conversations dropped")


def _cost(fig: Any, data: dict[str, Any]) -> None:
    items = list(data["by_stage"].items()) or [("total", data["total_usd"] or 0.0)]
    _hbars(fig, [k for k, _ in items], [v for _, v in items], COLORS["bar"], "US dollars",
           fmt=lambda v: f"${v:,.4f}" if v < 1 else f"${v:,.2f}", integer=False)


def _judge(fig: Any, data: dict[str, Any]) -> None:
    """Conversations per judge score (1-5), one bar group per score, a bar per criterion; thresholds in the legend."""
    ax = fig.add_subplot()
    criteria = list(data["scores"])
    width = 0.8 / max(1, len(criteria))
    palette = ["#2a9d8f", "#457b9d", "#e9c46a", "#e76f51", "#8d99ae", "#264653"]
    for i, criterion in enumerate(criteria):
        counts = [data["scores"][criterion].get(str(s), 0) for s in range(1, 6)]
        xs = [s + (i - (len(criteria) - 1) / 2) * width for s in range(1, 6)]
        label = f"{criterion} (pass >= {data['thresholds'].get(criterion, '?')})"
        ax.bar(xs, counts, width=width, color=palette[i % len(palette)], label=label)
    ax.set_xticks(range(1, 6))
    ax.set_xlabel("judge score")
    ax.set_ylabel("conversations")
    _integers(ax.yaxis)
    _legend(fig)
    _style(ax)


# key -> (draw function, height function of the figure data)
CHARTS: dict[str, tuple[Callable[[Any, dict[str, Any]], None], Callable[[dict[str, Any]], float]]] = {
    "tokens": (_tokens, lambda d: 3.4),
    "steps": (_steps, lambda d: 3.0),
    "actions": (_actions, lambda d: _height(len(d["counts"]))),
    "rejects": (_rejects, lambda d: _height(len(d["rejected"]) + len(d["failed"]))),
    "mix": (_mix, lambda d: 3.2),
    "tools": (_tools, lambda d: _height(2 * len(d["by_tool"]))),
    "documents": (_documents, lambda d: _height(2 * len(d["by_document"]))),
    "duplicates": (_duplicates, lambda d: _height(len(d["by_reason"]))),
    "cost": (_cost, lambda d: _height(max(1, len(d["by_stage"])))),
    "judge": (_judge, lambda d: 3.2),
}


def render_chart(key: str, data: dict[str, Any]) -> str:
    """The chart `key` of CHARTS drawn from its figure data, as an `<svg>` element ready to inline in HTML."""
    from matplotlib import rc_context

    draw, height = CHARTS[key]
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": f"distill-{key}", "font.size": 9}):
        fig = _figure(height(data))
        with warnings.catch_warnings():  # a document name in a script the default font lacks is not an error
            warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
            draw(fig, data)
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, count=1, flags=re.DOTALL)
    svg = re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"', r'<svg\1 width="100%"', svg, count=1)
    return svg.replace("<svg", f'<svg role="img" aria-label="{key} chart"', 1)
