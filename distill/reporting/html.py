"""The HTML page of `distill report`: header figures, one section per chart, example conversations.

Every string that comes from the run (questions, answers, observations, raw teacher text, file names, reasons) is
HTML-escaped here; the only markup that is not escaped is the SVG that distill/report_charts.py draws. The style
sheet is inline and uses the system font stack, so the page asks nothing of the network.
"""

from __future__ import annotations

import html
from typing import Any

from distill.trajectory import FINAL_ANSWER

__all__ = ["render_html"]

_CSS = """
:root { --ok: #2a9d8f; --bad: #e76f51; --fail: #8d99ae; --ink: #1d2a33; --muted: #5c6b77; --line: #e3e8ec; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); margin: 0; background: #f6f8f9; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 0 0 8px; }
.sub { color: var(--muted); margin: 0 0 16px; }
.note { background: #fff7e6; border: 1px solid #f3d9a4; padding: 8px 12px; border-radius: 6px; margin: 0 0 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; margin: 0 0 18px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .v { font-size: 20px; font-weight: 600; } .card .k { color: var(--muted); font-size: 12px; }
.ok { color: var(--ok); } .bad { color: var(--bad); }
section.chart, section.examples { background: #fff; border: 1px solid var(--line); border-radius: 8px;
       padding: 14px 16px; margin: 0 0 14px; }
section.chart svg { display: block; max-width: 100%; height: auto; }
.caption { color: var(--muted); margin: 6px 0 0; font-size: 13px; }
.empty { color: var(--muted); font-style: italic; margin: 4px 0; }
.conv { border: 1px solid var(--line); border-left: 4px solid var(--ok); border-radius: 6px; padding: 10px 12px;
        margin: 10px 0; }
.conv.rejected { border-left-color: var(--bad); } .conv.failed { border-left-color: var(--fail); }
.meta { color: var(--muted); font-size: 12px; margin-bottom: 6px; }
.msg { margin: 6px 0; padding: 6px 10px; border-radius: 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
.msg .who { font-weight: 600; font-size: 12px; display: block; color: var(--muted); }
.user { background: #eef4fb; } .action { background: #f3f1fb; } .observation { background: #f6f6f4;
        font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.final { background: #eaf6f3; } .raw { background: #fdeee9; font-family: ui-monospace, SFMono-Regular, Menlo,
        Consolas, monospace; font-size: 12px; }
.reason { font-weight: 600; color: var(--bad); }
table { border-collapse: collapse; font-size: 13px; margin-top: 8px; width: 100%; }
td, th { padding: 3px 10px 3px 0; text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-weight: 600; }
"""

_OBSERVATION_CHARS = 600


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _card(value: Any, key: str, cls: str = "") -> str:
    return f'<div class="card"><div class="v {cls}">{_e(value)}</div><div class="k">{_e(key)}</div></div>'


def _header(figures: dict[str, Any]) -> str:
    run = figures["run"]
    c, ex = run.get("conversations", {}), run.get("examples", {})
    teacher = run.get("teacher", {})
    mix = figures.get("mix") or {}
    top_up = run.get("top_up") or {}
    est = run.get("fine_tuning_estimate") or {}
    cards = [
        _card(c.get("requested", 0), "conversations requested"),
        _card(c.get("accepted", 0), "accepted", "ok"),
        _card(c.get("rejected", 0), "rejected", "bad" if c.get("rejected") else ""),
        _card(c.get("failed", 0), "failed", "bad" if c.get("failed") else ""),
        _card(f"{ex.get('train', 0)} / {ex.get('validation', 0)}", "train / validation examples"),
        _card(figures["duplicates"]["dropped"], "duplicates dropped"),
    ]
    if mix:
        cards.append(_card("met" if mix.get("mix_met") else "short", "generation.mix", "ok" if mix.get("mix_met") else "bad"))
    if top_up:
        budget = f" (budget {top_up['budget']})" if top_up.get("budget") is not None else ""
        cards.append(_card(top_up.get("extra_conversations", 0), f"extra conversations{budget}"))
    if est.get("training_tokens") is not None:
        cards.append(_card(f"{est['training_tokens']:,}", f"training tokens ({est.get('epochs')} epochs)"))
    note = f'<p class="note">{_e(teacher["note"])}</p>' if teacher.get("note") else ""
    who = " · ".join(_e(x) for x in (teacher.get("provider"), teacher.get("model"), run.get("agent_format")) if x)
    return (
        f"<h1>distill report: {_e(run.get('name'))}</h1>"
        f'<p class="sub">{_e(run.get("folder"))} · teacher {who} · config {_e(run.get("config_hash"))}</p>'
        f'{note}<div class="cards">{"".join(cards)}</div>'
    )


def _caption(key: str, data: dict[str, Any]) -> str:
    if key == "tokens":
        st = data["stats"].get("train") or {}
        over = data["stats"]["over_limit"]
        return (
            f"Each exported example (one fine-tuning line) by its token count ({data['model']} encoding); the dashed "
            f"line is the per-example limit, {data['limit']:,} tokens. Train median {st.get('median', 0):,}, p95 "
            f"{st.get('p95', 0):,}, max {st.get('max', 0):,}; {over} conversation(s) rejected over the limit."
        )
    if key == "steps":
        return "Model calls per conversation, all turns together, by final outcome."
    if key == "actions":
        return f"Actions taken in accepted conversations ({data['tool_errors']} tool call(s) returned an error)."
    if key == "rejects":
        return "Rejected (the teacher answered, but not acceptably) and failed (no usable answer) conversations."
    if key == "mix":
        return (
            f"The dark line is each kind's target; a kind may fall short by {data['allowed_shortfall']} "
            f"(generation.mix_tolerance {data['tolerance']}). Labels: met or short, accepted/target, acceptance rate."
        )
    if key == "tools":
        outs = data["by_outcome"]
        return (
            "Conversations planned for each tool and how many were accepted. Accepted examples by outcome: "
            f"{outs['tool_used']} used a tool, {outs['no_tool']} answered directly, {outs['follow_up']} follow-ups."
        )
    if key == "documents":
        n, names = len(data["by_document"]), list(data["by_document"])
        where = f" under {names[0].rsplit('/', 1)[0]}/" if n > 1 and len({x.rsplit("/", 1)[0] for x in names}) == 1 else ""
        return f"{n} source document(s){where}" + ("; the first 30 are drawn, report.json has all." if n > 30 else ".")
    if key == "duplicates":
        return "Conversations dropped before export as copies of an earlier one (counted as rejected)."
    if key == "judge":
        who = ", ".join(f"{name} ({n})" for name, n in (data["judges"] or {}).items())
        out = sum((data["rejected_by_reason"] or {}).values())
        return f"Judged by {who}: {data['judged']} conversation(s), {out} judged out." + (
            f" {data['note']}" if data.get("note") else "")
    if key == "cost":
        tokens = "; ".join(
            f"{stage}: {t.get('input_tokens', 0):,} input ({t.get('cached_input_tokens', 0):,} cached), "
            f"{t.get('output_tokens', 0):,} output tokens"
            for stage, t in data.get("tokens_by_stage", {}).items()
            if t
        )
        budget = f" of generation.max_cost_usd ${data['max_cost_usd']:g}" if data.get("max_cost_usd") else ""
        return f"Teacher spend ${data['total_usd']:,.4f}{budget}, by stage." + (f" {tokens}." if tokens else "")
    return ""


_EMPTY = {
    "rejects": "No conversation was rejected or failed.",
    "duplicates": "No duplicate was dropped.",
    "judge": "The run was not judged (judge.enabled is false).",
    "cost": "No cost recorded in the manifest (the offline teacher costs nothing; a run on a teacher with a known "
    "price records its spend in teacher_usage).",
    "mix": "This run's manifest has no coverage figures; re-export it with `distill export CONFIG --run DIR`.",
    "tools": "This run's manifest has no coverage figures.",
    "documents": "This run's manifest has no coverage figures.",
    "actions": "No accepted conversation.",
    "tokens": "No exported example.",
}


def _has_data(key: str, data: dict[str, Any] | None) -> bool:
    if not data:
        return False
    if key == "rejects":
        return bool(data["rejected"] or data["failed"])
    if key == "duplicates":
        return bool(data["dropped"])
    if key == "actions":
        return bool(data["counts"])
    if key == "tokens":
        return any(any(c) for c in data["counts"].values())
    return True


def _pairs(data: dict[str, Any], questions: dict[str, str], limit: int = 10) -> str:
    rows = []
    for d in data["items"][:limit]:
        reason = d["reason"] if d["similarity"] == 1 else f"{d['reason']} ({d['similarity']:.2f})"
        cells = (d["id"], questions.get(d["id"], ""), reason, d["duplicate_of"], questions.get(d["duplicate_of"], ""))
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    more = len(data["items"]) - limit
    tail = f'<p class="caption">and {more} more (report.json and manifest.json list all).</p>' if more > 0 else ""
    head = "<tr><th>dropped</th><th>question</th><th>reason</th><th>copy of</th><th>question</th></tr>"
    return f'<table class="pairs">{head}{"".join(rows)}</table>{tail}'


def _judged_out(data: dict[str, Any], limit: int = 10) -> str:
    rows = ["<tr>" + "".join(f"<td>{_e(d[k])}</td>" for k in ("id", "question", "reason", "detail")) + "</tr>"
            for d in data["judged_out"][:limit]]
    if not rows:
        return ""
    more = len(data["judged_out"]) - limit
    tail = f'<p class="caption">and {more} more (report.json and rejected.jsonl list all).</p>' if more > 0 else ""
    head = "<tr><th>judged out</th><th>question</th><th>reason</th><th>the judge's reason</th></tr>"
    return f'<table class="pairs">{head}{"".join(rows)}</table>{tail}'


def _chart_section(key: str, title: str, data: dict[str, Any] | None, questions: dict[str, str]) -> str:
    from distill.reporting.charts import render_chart

    if data is not None and _has_data(key, data):
        body = render_chart(key, data) + f'<p class="caption">{_e(_caption(key, data))}</p>'
        if key == "duplicates":
            body += _pairs(data, questions)
        if key == "judge":
            body += _judged_out(data)
    else:
        body = f'<p class="empty">{_e(_EMPTY.get(key, "Nothing to show."))}</p>'
    return f'<section class="chart" id="chart-{key}" data-chart="{key}"><h2>{_e(title)}</h2>{body}</section>'


def _msg(cls: str, who: str, text: Any) -> str:
    return f'<div class="msg {cls}"><span class="who">{_e(who)}</span>{_e(text)}</div>'


def _conversation(conv: dict[str, Any]) -> str:
    outcome = conv.get("outcome", "accepted")
    turns = conv.get("turns", [])
    meta = " · ".join(
        _e(x) for x in (conv.get("id"), conv.get("kind"), conv.get("doc_id"), f"{len(turns)} turn(s)", outcome)
    )
    parts = [f'<div class="meta">{meta}</div>']
    for turn in turns:
        parts.append(_msg("user", "User", turn.get("question", "")))
        for step in turn.get("steps", []):
            if step.get("action") == FINAL_ANSWER:
                parts.append(_msg("final", FINAL_ANSWER, step.get("action_input", "")))
                continue
            parts.append(_msg("action", f"Action: {step.get('action')}", step.get("action_input", "")))
            obs = step.get("observation") or ""
            if len(obs) > _OBSERVATION_CHARS:
                obs = obs[:_OBSERVATION_CHARS] + f" … ({len(obs) - _OBSERVATION_CHARS} more characters)"
            parts.append(_msg("observation", "Tool error" if step.get("tool_error") else "Observation", obs))
    if outcome != "accepted":
        parts.append(
            f'<div class="msg"><span class="reason">{_e(conv.get("reason"))}</span> at {_e(conv.get("stage"))}: '
            f"{_e(conv.get('detail'))}</div>"
        )
        if conv.get("raw"):
            parts.append(_msg("raw", "Raw teacher text (rejected)", conv["raw"]))
    return f'<div class="conv {_e(outcome)}" data-id="{_e(conv.get("id"))}">{"".join(parts)}</div>'


def _examples(title: str, convs: list[dict[str, Any]], anchor: str) -> str:
    body = "".join(_conversation(c) for c in convs) or '<p class="empty">None.</p>'
    return f'<section class="examples" id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def render_html(
    figures: dict[str, Any],
    sections: dict[str, str],
    accepted: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
    questions: dict[str, str] | None = None,
) -> str:
    """The whole page as one string (`questions`: conversation id -> its first question, for the duplicates)."""
    charts = "".join(_chart_section(k, title, figures.get(k), questions or {}) for k, title in sections.items())
    name = _e(figures["run"].get("name"))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>distill report: {name}</title><style>{_CSS}</style></head><body><main>"
        f"{_header(figures)}{charts}"
        f"{_examples('Accepted conversations (a few)', accepted, 'examples-accepted')}"
        f"{_examples('Rejected and failed conversations (a few)', rejected, 'examples-rejected')}"
        "</main></body></html>\n"
    )
