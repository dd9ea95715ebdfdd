"""Close the loop: plan extra conversations aimed at what a student failed in `distill eval` (`generate --focus`).

Input: an eval report (RUN/eval/report.json, or its folder) and the run folder the eval's questions came from. For
the report's student (by default its last model, the one usually just trained) every question it failed, and every
question it over-called on (a tool call where the reference answered directly), is joined by id to the run's
trajectory; each becomes a target cell (conversation kind, tool): a failure on a question whose reference used tool T
asks for more `T` conversations of the reference's kind; an over-call asks for more `direct` ones. The budget is
shared among the cells in proportion to their failures (largest remainder, so it is exact), and each planned
conversation takes a chunk from the documents of the TRAINING split only, least-used first, so the held-out
questions stay held out and a second eval measures the same thing. Plans are numbered after the run's plans with
their own id prefix and seeded from the config's seed and the report's content: the same report plans the same
conversations. `FocusPlan.summary` goes into the manifest (`focus`): what was targeted, why, and how many.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.errors import DistillError
from distill.generation.questions import _counts, _eligible_tools
from distill.generation.sources import Chunk
from distill.run_folder import REPORT_JSON
from distill.trajectory import FINAL_ANSWER, Plan, Trajectory, plan_column

__all__ = ["FocusError", "FocusPlan", "plan_focus"]

ID_PREFIX = "f"


class FocusError(DistillError):
    """A focus round that cannot be planned (no report, a report from another run, nothing failed)."""


@dataclass
class FocusPlan:
    """The focused conversations and what they aim at."""

    plans: list[Plan]
    summary: dict[str, Any] = field(default_factory=dict)


def _report_file(report: str | Path) -> Path:
    path = Path(report)
    path = path / REPORT_JSON if path.is_dir() else path
    if not path.is_file():
        raise FocusError(f"{path}: no eval report", hint="run `distill eval CONFIG --model M` first; it writes "
                         "RUN/eval/report.json")
    return path


def _transcripts(report_path: Path, data: dict[str, Any], model: str | None) -> tuple[str, list[dict[str, Any]]]:
    models = data.get("models") or {}
    if not models:
        raise FocusError(f"{report_path}: the report has no model")
    name = model or list(models)[-1]
    if name not in models:
        raise FocusError(f"{report_path}: no model {name!r} in the report", hint=f"one of: {', '.join(models)}")
    rel = (models[name].get("files") or {}).get("transcripts")
    path = report_path.parent / rel if rel else None
    if path is None or not path.is_file():
        raise FocusError(f"{report_path}: the transcripts of {name!r} are missing ({path})")
    lines = path.read_text(encoding="utf-8").splitlines()
    return name, [json.loads(line) for line in lines if line.strip()]


def _called_a_tool(transcript: dict[str, Any]) -> bool:
    return any(s.get("ok") and s.get("action") not in (None, FINAL_ANSWER) for s in transcript.get("steps", []))


def _reference_tool(trajectory: Trajectory) -> str | None:
    steps = trajectory.turns[0].steps if trajectory.turns else []
    return next((s.action for s in steps if not s.is_final), None)


def _targets(transcripts: list[dict[str, Any]], by_id: dict[str, Trajectory], tools: set[str]) -> tuple[
        Counter[tuple[str, str | None]], Counter[str], int]:
    """(kind, tool) cells with their failure counts, the failure reasons, and the questions that were not in the run."""
    cells: Counter[tuple[str, str | None]] = Counter()
    reasons: Counter[str] = Counter()
    unknown = 0
    for t in transcripts:
        over = t.get("reference_used_tool") is False and _called_a_tool(t)
        if t.get("failure") is None and not over:
            continue
        reasons["over_calling" if t.get("failure") is None else str(t["failure"])] += 1
        reference = by_id.get(str(t.get("id")))
        if reference is None:
            unknown += 1
            continue
        tool = _reference_tool(reference)
        if over or tool is None:
            cells[("direct", None)] += 1
        else:
            kind = reference.kind if reference.kind != "direct" else "tool"
            cells[(kind, tool if tool in tools else None)] += 1
    return cells, reasons, unknown


def plan_focus(
    config: Config,
    chunks: Sequence[Chunk],
    plans: Sequence[Plan],
    trajectories: Sequence[Trajectory],
    report: str | Path,
    *,
    validation_documents: Sequence[str],
    budget: int | None = None,
    model: str | None = None,
) -> FocusPlan:
    """Extra plans aimed at the failures of `model` (default: the report's last) in the eval report `report`."""
    report_path = _report_file(report)
    data = json.loads(report_path.read_text(encoding="utf-8"))
    name, transcripts = _transcripts(report_path, data, model)
    tools = _eligible_tools(config)
    by_id = {t.id: t for t in trajectories}
    cells, reasons, unknown = _targets(transcripts, by_id, set(tools))
    failed = sum(cells.values())
    if budget is None:
        budget = min(max(10, 2 * failed), config.generation.conversations)
    if budget < 0:
        raise FocusError(f"the focus budget must be at least 0, got {budget}")
    held_out = set(validation_documents)
    pool = [c for c in chunks if c.doc_id not in held_out]
    summary: dict[str, Any] = {
        "report": str(report_path), "model": name, "questions": len(transcripts), "failed_or_over_called": failed,
        "not_in_run": unknown, "reasons": dict(reasons.most_common()), "budget": budget,
        "held_out_documents_excluded": len(held_out),
    }
    if not cells or not budget or not pool:
        summary.update(conversations=0, targets=[],
                       why="nothing failed" if not cells else "no budget" if not budget else "no training chunks")
        return FocusPlan([], summary)

    keys = sorted(cells, key=lambda k: (-cells[k], k[0], k[1] or ""))
    shares = {f"{i}": cells[k] / failed for i, k in enumerate(keys)}
    allotted = {keys[int(i)]: n for i, n in _counts(budget, shares).items()}
    digest = hashlib.sha256(report_path.read_bytes()).hexdigest()[:12]
    rng = random.Random(f"distill-focus:{config.generation.seed}:{digest}")
    usage = Counter(plan_column(plans, "chunk_id"))
    rank = {c.id: r for r, c in enumerate(rng.sample(list(pool), len(pool)))}
    start = max(plan_column(plans, "index"), default=-1) + 1
    out: list[Plan] = []
    targets = []
    for kind, tool in keys:
        n = allotted[(kind, tool)]
        targets.append({"kind": kind, "tool": tool, "failures": cells[(kind, tool)], "conversations": n})
        for _ in range(n):
            chunk = min(pool, key=lambda c: (usage[c.id], rank[c.id]))
            usage[chunk.id] += 1
            picked = tool if kind == "direct" or tool else tools[len(out) % len(tools)]
            index = start + len(out)
            out.append(Plan(
                id=f"{ID_PREFIX}{index:06d}", index=index, kind=kind,  # type: ignore[arg-type]
                chunk_id=chunk.id, doc_id=chunk.doc_id,
                turns=1 + config.generation.follow_ups if kind == "multi_turn" else 1,
                tool=None if kind == "direct" else picked, seed=rng.randrange(2**31),
            ))
    summary.update(conversations=len(out), targets=targets,
                   why=f"{failed} held-out question(s) failed or over-called by {name}")
    return FocusPlan(out, summary)
