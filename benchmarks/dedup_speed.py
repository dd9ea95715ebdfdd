"""Deduplication speed: find_duplicates over N synthetic conversations (a tenth exact copies, a tenth minor edits).

Usage: python benchmarks/dedup_speed.py [N ...]   (default 2000 10000). Prints conversations per second and what
was dropped; the near-duplicate check (MinHash LSH + exact Jaccard verification) dominates the time.
"""

from __future__ import annotations

import random
import sys
import time

from distill.config import DedupConfig
from distill.generation.dedup import find_duplicates
from distill.trajectory import Step, Trajectory, Turn

WORDS = [f"w{i}" for i in range(5000)]


def _conversations(n: int) -> list[Trajectory]:
    rng = random.Random(0)
    questions: list[str] = []
    for i in range(n):
        if i and i % 10 == 0:
            questions.append(questions[rng.randrange(i)].upper() + "?")  # exact after normalization
        elif i and i % 10 == 5:
            questions.append(questions[rng.randrange(i)] + ", please")  # a minor edit: near-duplicate
        else:
            questions.append("How does " + " ".join(rng.choice(WORDS) for _ in range(14)) + " work")
    return [
        Trajectory(
            id=f"c{i:06d}",
            kind="tool",
            doc_id="d",
            chunk_id="d#0",
            turns=[Turn(question=q, steps=[Step(action="Search", action_input=f"q{i}", raw=""),
                                          Step(action="Final Answer", action_input="a", raw="")])],
        )
        for i, q in enumerate(questions)
    ]


def main(sizes: list[int]) -> None:
    find_duplicates(_conversations(50), DedupConfig())  # imports and warm-up
    for n in sizes:
        conversations = _conversations(n)
        started = time.perf_counter()
        found = find_duplicates(conversations, DedupConfig())
        elapsed = time.perf_counter() - started
        reasons = {r: sum(d.reason == r for d in found) for r in {d.reason for d in found}}
        print(f"{n:>7} conversations: {elapsed:6.2f} s, {n / elapsed:8.0f} conv/s, dropped {len(found)} {reasons}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [2000, 10000])
