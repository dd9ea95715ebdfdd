"""A local run beside the same run as shards on Ray (this machine's cores), with every stage on.

Usage: python benchmarks/shards_speed.py [--conversations 10000] [--shards 2] [--docs 170]

Both runs use the offline teacher over the project's docs/ copied to --docs documents, dedup, coverage with the mix
top-up and the offline judge on. It prints each run's wall time and conversations requested per second (the Ray
figure includes starting the local Ray cluster, the shards, the merge and the top-up on the driver) and checks that
the two runs' train, validation, rejected, trajectories and plans files are byte for byte the same.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SAME = ("train.jsonl", "validation.jsonl", "rejected.jsonl", "trajectories.jsonl", "plans.jsonl")


def copy_docs(work: Path, n: int) -> Path:
    """The project's docs/ copied to `n` documents under `work/docs` (the benchmark corpus of the scale-out runs)."""
    docs = work / "docs"
    docs.mkdir()
    files = sorted((REPO / "docs").glob("*.md"))
    for i in range(n):
        shutil.copyfile(files[i % len(files)], docs / f"{i:04d}-{files[i % len(files)].name}")
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--docs", type=int, default=170)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="distill-shards-"))
    docs = copy_docs(work, args.docs)
    config = work / "bench.yaml"
    config.write_text(yaml.safe_dump({
        "name": "shards-bench",
        "tools": [{"name": "Vector Search Tool", "description": "Searches the docs.", "kind": "retriever", "top_k": 3}],
        "sources": [{"path": str(docs)}], "teacher": {"provider": "offline"},
        "generation": {"conversations": args.conversations, "seed": 0}, "judge": {"enabled": True},
    }), encoding="utf-8")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    distill = [sys.executable, "-m", "distill.cli", "generate", str(config), "--no-progress"]
    runs = {"local": [], f"ray, {args.shards} shards": ["--executor", "ray", "--shards", str(args.shards)]}
    for name, extra in runs.items():
        out = work / name.split(",")[0]
        started = time.perf_counter()
        subprocess.run([*distill, "--out", str(out), *extra], check=True, env=env, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        requested = json.loads((out / "manifest.json").read_text())["conversations"]["requested"]
        print(f"{name}: {requested} conversations requested in {seconds:.1f} s, {requested / seconds:.0f} conv/s")
    same = all((work / "local" / f).read_bytes() == (work / "ray" / f).read_bytes() for f in SAME)
    print(f"same files ({', '.join(SAME)}): {same}; load average {os.getloadavg()[0]:.2f}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
