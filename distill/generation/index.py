"""The BM25 search index over source chunks (bm25s): build, save to and load from a run folder, search.

Owns `ChunkIndex`. Tokenization is bm25s's own (lowercase, words of two or more characters, English stopwords
removed, no stemming) for chunks and queries alike. A search returns only chunks that share at least one token with
the query, best first, ties broken by chunk order; a query with no known token returns []. Nothing prints: progress
bars are off and bm25s's logger is kept below WARNING while it builds or loads.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import bm25s
import numpy as np

from distill.errors import RunFolderError
from distill.generation.sources import Chunk
from distill.run_folder import CHUNKS, write_jsonl

__all__ = ["CHUNKS_FILE", "ChunkIndex", "query_tokens"]

CHUNKS_FILE = CHUNKS
_PARAMS_FILE = "params.index.json"  # written by bm25s.BM25.save
_STOPWORDS = "en"
_LOAD_HINT = "build the index first (the step that loads the sources writes it), or check the run folder path"


@contextmanager
def _quiet_bm25s() -> Iterator[None]:
    """bm25s sets its logger to DEBUG; keep its debug/info lines out of an application's log handlers."""
    logger = logging.getLogger("bm25s")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


_FOUND = 4096  # search results kept (the query's tokens and k -> chunks)
_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s.tokenize's default token_pattern


@lru_cache(maxsize=1)
def _stopword_set() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def query_tokens(text: str) -> list[str]:
    """bm25s.tokenize(text, stopwords="en") for one string, without its per-call progress-bar set-up.

    `tests/test_index.py` checks it against bm25s.tokenize on the corpus.
    """
    stop = _stopword_set()
    return [t for t in _TOKEN.findall(text.lower()) if t not in stop]


class ChunkIndex:
    """BM25 over a fixed list of chunks; results are `Chunk` objects, best first."""

    __slots__ = ("_bm25", "_chunks", "_found", "_vocab")

    def __init__(self, chunks: Sequence[Chunk], bm25: bm25s.BM25 | None) -> None:
        self._chunks = list(chunks)
        self._bm25 = bm25
        vocab: dict[str, int] = dict(bm25.vocab_dict) if bm25 is not None else {}
        vocab.pop("", None)  # bm25s's placeholder for token-less text; never a real query token
        self._vocab = vocab
        self._found: dict[tuple[tuple[str, ...], int], tuple[Chunk, ...]] = {}  # (query tokens, k) -> result

    @classmethod
    def build(cls, chunks: Sequence[Chunk]) -> ChunkIndex:
        """Index `chunks` (an empty sequence gives an index that finds nothing)."""
        if not chunks:
            return cls([], None)
        tokens = bm25s.tokenize([c.text for c in chunks], stopwords=_STOPWORDS, show_progress=False)
        bm25 = bm25s.BM25()
        with _quiet_bm25s():
            bm25.index(tokens, show_progress=False)
        return cls(chunks, bm25)

    @property
    def chunks(self) -> list[Chunk]:
        """The indexed chunks, in index order (a copy)."""
        return list(self._chunks)

    def __len__(self) -> int:
        return len(self._chunks)

    # ------------------------------------------------------------------------------------------------ persistence

    def save(self, folder: Path) -> None:
        """Write the bm25s index files and chunks.jsonl into `folder` (created if missing)."""
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if self._bm25 is not None:
                with _quiet_bm25s():
                    self._bm25.save(str(folder), show_progress=False)
        except OSError as exc:
            raise RunFolderError(f"cannot write the search index in {folder}: {exc.strerror or exc}",
                                 hint="free some space or make the folder writable, and rerun") from None
        rows = ({"id": c.id, "doc_id": c.doc_id, "n": c.n, "text": c.text} for c in self._chunks)
        write_jsonl(folder / CHUNKS_FILE, rows)  # chunks.jsonl last: its presence marks a complete index

    @classmethod
    def load(cls, folder: Path) -> ChunkIndex:
        """Read an index written by `save`; raises RunFolderError (with a hint) when it is missing or damaged."""
        folder = Path(folder)
        chunks_path = folder / CHUNKS_FILE
        if not chunks_path.is_file():
            raise RunFolderError(f"{folder}: no search index ({CHUNKS_FILE} is missing)", hint=_LOAD_HINT)
        chunks = _read_chunks(chunks_path)
        if not chunks:
            return cls([], None)
        if not (folder / _PARAMS_FILE).is_file():
            raise RunFolderError(f"{folder}: the bm25s index files are missing", hint=_LOAD_HINT)
        try:
            with _quiet_bm25s():
                bm25 = bm25s.BM25.load(str(folder), load_corpus=False, mmap=False, show_progress=False)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunFolderError(
                f"{folder}: the bm25s index cannot be read ({type(exc).__name__}: {exc})", hint=_LOAD_HINT
            ) from None
        if bm25.scores.get("num_docs") != len(chunks):
            raise RunFolderError(
                f"{folder}: the bm25s index has {bm25.scores.get('num_docs')} documents but {CHUNKS_FILE} has "
                f"{len(chunks)} chunks",
                hint="rebuild the index",
            )
        return cls(chunks, bm25)

    # ----------------------------------------------------------------------------------------------------- search

    def search(self, query: str, k: int) -> list[Chunk]:
        """The `k` best chunks for `query`, best first; fewer when fewer chunks share a token with it.

        One query is scored with bm25s' `get_scores` and a partial sort: about ten times faster than its batched
        `retrieve` for a batch of one. Ties are broken by chunk position, so results never depend on the platform.
        """
        if self._bm25 is None or k < 1:
            return []
        k = min(k, len(self._chunks))
        known = tuple(t for t in query_tokens(query) if t in self._vocab)
        if not known:
            return []
        found = self._found.get((known, k))  # the index never changes, and searches repeat (a question's terms)
        if found is None:
            found = self._search(known, k)
            if len(self._found) >= _FOUND:
                self._found.clear()
            self._found[(known, k)] = found
        return list(found)

    def _search(self, known: tuple[str, ...], k: int) -> tuple[Chunk, ...]:
        assert self._bm25 is not None
        scores = self._bm25.get_scores(list(known))
        if k < len(scores):
            # every chunk scoring at least the k-th best, so ties at the cut are broken by position in _ranked
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            top = np.flatnonzero(scores >= kth)
        else:
            top = np.arange(len(scores))
        return tuple(self._ranked(top, scores[top])[:k])

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Chunk]]:
        """`search` for each query (single-query scoring beats bm25s' batched `retrieve` here)."""
        return [self.search(q, k) for q in queries]

    def _ranked(self, docs: np.ndarray[Any, Any], scores: np.ndarray[Any, Any]) -> list[Chunk]:
        # bm25s fills k with zero-score (non-matching) chunks and orders ties arbitrarily: drop the former,
        # order the latter by chunk position so results never depend on the batch or the platform.
        hits = sorted(
            (-float(s), int(d)) for d, s in zip(docs.tolist(), scores.tolist(), strict=True) if s > 0.0
        )
        return [self._chunks[d] for _, d in hits]


def _read_chunks(path: Path) -> list[Chunk]:
    chunks: list[Chunk] = []
    number = 0
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                chunks.append(Chunk(id=row["id"], doc_id=row["doc_id"], text=row["text"], n=int(row["n"])))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        where = f" line {number}" if number else ""
        raise RunFolderError(
            f"{path}{where}: cannot be read ({type(exc).__name__}: {exc})", hint="rebuild the index"
        ) from None
    return chunks
