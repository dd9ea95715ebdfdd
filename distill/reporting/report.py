"""`distill report RUN`: one self-contained `report.html` (and the same figures in `report.json`) for a run folder.

Reads what the run folder already holds — `manifest.json`, `trajectories.jsonl`, `rejected.jsonl`, `train.jsonl`,
`validation.jsonl` — and makes no teacher call. The page has charts (token lengths against the target model's
per-example limit, steps per conversation, actions, reject reasons, the mix and coverage per tool and per document,
duplicates dropped, cost) drawn as inline SVG (distill/report_charts.py), and a handful of accepted and rejected
conversations rendered as chat, every string HTML-escaped. It loads nothing from the network: no scripts, fonts,
stylesheets or images from anywhere else.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.run_folder import SPLITS, RunFolder, read_jsonl, read_manifest, write_json, write_text

__all__ = ["ReportResult", "build_figures", "write_report"]

SECTIONS = {
    "tokens": "Token length per example",
    "steps": "Steps per conversation",
    "actions": "Action distribution",
    "rejects": "Reject reasons",
    "mix": "Mix: accepted conversations per kind against the target",
    "tools": "Coverage per tool",
    "documents": "Coverage per source document",
    "duplicates": "Duplicates dropped",
    "cost": "Cost",
    "judge": "Judge scores per criterion",
}


@dataclass
class ReportResult:
    """Where the report went and the figures it shows."""

    html: Path
    json: Path
    figures: dict[str, Any]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path, hint="`distill export CONFIG --run RUN` rewrites the dataset files")


def _bins(values: list[int], limit: int) -> tuple[list[float], bool]:
    """Histogram edges over the data (log-spaced when it spans more than 20x) and whether the axis is logarithmic
    (when the limit lies far beyond the data, so that both stay readable)."""
    lo, hi = max(1, min(values, default=1)), max(max(values, default=1), 2)
    n = 30
    if hi / lo > 20:
        a, b = math.log10(lo), math.log10(hi * 1.001)
        edges = [round(10 ** (a + (b - a) * i / n), 2) for i in range(n + 1)]
    else:
        a, b = lo * 0.98, hi * 1.02
        edges = [round(a + (b - a) * i / n, 2) for i in range(n + 1)]
    return edges, max(limit, hi) / max(lo, 1) > 8


def _histogram(values: list[int], edges: list[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    for v in values:
        i = min(max(bisect.bisect_right(edges, v) - 1, 0), len(counts) - 1)
        counts[i] += 1
    return counts


def _token_figures(run_dir: Path, manifest: dict[str, Any], rejected: list[dict[str, Any]]) -> dict[str, Any]:
    from distill.tokens import count_example, example_limit

    info = manifest.get("tokens", {})
    model = info.get("model") or manifest.get("config", {}).get("export", {}).get("model", "gpt-4o-mini")
    limit = int(info.get("example_limit") or example_limit(model))
    files = manifest.get("files", {})
    series = {
        split: [count_example(ex, model) for ex in _read_jsonl(run_dir / files.get(split, f"{split}.jsonl"))]
        for split in SPLITS
    }
    over = []
    for row in rejected:
        if row.get("reason") == "over_token_limit":
            m = re.match(r"(\d+) tokens", row.get("detail") or "")
            if m:
                over.append(int(m.group(1)))
    series["over_limit"] = over
    everything = [v for values in series.values() for v in values]
    edges, log_x = _bins(everything, limit)
    return {
        "model": model,
        "limit": limit,
        "bins": edges,
        "log_x": log_x,
        "counts": {k: _histogram(v, edges) for k, v in series.items()},
        "stats": {"train": info.get("train"), "validation": info.get("validation"), "over_limit": len(over)},
    }


def _final_outcomes(trajectories: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> dict[str, str]:
    outcome = {t["id"]: t.get("outcome", "accepted") for t in trajectories}
    outcome.update({r["id"]: r["outcome"] for r in rejected})
    return outcome


def _usd(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and isinstance(value.get("usd"), int | float):
        return float(value["usd"])
    return None


def _cost_figures(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Dollars per stage from the manifest's `teacher_usage` (the whole run folder, all invocations, when the ledger
    has it; else this invocation), or from a plain `cost` section; None when nothing was priced."""
    usage = manifest.get("teacher_usage")
    source, budget = manifest.get("cost"), None
    if isinstance(usage, dict):
        source = usage.get("run_folder") or usage.get("this_invocation")
        budget = usage.get("max_cost_usd")
    if not isinstance(source, dict):
        return None
    found = source.get("by_stage")
    stages: dict[str, Any] = found if isinstance(found, dict) else {}
    by_stage: dict[str, float] = {k: usd for k, v in stages.items() if (usd := _usd(v)) is not None}
    total = _usd(source)
    if total is None and by_stage:
        total = sum(by_stage.values())
    if total is None:
        return None
    tokens = {
        stage: {k: v[k] for k in ("input_tokens", "cached_input_tokens", "output_tokens") if k in v}
        for stage, v in stages.items()
        if isinstance(v, dict)
    }
    return {"total_usd": round(total, 6), "by_stage": by_stage, "tokens_by_stage": tokens, "max_cost_usd": budget}


def build_figures(run_dir: str | Path) -> dict[str, Any]:
    """Every figure of the report (what report.json holds), read from the run folder."""
    run_dir = Path(run_dir)
    typed = read_manifest(run_dir)
    manifest = typed.as_dict()
    trajectories = _read_jsonl(RunFolder(run_dir).trajectories)
    rejected = _read_jsonl(typed.file(run_dir, "rejected"))
    outcome = _final_outcomes(trajectories, rejected)

    steps: dict[str, Counter[int]] = {o: Counter() for o in ("accepted", "rejected", "failed")}
    actions: Counter[str] = Counter()
    tool_errors = 0
    for t in trajectories:
        n = sum(len(turn.get("steps", [])) for turn in t.get("turns", []))
        steps[outcome[t["id"]]][n] += 1
        if outcome[t["id"]] == "accepted":
            for turn in t.get("turns", []):
                for s in turn.get("steps", []):
                    actions[s["action"]] += 1
                    tool_errors += bool(s.get("tool_error"))
    step_keys = sorted(set().union(*steps.values())) or [0]
    coverage = manifest.get("coverage")
    duplicates = manifest.get("duplicates") or {}
    return {
        "run": {
            "name": manifest.get("name"),
            "folder": str(run_dir),
            "config_hash": manifest.get("config_hash"),
            "agent_format": manifest.get("agent_format"),
            "teacher": manifest.get("teacher", {}),
            "conversations": manifest.get("conversations", {}),
            "examples": manifest.get("examples", {}),
            "fine_tuning_estimate": manifest.get("fine_tuning_estimate"),
            "top_up": manifest.get("top_up"),
        },
        "tokens": _token_figures(run_dir, manifest, rejected),
        "steps": {
            "steps": step_keys,
            "by_outcome": {o: {str(k): c[k] for k in step_keys if c[k]} for o, c in steps.items()},
        },
        "actions": {"counts": dict(actions.most_common()), "tool_errors": tool_errors},
        "rejects": {
            "rejected": manifest.get("rejects_by_reason", {}),
            "failed": manifest.get("failures_by_reason", {}),
            "by_stage": manifest.get("rejects_by_stage", {}),
        },
        "mix": coverage and {k: coverage[k] for k in ("mix_met", "tolerance", "allowed_shortfall", "by_kind")},
        "tools": coverage and {"by_tool": coverage["by_tool"], "by_outcome": coverage["by_outcome"]},
        "documents": coverage and {"by_document": coverage["by_document"]},
        "duplicates": {
            "dropped": duplicates.get("dropped", 0),
            "by_reason": {
                r: duplicates.get("by_reason", {}).get(r, 0)
                for r in ("duplicate_question", "duplicate_near_question", "duplicate_trajectory")
            },
            "enabled": duplicates.get("enabled"),
            "items": duplicates.get("items", []),
            "lines_dropped": (duplicates.get("lines") or {}).get("dropped", 0),
        },
        "cost": _cost_figures(manifest),
        "judge": _judge_figures(manifest, rejected, trajectories),
    }


def _judge_figures(manifest: dict[str, Any], rejected: list[dict[str, Any]], trajectories: list[dict[str, Any]]) -> Any:
    """Score distributions per criterion and the judged-out conversations (None when the run was not judged)."""
    judge = manifest.get("judge")
    if not judge:
        return None
    questions = {t["id"]: t["turns"][0]["question"] for t in trajectories if t.get("turns")}
    out = [{"id": r["id"], "question": questions.get(r["id"], ""), "reason": r["reason"], "detail": r["detail"]}
           for r in rejected if r.get("stage") == "judge"]
    keys = ("judges", "thresholds", "judged", "unjudged", "rejected_by_reason", "scores", "note")
    return {**{k: judge.get(k) for k in keys}, "judged_out": out}


def write_report(run_dir: str | Path, *, examples: int = 3) -> ReportResult:
    """Write `report.html` and `report.json` into the run folder; returns their paths and the figures."""
    from distill.reporting.html import render_html

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    figures = build_figures(run_dir)
    trajectories = _read_jsonl(folder.trajectories)
    rejected = _read_jsonl(folder.rejected)
    questions = {t["id"]: t["turns"][0]["question"] for t in trajectories if t.get("turns")}
    page = render_html(
        figures, SECTIONS, _pick_accepted(trajectories, rejected, examples), _pick_rejected(rejected, examples), questions
    )
    html_path, json_path = folder.report_html, folder.report_json
    write_text(html_path, page)
    write_json(json_path, figures)
    return ReportResult(html=html_path, json=json_path, figures=figures)


def _pick_accepted(trajectories: list[dict[str, Any]], rejected: list[dict[str, Any]], n: int) -> list[dict]:
    """Up to n accepted conversations, one of each kind first (earliest ids)."""
    dropped = {r["id"] for r in rejected}
    accepted = [t for t in trajectories if t.get("outcome") == "accepted" and t["id"] not in dropped]
    picked: list[dict[str, Any]] = []
    for kind in ("tool", "multi_turn", "direct"):
        first = next((t for t in accepted if t["kind"] == kind), None)
        if first is not None and len(picked) < n:
            picked.append(first)
    picked += [t for t in accepted if t not in picked][: n - len(picked)]
    return picked


def _pick_rejected(rejected: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to n rejected or failed conversations with different reasons first."""
    seen: set[str | None] = set()
    picked: list[dict[str, Any]] = []
    for row in rejected:
        if row.get("reason") not in seen and len(picked) < n:
            picked.append(row)
            seen.add(row.get("reason"))
    picked += [r for r in rejected if r not in picked][: n - len(picked)]
    return picked
