"""Deduplication before export: repeated user questions, near-repeats and identical tool trajectories.

Three checks run over the conversations export would accept, in conversation order (so the earliest copy is kept
and a later run that adds conversations never changes an earlier verdict):

1. `duplicate_question`: the conversation's user messages, normalized (Unicode NFKC, case-folded, punctuation
   dropped, whitespace collapsed), equal those of a kept conversation.
2. `duplicate_near_question`: the character-shingle Jaccard similarity of the normalized questions reaches
   `export.dedup.near_threshold`. Candidates come from MinHash LSH (`datasketch`'s MinHash and banding, in the
   smaller table of distill/generation/bands.py); each candidate is then verified
   by the exact Jaccard similarity of the two shingle sets, so no pair below the threshold is ever dropped.
3. `duplicate_trajectory`: the same tool calls with the same inputs (case and whitespace ignored), turn by turn, as a
   kept conversation. Conversations that call no tool are left to the question checks.

A dropped conversation becomes a *rejected* conversation (stage `export`, its reason above, `detail` naming the
conversation it duplicated), so the manifest's accounting still closes: requested = accepted + rejected + failed.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from distill.trajectory import Trajectory

__all__ = [
    "REASONS",
    "DedupIndex",
    "Duplicate",
    "drop_duplicates",
    "find_duplicates",
    "line_key",
    "normalize",
    "question_key",
    "shingles",
    "summarize_duplicates",
    "trajectory_key",
]

REASONS = ("duplicate_question", "duplicate_near_question", "duplicate_trajectory")
_PUNCT = re.compile(r"[^\w\s]+")
_MINHASH_SEED = 1  # fixed: the same questions always hash the same


@dataclass(frozen=True)
class Duplicate:
    """A conversation dropped as a copy of an earlier one."""

    id: str
    reason: str
    duplicate_of: str
    similarity: float

    def detail(self) -> str:
        """The human-readable detail written to rejected.jsonl."""
        if self.reason == "duplicate_near_question":
            return f"near-duplicate of {self.duplicate_of} (Jaccard similarity {self.similarity:.2f})"
        what = "question" if self.reason == "duplicate_question" else "tool calls and inputs"
        return f"same {what} as {self.duplicate_of}"


def normalize(text: str) -> str:
    """Text for comparison: NFKC, case-folded, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCT.sub(" ", text).split())


def question_key(trajectory: Trajectory) -> str:
    """A conversation's user messages, normalized and joined (one line per turn)."""
    return "\n".join(normalize(turn.question) for turn in trajectory.turns)


def trajectory_key(trajectory: Trajectory) -> tuple[tuple[tuple[str, str], ...], ...] | None:
    """The tool calls of each turn as (tool, input); None when the conversation calls no tool."""
    key = tuple(
        tuple((s.action, " ".join(s.action_input.casefold().split())) for s in turn.steps if not s.is_final)
        for turn in trajectory.turns
    )
    return key if any(key) else None


def shingles(text: str, size: int) -> set[str]:
    """Character n-grams of `text` (the whole text when it is shorter than `size`)."""
    if len(text) <= size:
        return {text}
    return {text[i : i + size] for i in range(len(text) - size + 1)}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class DedupIndex:
    """The dedup checks, one conversation at a time in conversation order (`check`). It keeps only what its index
    needs: the normalized question of each kept conversation (for exact matches, and the exact Jaccard check of an
    LSH candidate), the kept tool-call keys and the MinHash LSH bands; never the conversations or shingle sets."""

    def __init__(self, settings: Any, keep_found: bool = True) -> None:
        self.settings = settings
        self.keep_found = keep_found  # False: only verdicts (the mix count), no list of what was found
        self.enabled = bool(settings.enabled)
        self.near = settings.near_threshold
        self.lsh: Any = None
        self.signatures: _Signatures | None = None
        if self.enabled and self.near is not None:
            from distill.generation.bands import Bands

            self.lsh = Bands(self.near, settings.num_perm)  # datasketch's banding, a smaller table
            self.signatures = _Signatures(settings.num_perm)
        self.by_question: dict[str, int] = {}  # normalized question -> kept number
        self.kept: list[str] = []  # kept number -> conversation id
        self.questions: list[str] = []  # kept number -> normalized question
        self.by_calls: dict[tuple[Any, ...], int] = {}  # tool-call key -> kept number
        self.found: list[Duplicate] = []

    def check(self, t: Trajectory) -> Duplicate | None:
        """The duplicate verdict of `t` against the conversations kept so far; `t` is kept when it is none."""
        if not self.enabled:
            return None
        dup = self._find(t)
        if dup is not None and self.keep_found:
            self.found.append(dup)
        return dup

    def _find(self, t: Trajectory) -> Duplicate | None:
        key = question_key(t)
        if key in self.by_question:
            return Duplicate(t.id, "duplicate_question", self.kept[self.by_question[key]], 1.0)
        signature = None
        if self.lsh is not None and self.signatures is not None:
            size = self.settings.shingle_chars
            grams = shingles(key, size)
            signature = self.signatures.of(grams)
            best_id, best = None, 0.0
            for other in sorted(self.lsh.query(signature.hashvalues)):  # kept numbers, in order: ties, the earliest wins
                similarity = _jaccard(grams, shingles(self.questions[other], size))
                if similarity >= self.near and similarity > best:
                    best_id, best = other, similarity
            if best_id is not None:
                return Duplicate(t.id, "duplicate_near_question", self.kept[best_id], round(best, 4))
        calls = trajectory_key(t) if self.settings.trajectories else None
        if calls is not None and calls in self.by_calls:
            return Duplicate(t.id, "duplicate_trajectory", self.kept[self.by_calls[calls]], 1.0)
        number = len(self.kept)
        self.kept.append(t.id)
        self.questions.append(key)
        self.by_question[key] = number
        if calls is not None:
            self.by_calls[calls] = number
        if signature is not None:
            self.lsh.insert(number, signature.hashvalues)
        return None


def find_duplicates(trajectories: Iterable[Trajectory], settings: Any) -> list[Duplicate]:
    """The duplicates among `trajectories` (in the given order; the first copy is kept). Nothing is modified.

    `settings` is the config's `export.dedup` section (enabled, near_threshold, shingle_chars, num_perm,
    trajectories).
    """
    index = DedupIndex(settings)
    for t in trajectories:
        index.check(t)
    return index.found


_SHINGLE_HASHES = 1 << 16  # shingles whose hash is kept (a question's shingles are mostly ones seen before)


class _Signatures:
    """MinHash signatures of shingle sets, equal to datasketch's own (`MinHash(num_perm, seed=1)` updated with the
    UTF-8 shingles): each shingle's sha1_hash32, datasketch's default hash, is computed once and kept (they repeat
    across conversations; at most _SHINGLE_HASHES at a time), and one MinHash is reset and reused, since the LSH
    index keeps only the bytes of a signature's bands (`of` returns it: use it before the next call)."""

    def __init__(self, num_perm: int) -> None:
        from datasketch import MinHash

        self.minhash = MinHash(num_perm=num_perm, seed=_MINHASH_SEED, hashfunc=int)  # fed hash values already
        self.initial = self.minhash.hashvalues
        self.initial.flags.writeable = False  # update_batch assigns a new array; this one is never written
        self.hashes: dict[str, int] = {}

    def of(self, grams: set[str]) -> Any:
        """The MinHash of the shingles (the shared one, reset)."""
        values = list(map(self.hashes.get, grams))
        if None in values:
            values = [self._hash(g) for g in grams]
        self.minhash.hashvalues = self.initial
        self.minhash.update_batch(values)
        return self.minhash

    def _hash(self, gram: str) -> int:
        value = self.hashes.get(gram)
        if value is None:
            from datasketch.hashfunc import sha1_hash32

            if len(self.hashes) >= _SHINGLE_HASHES:
                self.hashes.clear()
            value = self.hashes[gram] = sha1_hash32(gram.encode("utf-8"))
        return value


def drop_duplicates(trajectories: Sequence[Trajectory], settings: Any) -> list[Duplicate]:
    """Find the duplicates among the accepted conversations and mark each rejected (stage `export`)."""
    accepted = [t for t in trajectories if t.outcome == "accepted"]
    found = find_duplicates(accepted, settings)
    by_id = {t.id: t for t in accepted}
    for dup in found:
        by_id[dup.id].reject("export", dup.reason, dup.detail(), None)
    return found


def line_key(example: dict[str, Any]) -> str:
    """What makes two fine-tuning lines the same line: their JSON with sorted keys."""
    return json.dumps(example, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def summarize_duplicates(found: Sequence[Duplicate], settings: Any) -> dict[str, Any]:
    """The manifest's `duplicates` section: settings, counts by reason, and every dropped conversation."""
    return {
        "enabled": settings.enabled,
        "near_threshold": settings.near_threshold,
        "shingle_chars": settings.shingle_chars,
        "trajectories": settings.trajectories,
        "dropped": len(found),
        "by_reason": {r: n for r, n in Counter(d.reason for d in found).most_common()},
        "items": [asdict(d) for d in found],
    }
