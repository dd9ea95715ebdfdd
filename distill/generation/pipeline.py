"""The `generate` pipeline: wires the stages and owns the run folder; no stage logic lives here.

config -> sources/chunks -> BM25 index -> plans -> (questions + rollouts, concurrently) -> export. Each stage writes
its artifact into the run folder: `index/` (with `chunks.jsonl`), `plans.jsonl`, `trajectories.jsonl`, then the dataset
files and `manifest.json`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.agent.tools import ToolBox
from distill.config import Config
from distill.errors import DistillError, RunFolderError, RunStopped
from distill.formats import get_format
from distill.generation.export import ExportResult, export_run, write_jsonl
from distill.generation.index import ChunkIndex
from distill.generation.questions import plan_conversations
from distill.generation.resume import RunSession
from distill.generation.rollout import Rollout, run_conversation
from distill.generation.sources import chunk_documents, load_documents
from distill.teachers.base import Teacher
from distill.teachers.batch import RequestPending, WavePending
from distill.trajectory import Plan, Trajectory

__all__ = ["GenerateResult", "default_run_dir", "generate", "load_trajectories", "reexport"]


@dataclass
class GenerateResult:
    """What `generate` produced: the run folder, the dataset paths and the counts of the manifest."""

    run_dir: Path
    train: Path
    validation: Path
    rejected: Path
    manifest: Path
    conversations: dict[str, int]
    examples: dict[str, int]

    @classmethod
    def _from(cls, run_dir: Path, exported: ExportResult) -> GenerateResult:
        return cls(
            run_dir=run_dir,
            train=exported.train,
            validation=exported.validation,
            rejected=exported.rejected,
            manifest=exported.manifest,
            conversations=exported.counts["conversations"],
            examples=exported.counts["examples"],
        )


def default_run_dir(config: Config) -> Path:
    """outputs/<name>/ under the current directory."""
    return Path("outputs") / config.name


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="conversations", unit="conv", disable=not enabled, dynamic_ncols=True)


async def _roll_all(
    plans: list[Plan], chunks: dict[str, Any], rollout: Rollout, progress: bool, run: RunSession | None = None
) -> list[Trajectory]:
    run = run or RunSession.ephemeral(rollout.config, rollout.teacher)
    results: list[Trajectory | None] = [None] * len(plans)
    tally = {"accepted": 0, "rejected": 0, "failed": 0}
    waiting = 0  # batch mode: conversations waiting for their wave's batch (distill/generation/waves.py)
    bar = _progress(len(plans), progress)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(plans)):
        done = run.done(plans[i].id)  # finished before a resume
        if done is None:
            queue.put_nowait(i)
        else:
            results[i] = done
            tally[done.outcome] += 1
    bar.update(len(plans) - queue.qsize())

    async def worker() -> None:
        nonlocal waiting
        while not queue.empty() and run.stopped is None:
            i = queue.get_nowait()
            try:
                trajectory = await run_conversation(plans[i], chunks[plans[i].chunk_id], rollout)
            except RunStopped as exc:  # circuit breaker or budget: the conversation resumes later
                run.stop(exc)
                return
            except RequestPending:  # batch mode: not failed, not finished; the next wave replays it
                waiting += 1
                continue
            results[i] = trajectory
            run.finished[trajectory.id] = trajectory  # the next wave (batch mode) does not run it again
            run.record(trajectory)
            tally[trajectory.outcome] += 1
            bar.update(1)
            if bar.n % 25 == 0 or bar.n == len(plans) or run.metered:
                bar.set_postfix(run.postfix(tally), refresh=False)

    workers = max(1, min(len(plans), rollout.config.teacher.concurrency * 2))
    try:
        await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        bar.close()
    run.check_stopped()
    if waiting:
        raise WavePending(waiting)
    return [t for t in results if t is not None]


async def _roll_and_top_up(
    plans: list[Plan], chunks: list[Any], rollout: Rollout, progress: bool, run: RunSession | None = None,
    pilot: bool = False,
) -> Any:
    """Roll out the plans, then extra conversations for kinds short of the mix (distill/coverage.py)."""
    from distill.generation.coverage import TopUp, top_up

    by_id = {c.id: c for c in chunks}

    async def roll(some: list[Plan]) -> list[Trajectory]:
        return await _roll_all(some, by_id, rollout, progress, run)

    try:
        if pilot:  # distill estimate: a sample of the plans, no top-up
            return TopUp(plans, await roll(plans), {"extra_conversations": 0, "pilot": len(plans)})
        return await top_up(rollout.config, chunks, plans, await roll(plans), rollout.fmt, roll)
    finally:
        await rollout.teacher.aclose()


def generate(
    config: Config,
    out: str | Path | None = None,
    *,
    progress: bool = True,
    teacher: Teacher | None = None,
    fresh: bool = False,
    from_ledger: bool = False,
    pilot: int | None = None,
    focus: str | Path | None = None,
    focus_budget: int | None = None,
    batch: bool = False,
    no_wait: bool = False,
    cancel_batches: bool = False,
) -> GenerateResult:
    """Run every stage for `config` and write the run folder (default `outputs/<name>/`).

    Resumes what the run folder holds (distill/resume.py) unless `fresh`; `from_ledger` answers every teacher
    request from the run folder's ledger (zero calls); `pilot` runs only the first `pilot` plans (no top-up);
    `focus` (an eval report of this run) adds conversations aimed at what the student failed
    (distill/generation/focus.py), at most `focus_budget`, and keeps the validation split the eval held out.
    `batch` (or `teacher.mode: batch`) runs through the Batch API in waves (distill/generation/waves.py); `no_wait`
    submits a wave and raises `BatchesPending`; `cancel_batches` cancels the batches in flight.
    """
    started = time.perf_counter()
    run_dir = Path(out) if out is not None else default_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)

    documents, skipped = load_documents(config)
    chunks = chunk_documents(documents, config.chunking)
    if not chunks:
        named = "; ".join(f"{s.path} ({s.reason})" for s in skipped[:5]) or "no files found"
        raise DistillError(f"no usable text in the sources: {named}", hint="check sources: in the config")
    index = ChunkIndex.build(chunks)
    index.save(run_dir / "index")

    plans = plan_conversations(config, chunks)
    focused = _plan_focus(config, run_dir, chunks, plans, focus, focus_budget) if focus is not None else None
    if focused is not None:
        plans += focused.plans
    write_jsonl(run_dir / "plans.jsonl", (p.model_dump() for p in plans))
    fmt = get_format(config)
    texts = [c.text for c in chunks]
    waves = (batch or no_wait or cancel_batches or config.teacher.mode == "batch") and not from_ledger
    if waves:
        from distill.generation.waves import batch_teacher

        config, teacher = batch_teacher(config, teacher)
    run = RunSession.open(config, run_dir, plans, texts, teacher=teacher, fresh=fresh, from_ledger=from_ledger)
    rollout = Rollout(config=config, teacher=run.teacher, fmt=fmt, tools=ToolBox(config, index))
    todo = plans[:pilot] if pilot else plans

    def roll() -> Any:
        return asyncio.run(_roll_and_top_up(todo, chunks, rollout, progress, run, pilot=bool(pilot)))

    if waves:
        from distill.generation.waves import run_waves

        topped, batch_section = run_waves(config, run, roll, no_wait=no_wait, cancel=cancel_batches)
    else:
        topped, batch_section = roll(), None
    plans, trajectories = topped.plans, topped.trajectories
    if topped.summary["extra_conversations"]:  # the extra plans continue the numbering
        write_jsonl(run_dir / "plans.jsonl", (p.model_dump() for p in plans))
    sections = run.finish(trajectories)  # trajectories.jsonl in plan order; resume and teacher_usage sections

    elapsed = time.perf_counter() - started
    extra = {
        "sources": {"documents": len(documents), "chunks": len(chunks)},
        "skipped_sources": [{"path": s.path, "reason": s.reason} for s in skipped],
        "timing": {
            "seconds": round(elapsed, 3),
            "conversations_per_s": round(len(plans) / elapsed, 1) if elapsed else None,
        },
        "top_up": topped.summary,
        **sections,
    }
    if batch_section is not None:
        extra["batch"] = batch_section
    pinned = None
    if focused is not None:
        extra["focus"] = focused.summary
        pinned = set(focused.summary["validation_documents"])
    exported = export_run(config, run_dir, trajectories, fmt, extra_manifest=extra, validation_documents=pinned)
    return GenerateResult._from(run_dir, exported)


def _plan_focus(config: Config, run_dir: Path, chunks: list[Any], plans: list[Plan], report: str | Path,
                budget: int | None) -> Any:
    """The focused plans for `generate --focus`: read from the run's finished trajectories and split."""
    from distill.generation.focus import FocusError, plan_focus

    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        raise FocusError(f"{run_dir} has no manifest.json: --focus needs the run the eval report was made on",
                         hint="generate and evaluate the run first, then `distill generate CONFIG --focus REPORT`")
    held_out = json.loads(manifest.read_text(encoding="utf-8")).get("split", {}).get("validation_documents", [])
    focused = plan_focus(config, chunks, plans, load_trajectories(run_dir), report, validation_documents=held_out,
                         budget=budget)
    focused.summary["validation_documents"] = sorted(held_out)
    return focused


def load_trajectories(run_dir: Path) -> list[Trajectory]:
    """The rollout stage's artifact of a run folder."""
    path = run_dir / "trajectories.jsonl"
    if not path.is_file():
        raise RunFolderError(f"{run_dir} has no trajectories.jsonl", hint="run `distill generate CONFIG` first")
    with path.open(encoding="utf-8") as fh:
        return [Trajectory.model_validate_json(line) for line in fh if line.strip()]


def reexport(config: Config, run_dir: Path) -> GenerateResult:
    """Rebuild the dataset files of a run from its trajectories, with zero teacher calls."""
    trajectories = load_trajectories(run_dir)
    for t in trajectories:  # export-stage verdicts are recomputed from scratch
        if t.stage == "export":
            t.outcome, t.stage, t.reason, t.detail, t.raw = "accepted", None, None, None, None
    previous = run_dir / "manifest.json"
    extra = {}
    if previous.is_file():
        old = json.loads(previous.read_text(encoding="utf-8"))
        kept = ("sources", "skipped_sources", "timing", "top_up", "resume", "teacher_usage")
        extra = {k: old[k] for k in kept if k in old}
    exported = export_run(config, run_dir, trajectories, get_format(config), extra_manifest=extra)
    return GenerateResult._from(run_dir, exported)
