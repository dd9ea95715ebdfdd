"""Offline throughput of `distill generate` per agent format: conversations/s for langchain-chat and openai-tools.

Usage: python benchmarks/formats_throughput.py [--conversations 3000] [--docs 120]

Two set-ups over the project's corpus (replicated to --docs documents), both on the offline teacher, deduplication off
(it measures what generation costs, not what dedup keeps):
- retrieval: one retriever tool, the same config in both formats (parallel calls allowed in openai-tools);
- support: configs/support_agent.yaml's four tools (retriever, python calculator, two simulated tools with
  structured arguments, whose observations the teacher writes), in both formats.
Each run is the whole pipeline (sources, index, plans, questions, rollouts with real tool calls and simulated ones,
strict checks, rendering, token counting, export) after a warm-up run.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=3000)
    parser.add_argument("--docs", type=int, default=120, help="documents (copies of the corpus files)")
    args = parser.parse_args()

    from distill.config import config_from_dict
    from distill.generation.pipeline import generate

    work = Path(tempfile.mkdtemp(prefix="distill-formats-"))
    docs = work / "docs"
    docs.mkdir()
    files = sorted((REPO / "corpus").glob("*.md"))
    for i in range(args.docs):
        shutil.copy(files[i % len(files)], docs / f"{i:04d}-{files[i % len(files)].name}")
    support = yaml.safe_load((REPO / "configs" / "support_agent.yaml").read_text(encoding="utf-8"))
    setups = {
        "retrieval": [{"name": "search_docs", "description": "Searches the docs.", "kind": "retriever", "top_k": 3}],
        "support": support["tools"],
    }
    print(f"{'set-up':<10} {'format':<15} {'conversations/s':>16} {'accepted':>9} {'examples':>9} {'simulated':>10}")
    for setup, tools in setups.items():
        for fmt in ("langchain-chat", "openai-tools"):
            data = {
                "name": f"bench-{setup}-{fmt}",
                "agent": {"format": fmt, "parallel_tool_calls": True, "max_steps": 4},
                "tools": copy.deepcopy(tools),
                "sources": [{"path": str(docs)}],
                "teacher": {"provider": "offline"},
                "generation": {"conversations": args.conversations, "seed": 0},
                "export": {"dedup": {"enabled": False}},
            }
            config = config_from_dict(data, file=str(REPO / "configs" / "bench.yaml"), base_dir=REPO / "configs")
            warm = config.model_copy(update={"generation": config.generation.model_copy(update={"conversations": 5})})
            generate(warm, work / "warm", progress=False)
            started = time.perf_counter()
            result = generate(config, work / f"{setup}-{fmt}", progress=False)
            elapsed = time.perf_counter() - started
            manifest = json.loads(result.manifest.read_text(encoding="utf-8"))
            c, e = result.conversations, result.examples
            print(f"{setup:<10} {fmt:<15} {c['requested'] / elapsed:>16,.0f} {c['accepted']:>9} "
                  f"{e['train'] + e['validation']:>9} {manifest['simulated_tools']['calls']:>10}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
