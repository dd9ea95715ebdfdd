"""`distill generate CONFIG --executor ray`: the shards of a run (distill/generation/shards.py) as Ray tasks.

The driver plans the run (reads the sources, chunks them and builds the BM25 index in `RUN/index/`), puts the index
folder (its chunks included) in the object store once, starts one `SharedLimits` actor
(distill/teachers/shared_limits.py) and sends shard I of N to a Ray task; each task runs its shard in a temporary
folder on its node over the driver's index (it reads no source: the sources need not exist on the workers' nodes)
and returns the folder's files. The endpoint limits are the run's, shared through the actor: it paces
each endpoint (`teacher.rpm` / `tpm`, each endpoint's, the limits announced in headers or learned from 429s, the
holds after a Retry-After) for all the tasks, which lease their request starts from it in small batches, so a task
that finishes early leaves its share to the others and what one task learns paces them all. Concurrency is divided:
each task runs `teacher.concurrency`, each endpoint's and the judge's concurrency over N (at least 1). The driver writes them under `RUN/shards/I-of-N/`, merges them into the run folder and
resumes it with `generate`: the mix top-up is planned once, for the whole run, and the dataset is the local run's.
A shard already finished under `RUN/shards/` (same fingerprint) is not run again; a task stopped by its budget or
the breaker returns what it has (its ledger included), and the next invocation continues from it.

The tools run in the tasks, beside the conversation: what a tool needs from disk (a python or langchain tool's
module, an MCP server's command and its files) is read on the task's node, at the config's paths, so it must be there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.config import Config
from distill.errors import DistillError
from distill.generation.shards import Shard, generate_shard, merge_shards
from distill.run_folder import RunFolder, default_run_dir, output_folder
from distill.teachers.shared_limits import SharedLimits, ray_call, shared_pacing

if TYPE_CHECKING:
    from distill.generation.pipeline import GenerateResult

__all__ = ["divided", "generate_on_ray"]

_HINT = 'pip install "distill[ray]"'


def divided(config: Config, n: int) -> Config:
    """`config` with its concurrency divided among `n` workers that run at once (each at least 1); the rate limits
    stay the run's (the workers share them through `SharedLimits`)."""
    def share(value: int | None) -> int | None:
        return None if value is None else max(1, value // n)

    t = config.teacher
    endpoints = [e.model_copy(update={"concurrency": share(e.concurrency)}) for e in t.endpoints]
    teacher = t.model_copy(update={"concurrency": share(t.concurrency), "endpoints": endpoints})
    judge = config.judge.model_copy(update={"concurrency": share(config.judge.concurrency)})
    return config.model_copy(update={"teacher": teacher, "judge": judge})


def _pack(folder: Path, *, index: bool) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and (index or p.relative_to(folder).parts[0] != RunFolder(folder).index.name)}


def _unpack(files: dict[str, bytes], folder: Path) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_shard_task(config: Config, shard: Shard, earlier: dict[str, bytes], limits: Any = None,
                   index: dict[str, bytes] | None = None) -> tuple[dict[str, bytes], str | None]:
    """One Ray task: shard `shard` in a temporary folder (starting from `earlier`, what a stopped try left) over the
    driver's index folder `index` (its files; None: the sources are read here), paced by the `SharedLimits` actor
    `limits` (None: by its own limiters); returns the folder's files and, when the shard stopped, why."""
    from distill.errors import RunStopped
    from distill.generation.index import ChunkIndex

    with tempfile.TemporaryDirectory(prefix="distill-shard-") as tmp:
        _unpack(earlier, Path(tmp))
        prepared = None
        if index is not None:
            _unpack(index, RunFolder(Path(tmp)).index)
            prepared = ChunkIndex.load(RunFolder(Path(tmp)).index)
        stopped = None
        try:
            with shared_pacing(ray_call(limits)) if limits is not None else contextlib.nullcontext():
                generate_shard(config, shard, tmp, progress=False, index=prepared)
        except RunStopped as exc:
            stopped = exc.message
        return _pack(Path(tmp), index=shard.index == 1), stopped


def _finished(folder: RunFolder, fingerprint: str) -> bool:
    try:
        return json.loads(folder.shard.read_text(encoding="utf-8")).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def generate_on_ray(config: Config, out: str | Path | None = None, *, address: str | None = None,
                    shards: int | None = None, progress: bool = True) -> GenerateResult:
    """Run `config` as `shards` Ray tasks (default: the cluster's CPUs) on the cluster at `address` (default: the
    one this process is connected to, else a local one), merge them and finish the run; returns `generate`'s result."""
    try:
        import ray
    except ImportError:
        raise DistillError("--executor ray needs Ray, which is not installed", hint=_HINT) from None
    from distill.generation.pipeline import generate, prepare
    from distill.generation.resume import fingerprint

    run_dir = output_folder(out if out is not None else default_run_dir(config))
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    n = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
    prepared = prepare(config, run_dir, progress=False)
    print_ = fingerprint(config, prepared.plans, prepared.texts)
    folders = [RunFolder(RunFolder(run_dir).shards / f"{i}-of-{n}") for i in range(1, n + 1)]
    task = ray.remote(num_cpus=1, max_retries=0)(run_shard_task)
    share = ray.put(divided(config, n))
    index = ray.put(_pack(RunFolder(run_dir).index, index=True))  # once; each task reads it from the object store
    limits: Any = ray.remote(num_cpus=0, max_restarts=0)(SharedLimits).remote()
    pending: dict[object, tuple[int, RunFolder]] = {}
    for i, folder in enumerate(folders, start=1):
        if not _finished(folder, print_):
            earlier = _pack(folder.root, index=False) if folder.root.is_dir() else {}  # the index comes from the driver
            pending[task.remote(share, Shard(i, n), earlier, limits, index)] = (i, folder)
    stops: list[str] = []
    from tqdm.auto import tqdm

    try:
        with tqdm(total=n, initial=n - len(pending), desc="shards", unit="shard", disable=not progress) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                i, folder = pending.pop(ready[0])
                files, stopped = ray.get(ready[0])
                folder.root.mkdir(parents=True, exist_ok=True)
                _unpack(files, folder.root)
                if stopped:
                    stops.append(f"shard {i}/{n}: {stopped}")
                bar.update(1)
    finally:
        ray.kill(limits)
    if stops:
        from distill.errors import RunStopped

        raise RunStopped("shards", "; ".join(stops), hint=f"what they did is kept in {RunFolder(run_dir).shards}/; "
                         f"rerun `distill generate {config.path or 'CONFIG'} --executor ray --out {run_dir}`")
    merge_shards([f.root for f in folders], run_dir)
    return generate(config, run_dir, progress=progress)
