"""One line of a fine-tuning file decoded as `json.loads` decodes it, with the JSON text of a repeated tools list kept.

`decode_line(text)` returns what `loads(text)` returns (`json.loads` that refuses NaN and Infinity, and a leading
byte-order mark, as the validator always has), and for a line that is a JSON object with a "tools" list, that list's
JSON text as `json.dumps(tools, ensure_ascii=False)` writes it (the token-count text and the cache key of the tool
list's verdict, `distill.formats.openai_tools`).

The line's object is walked here, key by key, each value decoded by json's own scanner (`JSONDecoder.scan_once`,
the C function `json.loads` runs for every value), so the raw JSON text of the tools list is known: a list that
repeats byte for byte on other lines (every line of an openai-tools file carries the same one) is decoded and
serialized once. Whatever the walk does not expect (whitespace of any kind is fine; any other deviation from the
grammar, a BOM, a refused constant, an error anywhere) sends the whole line to `loads`, which decodes it or raises the
error `json.loads` raises, with its own wording and position. An object that repeats a key keeps the last value at the
first key's place, as json's decoder does; the tools text kept is that of the value kept.

Measured and left out: keeping each message's facts by its raw text (about half the messages of the benchmark files
repeat byte for byte) cost more than it saved -- the walk over messages, the cache and the cyclic garbage collector
traversing the kept objects (docs/performance.md, Validation).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any, cast

__all__ = ["decode_line", "loads"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # one decoder for every line (json.loads builds one a call)
_scan = _DECODER.scan_once  # type: ignore[attr-defined]
# json's own whitespace; the pattern matches everywhere (an empty match at worst)
_ws = cast(Callable[[str, int], re.Match[str]], re.compile(r"[ \t\n\r]*").match)


def loads(text: str) -> Any:
    """`json.loads(text, parse_constant=_reject_constant)`, with its refusal of a leading BOM."""
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


class _Kept(dict[str, Any]):
    """A cache by raw JSON text in two generations of about `limit` characters: what repeats moves to the new one
    and stays, what was seen once goes with its generation (memory bounded however long the file)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.chars = 0
        self.old: dict[str, Any] = {}

    def find(self, raw: str) -> Any:
        found = self.get(raw)
        if found is None:
            found = self.old.get(raw)
            if found is not None:
                self.keep(raw, found)
        return found

    def keep(self, raw: str, value: Any) -> None:
        self.chars += len(raw)
        if self.chars > self.limit:
            self.old = dict(self)
            self.clear()
            self.chars = len(raw)
        self[raw] = value


_TOOLS = _Kept(200_000)  # raw JSON text of a tools list -> (the list, its json.dumps text)


class _Unexpected(Exception):
    """The walk met something it leaves to `loads`."""


def _tools(s: str, i: int) -> tuple[Any, str | None, int]:
    value, end = _scan(s, i)
    raw = s[i:end]
    found = _TOOLS.find(raw)
    if found is None:
        found = (value, json.dumps(value, ensure_ascii=False) if value else None)
        _TOOLS.keep(raw, found)
    return found[0], found[1], end


def _walk(s: str) -> tuple[Any, str | None]:
    i = _ws(s, 0).end()
    if s[i] != "{":
        raise _Unexpected
    i = _ws(s, i + 1).end()
    example: dict[str, Any] = {}
    tools_text: str | None = None
    if s[i] == "}":
        i += 1
    else:
        while True:
            if s[i] != '"':
                raise _Unexpected
            key, i = scanstring(s, i + 1)
            i = _ws(s, i).end()
            if s[i] != ":":
                raise _Unexpected
            i = _ws(s, i + 1).end()
            if key == "tools" and s[i] == "[":
                example[key], tools_text, i = _tools(s, i)
            else:
                example[key], i = _scan(s, i)
                if key == "tools":
                    tools_text = None
            i = _ws(s, i).end()
            if s[i] == ",":
                i = _ws(s, i + 1).end()
            elif s[i] == "}":
                i += 1
                break
            else:
                raise _Unexpected
    if _ws(s, i).end() != len(s):
        raise _Unexpected
    return example, tools_text


def decode_line(text: str) -> tuple[Any, str | None]:
    """(the value `loads(text)` returns, the JSON text of its "tools" list where it was kept, else None: the caller
    serializes what it needs); raises what `loads` raises."""
    if '"tools"' not in text:  # nothing to keep: json decodes the line in one call
        return loads(text), None
    try:
        return _walk(text)
    except Exception:  # noqa: BLE001  anything unexpected, an invalid line among them: json decodes it or says why
        return loads(text), None
