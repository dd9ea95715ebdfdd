"""End-to-end throughput of `distill generate` on the offline teacher: conversations/s and peak memory.

Usage: python benchmarks/offline_throughput.py [--conversations 5000] [--profile] [--all-stages]

Builds a config over the project's corpus (replicated to --docs documents so the index is not trivially small),
runs the whole pipeline (sources, chunks, BM25 index, plans, questions, rollouts with real tool calls, strict
validation, rendering with LangChain's templates, token counting, export) and prints the figures. With --profile,
prints where the time goes (cProfile, by cumulative time of distill's stages). With --all-stages, dedup, the coverage
check and the mix top-up are on (the documents are copies, so dedup drops repeats and top-up asks for more).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=5000)
    parser.add_argument("--docs", type=int, default=120, help="documents (copies of the corpus files)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--all-stages", action="store_true", help="dedup, coverage and mix top-up on")
    args = parser.parse_args()

    from distill.config import config_from_dict
    from distill.generation.pipeline import generate

    work = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    docs = work / "docs"
    docs.mkdir()
    files = sorted((REPO / "corpus").glob("*.md"))
    for i in range(args.docs):
        src = files[i % len(files)]
        shutil.copy(src, docs / f"{i:04d}-{src.name}")
    config = config_from_dict(
        {
            "name": "bench",
            "tools": [
                {"name": "Vector Search Tool", "description": "Searches the docs.", "kind": "retriever", "top_k": 3}
            ],
            "sources": [{"path": "docs"}],
            "teacher": {"provider": "offline"},
            "generation": {"conversations": args.conversations, "seed": 0,
                           **({} if args.all_stages else {"max_extra_conversations": 0})},
            # The documents are copies, so the offline teacher asks the same questions again: measure the pipeline
            # itself, without dropping them as duplicates or topping the mix up (see benchmarks/dedup_speed.py).
            **({} if args.all_stages else {"export": {"dedup": {"enabled": False}}}),
        },
        file=str(work / "bench.yaml"),
        base_dir=work,
    )
    # Warm imports (LangChain, bpe-openai, bm25s) so the figure is the pipeline, not interpreter start-up.
    generate(config.model_copy(update={"generation": config.generation.model_copy(update={"conversations": 5})}),
             work / "warm", progress=False)

    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    result = generate(config, work / "run", progress=False)
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c, e = result.conversations, result.examples
    print(f"conversations: {c['requested']} requested, {c['accepted']} accepted; examples: {e['train']} + {e['validation']}")
    load = __import__("os").getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (the machine is shared with other jobs); "
          f"stages: {'all (dedup, coverage, top-up)' if args.all_stages else 'dedup and top-up off'}")
    print(f"end to end: {elapsed:.2f} s  ->  {c['requested'] / elapsed:,.0f} conversations/s")
    print(f"peak memory (max RSS of the process): {peak_mb:,.0f} MB")
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
        stats.print_stats(r"distill/|langchain_core/prompts/chat.py|bm25s/__init__|bpe_openai", 25)
        print(out.getvalue())
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
