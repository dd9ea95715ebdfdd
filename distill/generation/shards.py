"""Shards of one run: `distill generate CONFIG --shard I/N --out DIR` runs every N-th plan, `distill merge DIRS... --out
RUN` gathers the shards into one run folder that `distill generate CONFIG --out RUN` resumes.

A shard plans the whole run (the same plans and fingerprint as a local run of the config), rolls out and judges its
own plans (`plans[I-1::N]`, so every shard gets the same mix of kinds), and tops up nothing: the mix top-up depends on
the outcomes of every conversation, so it is planned once, for the whole run, by the `generate` that resumes the
merged folder (or by the Ray driver, distill/generation/ray_executor.py). A shard reads the sources itself, unless
given the run's chunks and index (a Ray task is given the driver's, so its node needs no source). A finished shard
writes `shard.json` (which shard, the run's fingerprint and config hash, a digest of its plan ids, its outcomes); a
shard stopped by a budget or the breaker writes none and resumes with its own command.

`merge` refuses what would not add up to the local run: a folder that is not a finished shard, shards of another
config or of other sources (another fingerprint), the same shard twice, shards of different splits (I/N with another
N) and missing shards. It copies the index and the plans, interleaves the trajectories back into plan order (byte for
byte the shards' lines), unites the ledgers by request key (distill/teachers/ledger.py) and writes `run.json` and
`merged.json`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from distill.atomic_files import sha256_of
from distill.config import Config
from distill.errors import DistillError
from distill.run_folder import RunFolder, output_folder, read_jsonl, write_json, write_lines
from distill.teachers.base import Teacher
from distill.trajectory import Plan, PlanList, plan_column

if TYPE_CHECKING:
    from distill.generation.index import ChunkIndex

__all__ = ["MergeResult", "Shard", "ShardError", "ShardResult", "generate_shard", "merge_shards"]

T = TypeVar("T")


class ShardError(DistillError):
    """Shards that cannot be run or merged as asked."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`: the plans `plans[index - 1 :: count]`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ShardError(f"--shard {self.index}/{self.count}: I must be between 1 and N",
                             hint="e.g. --shard 3/16 runs the third of 16 shards")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`"3/16"` -> Shard(3, 16)."""
        index, sep, count = text.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise ShardError(f"--shard {text}: expected I/N, e.g. 3/16 (the third of 16 shards)",
                             hint="give the shard as I/N with 1 <= I <= N")
        return cls(int(index), int(count))

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, items: Sequence[T]) -> Sequence[T]:
        """This shard's share of `items` (the plans, or their ids), in plan order; a `PlanList` of a `PlanList`."""
        return items[self.index - 1 :: self.count]


def _ids_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]


@dataclass
class ShardResult:
    """What a shard run wrote: its folder and its conversations' outcomes."""

    run_dir: Path
    shard: Shard
    outcomes: dict[str, int]


def generate_shard(
    config: Config, shard: Shard, out: str | Path, *, progress: bool = True, teacher: Teacher | None = None,
    fresh: bool = False, index: ChunkIndex | None = None,
) -> ShardResult:
    """Roll out and judge shard `shard` of `config`'s plans into the run folder `out` (see the module doc); over
    `index` (the chunks and BM25 index the run's driver prepared) when given, else over the sources, read here."""
    from distill.agent.tools import ToolBox
    from distill.formats import get_format
    from distill.generation.pipeline import prepare
    from distill.generation.resume import RunSession
    from distill.generation.rollout import Rollout
    from distill.generation.scheduler import draining, roll_and_top_up
    from distill.run_folder import iter_trajectories

    if config.teacher.mode == "batch":
        raise ShardError(f"{config.path or 'the config'}: teacher.mode: batch cannot run as shards",
                         hint="run the shards online (teacher.mode: online), or the whole run in batch mode")
    started = time.perf_counter()
    prepared = prepare(config, out, progress, index=index)
    folder = prepared.folder
    folder.shard.unlink(missing_ok=True)  # written again when this shard finishes
    run = RunSession.open(config, prepared.run_dir, prepared.plans, prepared.texts, teacher=teacher, fresh=fresh)
    rollout = Rollout(config=config, teacher=run.teacher, fmt=get_format(config),
                      tools=ToolBox(config, prepared.index))
    mine = shard.select(prepared.plans)
    try:
        asyncio.run(draining(run, rollout, roll_and_top_up(mine, prepared.chunks, rollout, progress, run,
                                                             pilot=True)))
        sections = run.finish(mine)
    except BaseException:
        run.close()
        raise
    outcomes = {"accepted": 0, "rejected": 0, "failed": 0}
    for t in iter_trajectories(prepared.run_dir):
        outcomes[t.outcome] += 1
    write_json(folder.shard, {
        "shard": shard.index, "of": shard.count, "fingerprint": run.fingerprint, "config_hash": config.config_hash(),
        "config": str(config.path) if config.path else None, "plans": len(prepared.plans), "conversations": len(mine),
        "plan_ids": _ids_digest(list(plan_column(mine, "id"))), "outcomes": outcomes,
        "seconds": round(time.perf_counter() - started, 3), **sections,
    })
    return ShardResult(prepared.run_dir, shard, outcomes)


# -- merge -------------------------------------------------------------------------------------------------------------


@dataclass
class _Found:
    """One shard folder, as merge reads it."""

    folder: RunFolder
    info: dict[str, Any]

    @property
    def shard(self) -> Shard:
        return Shard(int(self.info["shard"]), int(self.info["of"]))


@dataclass
class MergeResult:
    """The merged run folder and what went into it."""

    run_dir: Path
    shards: int
    conversations: int
    outcomes: dict[str, int]
    ledger_rows: int
    config: str | None


def _read_shard(path: Path) -> _Found:
    folder = RunFolder(path)
    if not path.is_dir():
        raise ShardError(f"{path} is not a folder", hint="give distill merge the shard folders (each --out of a shard)")
    if not folder.shard.is_file():
        raise ShardError(
            f"{path} has no {folder.shard.name}: it is not a finished shard",
            hint="run (or resume) it with `distill generate CONFIG --shard I/N --out DIR`; a shard writes "
                 f"{folder.shard.name} when all its conversations are done",
        )
    try:
        info = json.loads(folder.shard.read_text(encoding="utf-8"))
        Shard(int(info["shard"]), int(info["of"]))
        str(info["fingerprint"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ShardError(f"{folder.shard} is not a shard record ({exc})",
                         hint="rerun the shard's command to write it again") from None
    for needed in (folder.trajectories, folder.plans, folder.run_state):
        folder.require(needed, "rerun the shard's command (`distill generate CONFIG --shard I/N --out DIR`)")
    return _Found(folder, info)


def _check(found: list[_Found]) -> int:
    """The N the shards share; a ShardError for shards that do not make one run (see the module doc)."""
    first = found[0]
    for f in found[1:]:
        if f.info["fingerprint"] != first.info["fingerprint"]:
            raise ShardError(
                f"{f.folder.root} and {first.folder.root} are shards of different runs (another config, other "
                f"sources or another distill version: fingerprint {f.info['fingerprint']} vs "
                f"{first.info['fingerprint']})",
                hint="merge only the shards of one config; rerun the odd one with that config's command",
            )
        if f.shard.count != first.shard.count:
            raise ShardError(
                f"{f.folder.root} is shard {f.shard.label} but {first.folder.root} is shard {first.shard.label}: "
                "shards of different splits overlap",
                hint="run every shard of a run with the same N (--shard I/N)",
            )
    seen: dict[int, Path] = {}
    for f in found:
        if f.shard.index in seen:
            raise ShardError(
                f"shard {f.shard.label} is given twice: {seen[f.shard.index]} and {f.folder.root}",
                hint="give each shard's folder once",
            )
        seen[f.shard.index] = f.folder.root
    count = first.shard.count
    missing = [i for i in range(1, count + 1) if i not in seen]
    if missing:
        named = ", ".join(f"{i}/{count}" for i in missing[:8]) + (" ..." if len(missing) > 8 else "")
        config = first.info.get("config") or "CONFIG"
        raise ShardError(
            f"{len(missing)} of the {count} shards are missing: {named}",
            hint=f"run them (`distill generate {config} --shard {missing[0]}/{count} --out DIR`) and merge all {count}",
        )
    return count


def _same_file(found: list[_Found], name: str) -> Path:
    """The path of file `name` in the first shard, after checking the others hold the same bytes."""
    paths = [getattr(f.folder, name) for f in found]
    want = sha256_of(paths[0])
    for path in paths[1:]:
        if sha256_of(path) != want:
            raise ShardError(f"{path} differs from {paths[0]}: the shards did not plan the same run",
                             hint="rerun the shards with the same config and sources")
    return Path(paths[0])


def merge_shards(dirs: Sequence[str | Path], out: str | Path) -> MergeResult:
    """Gather finished shard folders into the run folder `out` (see the module doc)."""
    from distill.teachers.ledger import Ledger

    if not dirs:
        raise ShardError("no shard folders given", hint="distill merge SHARD_DIR... --out RUN")
    found = [_read_shard(Path(d)) for d in dirs]
    count = _check(found)
    target = Path(out)
    for f in found:
        if target.resolve() == f.folder.root.resolve():
            raise ShardError(f"--out {out} is one of the shards", hint="merge into a new folder")
    folder = RunFolder(output_folder(target))
    if folder.run_state.is_file() and not folder.merged.is_file():
        raise ShardError(f"--out {out} holds a run already", hint="merge into a new (or empty) folder")
    by_shard = sorted(found, key=lambda f: f.shard.index)
    plans_path = _same_file(by_shard, "plans")
    plans = PlanList(read_jsonl(plans_path, Plan.model_validate_json)).ids()
    for f in by_shard:
        mine = f.shard.select(plans)
        if _ids_digest(mine) != f.info["plan_ids"]:
            raise ShardError(f"{f.folder.shard}: its plans are not shard {f.shard.label} of {plans_path}",
                             hint="rerun the shard's command")

    index = by_shard[0].folder.index
    if folder.index.exists():
        shutil.rmtree(folder.index)
    shutil.copytree(index, folder.index)
    shutil.copyfile(plans_path, folder.plans)
    outcomes = {"accepted": 0, "rejected": 0, "failed": 0}
    def interleaved() -> Any:
        readers = [f.folder.trajectories.open("rb") for f in by_shard]
        try:
            for i, plan_id in enumerate(plans):
                line = readers[i % count].readline()
                record = json.loads(line) if line.strip() else {}
                if record.get("id") != plan_id:
                    where = by_shard[i % count].folder.trajectories
                    raise ShardError(f"{where}: expected the conversation of plan {plan_id}, found "
                                     f"{record.get('id') or 'the end of the file'}",
                                     hint="the shard is incomplete or was edited: rerun its command")
                outcomes[record["outcome"]] += 1
                yield line if line.endswith(b"\n") else line + b"\n"
            for f, r in zip(by_shard, readers):
                if r.readline().strip():
                    raise ShardError(f"{f.folder.trajectories} holds more conversations than its shard's plans",
                                     hint="the shard was edited or mixed with another run: rerun its command")
        finally:
            for r in readers:
                r.close()

    write_lines(folder.trajectories, interleaved())
    rows = 0
    ledgers = [f.folder.ledger for f in by_shard if f.folder.ledger.is_file()]
    if ledgers:
        with Ledger.open(folder.ledger) as ledger:
            for path in ledgers:
                rows += ledger.absorb(path)
    shutil.copyfile(by_shard[0].folder.run_state, folder.run_state)
    config = by_shard[0].info.get("config")
    write_json(folder.merged, {
        "fingerprint": by_shard[0].info["fingerprint"], "config": config, "conversations": len(plans),
        "outcomes": outcomes, "ledger_rows_added": rows,
        "shards": [{"shard": f.shard.label, "folder": str(f.folder.root), "outcomes": f.info.get("outcomes")}
                   for f in by_shard],
    })
    return MergeResult(folder.root, count, len(plans), outcomes, rows, config)

