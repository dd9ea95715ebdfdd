"""Large files linted in worker processes: byte ranges cut at line ends, worked on in parallel, merged in order.

`ranges(path, n)` cuts a file into about `n` byte ranges that each start at the beginning of a line, and
`map_ranges(fn, path, n, workers)` calls `fn(path, start, end)` for each of them in a process pool (fork start where
the platform has it, so the parent's imports and caches come along for free) and returns the results in file order.
The caller merges them; nothing here knows what a line means. `auto_workers(path)` is the default: one process (no
start-up cost) below `PARALLEL_BYTES`, else one worker per core, at most `MAX_WORKERS`.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["MAX_WORKERS", "PARALLEL_BYTES", "auto_workers", "map_ranges", "ranges"]

PARALLEL_BYTES = 8_000_000  # smaller files are linted in-process: a pool's start-up would cost more than it saves
MAX_WORKERS = 8
CHUNKS_PER_WORKER = 4  # a few ranges per worker, so one slow range does not leave the other cores idle

T = TypeVar("T")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_workers(path: str | Path) -> int:
    """The worker count `workers=None` means: 1 for files under PARALLEL_BYTES or on one core, else the cores."""
    if Path(path).stat().st_size < PARALLEL_BYTES:
        return 1
    return max(1, min(_cores(), MAX_WORKERS))


def ranges(path: str | Path, n: int) -> list[tuple[int, int]]:
    """About `n` (start, end) byte ranges covering the file, each starting right after a newline (or at 0)."""
    size = Path(path).stat().st_size
    if n <= 1 or size == 0:
        return [(0, size)]
    cuts = [0]
    with open(path, "rb") as handle:
        for k in range(1, n):
            at = max(size * k // n, cuts[-1])
            handle.seek(at - 1)  # to the end of the line holding byte at-1: the first line start at or after `at`
            handle.readline()
            cut = handle.tell()
            if cut >= size:
                break
            if cut > cuts[-1]:
                cuts.append(cut)
    cuts.append(size)
    return list(itertools.pairwise(cuts))


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and sys.platform == "linux" else None)


def map_ranges(fn: Callable[[str, int, int], T], path: str | Path, workers: int) -> list[T]:
    """`fn(path, start, end)` over the file's ranges, in `workers` processes (in-process for 1), in file order."""
    if workers <= 1:
        return [fn(str(path), 0, Path(path).stat().st_size)]
    parts = ranges(path, workers * CHUNKS_PER_WORKER)
    if len(parts) == 1:
        return [fn(str(path), *parts[0])]
    with _context().Pool(min(workers, len(parts))) as pool:
        return pool.starmap(fn, [(str(path), start, end) for start, end in parts], chunksize=1)
