"""The `generate` pipeline: wires the stages into a run folder (its names and writes: distill/run_folder.py); no stage
logic lives here.

config -> sources/chunks -> BM25 index -> plans -> (questions + rollouts + the mix top-up + the judge, concurrently:
distill/generation/scheduler.py) -> export. Each stage writes
its artifact into the run folder: `index/` (with `chunks.jsonl`), `plans.jsonl`, `trajectories.jsonl`, then the dataset
files and `manifest.json`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.agent.tools import ToolBox
from distill.config import Config
from distill.errors import DistillError, RunFolderError
from distill.formats import get_format
from distill.generation.export import ExportResult, export_run
from distill.generation.index import ChunkIndex
from distill.generation.questions import plan_conversations
from distill.generation.resume import RunSession
from distill.generation.rollout import Rollout
from distill.generation.scheduler import draining, roll_and_top_up
from distill.generation.sources import Document, SkippedSource, chunk_documents, load_documents
from distill.run_folder import (
    MANIFEST,
    RunFolder,
    default_run_dir,
    iter_trajectories,
    load_trajectories,
    output_folder,
    read_manifest,
    write_jsonl,
)
from distill.teachers.base import Teacher
from distill.trajectory import Plan, PlanList, Trajectory, plan_column

__all__ = ["GenerateResult", "default_run_dir", "generate", "load_trajectories", "reexport"]  # the last two: run_folder's

log = logging.getLogger(__name__)

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


def _stage(progress: bool, line: str) -> None:
    """A line on the terminal before a stage that can take a while (large sources), when progress is shown."""
    if progress:
        print(line, file=sys.stderr, flush=True)


def _name_skipped(skipped: list[Any], shown: int = 5) -> None:
    """Warn about the sources that were skipped (all of them are listed in manifest.json)."""
    for s in skipped[:shown]:
        log.warning("skipped source %s: %s", s.path, s.reason)
    if len(skipped) > shown:
        log.warning("... and %d more skipped source(s), listed in manifest.json (skipped_sources)", len(skipped) - shown)


def _warn_empty_validation(config: Config, exported: ExportResult) -> None:
    """Warn when validation.jsonl came out empty although export.validation_fraction asks for one."""
    examples = exported.counts["examples"]
    if config.export.validation_fraction <= 0 or examples["validation"] or not examples["train"]:
        return
    log.warning(
        "validation.jsonl is empty: the split is by source document and the examples come from %d document(s); "
        "add source documents, or set export.validation_fraction: 0 to say no validation split is wanted",
        exported.documents,
    )


@dataclass
class Prepared:
    """What every invocation builds before the rollouts: the run folder, the sources, chunks, index and plans.

    `documents` and `skipped` are empty when `prepare` was given the index (the sources were not read)."""

    run_dir: Path
    folder: RunFolder
    documents: list[Any]
    skipped: list[Any]
    chunks: list[Any]
    index: ChunkIndex
    plans: PlanList

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.chunks]


def prepare(config: Config, out: str | Path | None, progress: bool, *, index: ChunkIndex | None = None) -> Prepared:
    """The run folder (created), the sources read and chunked, the BM25 index (saved in it) and the config's plans.

    Given `index` (the run's chunks and index as a driver prepared them: a Ray task's, distill/generation/
    ray_executor.py), the sources are not read and nothing is built: its chunks are the run's, saved in the folder."""
    run_dir = output_folder(out if out is not None else default_run_dir(config))
    folder = RunFolder(run_dir)
    documents: list[Document] = []
    skipped: list[SkippedSource] = []
    if index is not None:
        chunks = index.chunks
    else:
        _stage(progress, "reading the sources ...")
        documents, skipped = load_documents(config)
        chunks = chunk_documents(documents, config.chunking)
    if not chunks:
        named = "; ".join(f"{s.path} ({s.reason})" for s in skipped[:5]) or "no files found"
        raise DistillError(f"no usable text in the sources: {named}", hint="check sources: in the config")
    if index is None:
        _name_skipped(skipped)
        _stage(progress, f"{len(documents):,} document(s), {len(chunks):,} chunks; building the search index ...")
        index = ChunkIndex.build(chunks)
    index.save(folder.index)
    return Prepared(run_dir, folder, documents, skipped, chunks, index, plan_conversations(config, chunks))


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
    prepared = prepare(config, out, progress)
    run_dir, folder, documents, skipped, chunks = (prepared.run_dir, prepared.folder, prepared.documents,
                                                   prepared.skipped, prepared.chunks)
    plans = prepared.plans
    focused = None
    if focus is not None:  # the run's earlier extra plans (top-ups, focus rounds) stay; the new round comes after
        plans += _earlier_extra_plans(folder, plans)
        focused = _plan_focus(config, run_dir, chunks, plans, focus, focus_budget)
        plans += focused.plans
    fmt = get_format(config)
    texts = prepared.texts
    waves = (batch or no_wait or cancel_batches or config.teacher.mode == "batch") and not from_ledger
    if waves:
        from distill.generation.waves import batch_teacher

        config, teacher = batch_teacher(config, teacher)
    run = RunSession.open(config, run_dir, plans, texts, teacher=teacher, fresh=fresh, from_ledger=from_ledger)
    rollout = Rollout(config=config, teacher=run.teacher, fmt=fmt, tools=ToolBox(config, prepared.index))
    todo = plans[:pilot] if pilot else plans

    def roll() -> Any:
        return asyncio.run(draining(run, rollout, roll_and_top_up(todo, chunks, rollout, progress, run,
                                                                    pilot=bool(pilot))))

    try:
        if waves:
            from distill.generation.waves import run_waves

            topped, batch_section = run_waves(config, run, roll, no_wait=no_wait, cancel=cancel_batches)
        else:
            topped, batch_section = roll(), None
        plans = topped.plans
        if topped.summary["extra_conversations"]:  # the extra plans continue the numbering
            write_jsonl(folder.plans, (p.model_dump() for p in plans))
        sections = run.finish(plans)  # trajectories.jsonl in plan order; resume and teacher_usage sections
    except BaseException:
        run.close()  # the spool, the append handle, the ledger
        raise

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
    exported = export_run(config, run_dir, lambda: iter_trajectories(run_dir), fmt, extra_manifest=extra,
                          validation_documents=pinned)
    _warn_empty_validation(config, exported)
    return GenerateResult._from(run_dir, exported)


def _earlier_extra_plans(folder: RunFolder, plans: Sequence[Plan]) -> list[Plan]:
    """The plans of plans.jsonl beyond `plans` (the config's own): an earlier top-up's or focus round's."""
    from distill.run_folder import read_jsonl

    own = set(plan_column(plans, "id"))
    return [p for p in read_jsonl(folder.plans, Plan.model_validate_json) if p.id not in own]


def _plan_focus(config: Config, run_dir: Path, chunks: list[Any], plans: Sequence[Plan], report: str | Path,
                budget: int | None) -> Any:
    """The focused plans for `generate --focus`: read from the run's finished trajectories and split."""
    from distill.generation.focus import FocusError, plan_focus

    if not RunFolder(run_dir).manifest.is_file():
        raise FocusError(f"{run_dir} has no {MANIFEST}: --focus needs the run the eval report was made on",
                         hint="generate and evaluate the run first, then `distill generate CONFIG --focus REPORT`")
    held_out = read_manifest(run_dir).split.validation_documents
    focused = plan_focus(config, chunks, plans, load_trajectories(run_dir), report, validation_documents=held_out,
                         budget=budget)
    focused.summary["validation_documents"] = sorted(held_out)
    return focused


def reexport(config: Config, run_dir: Path) -> GenerateResult:
    """Rebuild the dataset files of a run from its trajectories, with zero teacher calls."""
    RunFolder(run_dir).require(RunFolder(run_dir).trajectories)

    def trajectories() -> Iterator[Trajectory]:  # read afresh for each pass of the export
        for t in iter_trajectories(run_dir):  # export-stage verdicts (and judge thresholds) are recomputed
            if t.stage == "export" or (t.stage == "judge" and t.outcome == "rejected"):
                t.outcome, t.stage, t.reason, t.detail, t.raw = "accepted", None, None, None, None
            yield t

    extra = {}
    if RunFolder(run_dir).manifest.is_file():
        try:
            old = read_manifest(run_dir).as_dict()
        except RunFolderError as exc:  # export rewrites it: what only the old one knew is lost, and said so
            log.warning("%s; its sources, timing, top-up and cost sections are not carried over", exc.message)
            old = {}
        kept = ("sources", "skipped_sources", "timing", "top_up", "resume", "teacher_usage")
        extra = {k: old[k] for k in kept if k in old}
    exported = export_run(config, run_dir, trajectories, get_format(config), extra_manifest=extra)
    return GenerateResult._from(run_dir, exported)
