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

from distill.config import Config
from distill.errors import DistillError, RunFolderError
from distill.export import ExportResult, export_run, write_jsonl
from distill.formats import get_format
from distill.index import ChunkIndex
from distill.questions import plan_conversations
from distill.rollout import Rollout, run_conversation
from distill.sources import chunk_documents, load_documents
from distill.teachers.base import Teacher, make_teacher
from distill.tools import ToolBox
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


async def _roll_all(plans: list[Plan], chunks: dict[str, Any], rollout: Rollout, progress: bool) -> list[Trajectory]:
    results: list[Trajectory | None] = [None] * len(plans)
    tally = {"accepted": 0, "rejected": 0, "failed": 0}
    bar = _progress(len(plans), progress)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(plans)):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            trajectory = await run_conversation(plans[i], chunks[plans[i].chunk_id], rollout)
            results[i] = trajectory
            tally[trajectory.outcome] += 1
            bar.update(1)
            if bar.n % 25 == 0 or bar.n == len(plans):
                bar.set_postfix(tally, refresh=False)

    workers = max(1, min(len(plans), rollout.config.teacher.concurrency * 2))
    try:
        await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        bar.close()
        await rollout.teacher.aclose()
    return [t for t in results if t is not None]


def generate(
    config: Config,
    out: str | Path | None = None,
    *,
    progress: bool = True,
    teacher: Teacher | None = None,
) -> GenerateResult:
    """Run every stage for `config` and write the run folder (default `outputs/<name>/`)."""
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
    write_jsonl(run_dir / "plans.jsonl", (p.model_dump() for p in plans))
    fmt = get_format(config)
    teacher = teacher or make_teacher(config)
    rollout = Rollout(config=config, teacher=teacher, fmt=fmt, tools=ToolBox(config, index))
    by_id = {c.id: c for c in chunks}
    trajectories = asyncio.run(_roll_all(plans, by_id, rollout, progress))
    write_jsonl(run_dir / "trajectories.jsonl", (t.model_dump() for t in trajectories))

    elapsed = time.perf_counter() - started
    extra = {
        "sources": {"documents": len(documents), "chunks": len(chunks)},
        "skipped_sources": [{"path": s.path, "reason": s.reason} for s in skipped],
        "timing": {
            "seconds": round(elapsed, 3),
            "conversations_per_s": round(len(plans) / elapsed, 1) if elapsed else None,
        },
    }
    exported = export_run(config, run_dir, trajectories, fmt, extra_manifest=extra)
    return GenerateResult._from(run_dir, exported)


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
        extra = {k: old[k] for k in ("sources", "skipped_sources", "timing") if k in old}
    exported = export_run(config, run_dir, trajectories, get_format(config), extra_manifest=extra)
    return GenerateResult._from(run_dir, exported)
