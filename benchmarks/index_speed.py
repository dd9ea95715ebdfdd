"""Speed of `distill.generation.index.ChunkIndex`: build time and queries/s for `search` and `search_many` on 10k chunks.

Run: `python benchmarks/index_speed.py [--chunks 10000] [--queries 2000] [--k 3]`. Synthetic, seeded text: each chunk
is ~150 words drawn (Zipf-like) from a 20k-word vocabulary; each query is 3-8 words from the same vocabulary.
"""

from __future__ import annotations

import argparse
import random
import string
import time

from distill.generation.index import ChunkIndex
from distill.generation.sources import Chunk

__all__ = ["main"]


def _corpus(n_chunks: int, n_queries: int, seed: int) -> tuple[list[Chunk], list[str]]:
    rng = random.Random(seed)
    vocab = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))) for _ in range(20_000)]
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    chunks = []
    for i in range(n_chunks):
        words = rng.choices(vocab, weights=weights, k=rng.randint(100, 200))
        chunks.append(
            Chunk(id=f"doc{i // 10}.md#c{i % 10}", doc_id=f"doc{i // 10}.md", text=" ".join(words), n=i % 10)
        )
    queries = [" ".join(rng.choices(vocab, weights=weights, k=rng.randint(3, 8))) for _ in range(n_queries)]
    return chunks, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    chunks, queries = _corpus(args.chunks, args.queries, args.seed)
    start = time.perf_counter()
    index = ChunkIndex.build(chunks)
    build_s = time.perf_counter() - start
    index.search(queries[0], args.k)  # warm-up

    start = time.perf_counter()
    single = [index.search(q, args.k) for q in queries]
    single_s = time.perf_counter() - start

    start = time.perf_counter()
    batched = index.search_many(queries, args.k)
    batched_s = time.perf_counter() - start

    assert single == batched, "search_many disagrees with search"
    print(f"chunks: {len(chunks)}, queries: {len(queries)}, k: {args.k}")
    print(f"build:       {build_s:.2f} s")
    print(f"search:      {len(queries) / single_s:,.0f} queries/s")
    print(f"search_many: {len(queries) / batched_s:,.0f} queries/s")


if __name__ == "__main__":
    main()
