"""What a Ray task of `--executor ray` costs to start: over the driver's index (shipped) or over the sources (read).

Usage: python benchmarks/ray_sources.py [--docs 170] [--tasks 5]

benchmarks/shards_speed.py's corpus (the project's docs/ copied to --docs documents). The driver prepares the run
(sources, chunks, BM25 index in RUN/index/) and packs and puts the index folder in the object store once, as
distill/generation/ray_executor.py does; then --tasks Ray tasks start a shard's preparation each way: fetching the
index from the object store, writing and loading it and `prepare(config, tmp, index=...)` (what a task does now), and
`prepare(config, tmp)` reading and chunking the sources and building the index (what a task did before). It prints
the driver's pack + put and each way's median per task, CPU seconds (the task's process) and wall, and checks that
both ways give the same chunks and plans.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shards_speed import copy_docs


def _start(config: Any, refs: list[Any]) -> tuple[float, float, float, float, str, str]:
    """In a Ray task: (CPU, wall) of a start over the shipped index, then of a start over the sources; their digests."""
    import hashlib

    import ray

    from distill.generation.index import ChunkIndex
    from distill.generation.pipeline import prepare
    from distill.generation.ray_executor import _unpack
    from distill.run_folder import RunFolder

    def digest(prepared: Any) -> str:
        rows = [c.text for c in prepared.chunks] + [p.model_dump_json() for p in prepared.plans]
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()

    with tempfile.TemporaryDirectory() as tmp:
        cpu, wall = time.process_time(), time.perf_counter()
        files = ray.get(refs[0])
        index = RunFolder(Path(tmp)).index
        _unpack(files, index)
        shipped = prepare(config, tmp, False, index=ChunkIndex.load(index))
        new = (time.process_time() - cpu, time.perf_counter() - wall)
    with tempfile.TemporaryDirectory() as tmp:
        cpu, wall = time.process_time(), time.perf_counter()
        read = prepare(config, tmp, False)
        old = (time.process_time() - cpu, time.perf_counter() - wall)
    return (*new, *old, digest(shipped), digest(read))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=170)
    parser.add_argument("--tasks", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from distill.config import load_config
    from distill.generation.pipeline import prepare
    from distill.generation.ray_executor import _pack
    from distill.run_folder import RunFolder

    work = Path(tempfile.mkdtemp(prefix="distill-raysrc-"))
    docs = copy_docs(work, args.docs)
    (work / "bench.yaml").write_text(yaml.safe_dump({
        "name": "raysrc-bench",
        "tools": [{"name": "Vector Search Tool", "description": "Searches the docs.", "kind": "retriever", "top_k": 3}],
        "sources": [{"path": str(docs)}], "teacher": {"provider": "offline"},
        "generation": {"conversations": 10000, "seed": 0}, "judge": {"enabled": True},
    }), encoding="utf-8")
    config = load_config(work / "bench.yaml")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        prepared = prepare(config, work / "run", False)
        ray.put(config)  # the driver puts the config first (Ray's first put sets up its store client)
        cpu, wall = time.process_time(), time.perf_counter()
        packed = _pack(RunFolder(work / "run").index, index=True)
        ref = ray.put(packed)
        put = (time.process_time() - cpu, time.perf_counter() - wall)
        size = sum(map(len, packed.values()))
        from distill.generation.questions import plan_conversations

        planning = time.process_time()
        plan_conversations(config, prepared.chunks)
        planning = time.process_time() - planning
        print(f"{args.docs} documents, {len(prepared.chunks):,} chunks, {len(prepared.plans):,} plans; index folder "
              f"{size / 1e6:.2f} MB; driver pack + put: {put[0] * 1000:.0f} ms CPU, {put[1] * 1000:.0f} ms wall; planning "
              f"(in both ways below): {planning * 1000:.0f} ms CPU")
        task = ray.remote(num_cpus=1)(_start)
        ray.get(task.remote(config, [ref]))  # a warm worker, its imports done
        runs = [ray.get(task.remote(config, [ref])) for _ in range(args.tasks)]
        for name, at in (("over the shipped index", 0), ("over the sources", 2)):
            cpu_s = statistics.median(r[at] for r in runs)
            wall_s = statistics.median(r[at + 1] for r in runs)
            print(f"task start {name}: {cpu_s * 1000:.0f} ms CPU, {wall_s * 1000:.0f} ms wall (median of {args.tasks})")
        print(f"same chunks and plans both ways: {all(r[4] == r[5] for r in runs)}; "
              f"load average {os.getloadavg()[0]:.2f}")
    finally:
        ray.shutdown()
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
