"""The strict validator of the LangChain conversational-chat action format.

LangChain's runtime parser (`ConvoOutputParser`) repairs truncated JSON, accepts prose around the fence, takes the
first of two blobs and lets unknown tool names through. Training on such text teaches the student to produce it, so
this module accepts exactly one shape: a single fenced ```json block holding an object with exactly the keys
`action` and `action_input`, where `action` is a configured tool or exactly "Final Answer" and `action_input` is a
string that satisfies the tool's `input_schema` (for a tool whose input_schema is an object: the JSON text of an
object that satisfies it). Every reject carries a machine-readable `Reason`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distill.config import is_object_schema
from distill.schema import DuplicateKeyError, loads_unique, schema_problem
from distill.trajectory import FINAL_ANSWER, Reason

__all__ = [
    "Action",
    "ToolSpec",
    "Verdict",
    "check_action",
    "check_action_cached",
    "render_action",
]

_FENCE = "```"
_encode = json.encoder.encode_basestring
_BLOCK = re.compile(r"```([^\n`]*)\n(.*?)```", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Action:
    """A parsed agent action: a tool call or the final answer."""

    action: str
    action_input: str

    @property
    def is_final(self) -> bool:
        """True for the "Final Answer" action."""
        return self.action == FINAL_ANSWER


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking one assistant message."""

    ok: bool
    action: Action | None = None
    reason: Reason | None = None
    detail: str = ""

    @classmethod
    def reject(cls, reason: Reason, detail: str) -> Verdict:
        """A failed check with its reason and a human-readable detail."""
        return cls(ok=False, reason=reason, detail=detail)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What the validator needs to know of a tool: its name and optional JSON Schema for action_input."""

    name: str
    input_schema: Mapping[str, Any] | None = None


def render_action(action: str, action_input: str) -> str:
    """The canonical blob: the layout LangChain's format instructions show and GPT-4 writes.

    Byte-identical to `json.dumps({"action": ..., "action_input": ...}, indent=4, ensure_ascii=False)` in a fence,
    written out because `indent` forces json's pure-Python encoder (tests check the equality).
    """
    # json.dumps(s, ensure_ascii=False) of a str is encode_basestring(s), without building an encoder per call
    a = _encode(action) if isinstance(action, str) else json.dumps(action, ensure_ascii=False)
    i = _encode(action_input) if isinstance(action_input, str) else json.dumps(action_input, ensure_ascii=False)
    return f'{_FENCE}json\n{{\n    "action": {a},\n    "action_input": {i}\n}}\n{_FENCE}'


def _whole_block(text: str) -> str | None:
    """The body when the whole message is one ```json fence (answers may themselves contain ``` fences)."""
    stripped = text.strip()
    if stripped.startswith(f"{_FENCE}json\n") and stripped.endswith(_FENCE) and len(stripped) > 11:
        return stripped[len(_FENCE) + 5 : -len(_FENCE)]
    return None


def check_action(
    text: str | None,
    tools: Mapping[str, ToolSpec] | None,
    *,
    finish_reason: str | None = None,
) -> Verdict:
    """Check one assistant message strictly. `tools=None` accepts any tool name (when the tools are unknown)."""
    if finish_reason == "length":
        return Verdict.reject(Reason.TRUNCATED, "the teacher hit its max_tokens (finish_reason=length)")
    if finish_reason == "content_filter":
        return Verdict.reject(Reason.CONTENT_FILTER, "the teacher's output was filtered (finish_reason=content_filter)")
    if not text or not text.strip():
        return Verdict.reject(Reason.NO_JSON_BLOCK, "empty message")
    body = _whole_block(text)
    if body is not None:
        try:
            return _check_object(loads_unique(body), tools)
        except DuplicateKeyError as exc:
            return Verdict.reject(Reason.BAD_KEYS, str(exc))
        except ValueError:
            pass  # not one valid block after all: classify below
    blocks = list(_BLOCK.finditer(text))
    if not blocks:
        if _FENCE in text:
            return Verdict.reject(Reason.UNCLOSED_BLOCK, "a ``` fence is opened but never closed (truncated?)")
        return Verdict.reject(Reason.NO_JSON_BLOCK, "no fenced ```json block")
    if len(blocks) > 1:
        return Verdict.reject(Reason.MULTIPLE_BLOCKS, f"{len(blocks)} fenced blocks; exactly one is allowed")
    block = blocks[0]
    outside = (text[: block.start()] + text[block.end() :]).strip()
    if _FENCE in outside:
        return Verdict.reject(Reason.UNCLOSED_BLOCK, "a stray ``` fence outside the block")
    if block.group(1).strip() != "json":
        lang = block.group(1).strip() or "(none)"
        return Verdict.reject(Reason.FENCE_NOT_JSON, f"the fence's language is {lang}, not json")
    if outside:
        snippet = outside[:60].replace("\n", " ")
        return Verdict.reject(Reason.TEXT_OUTSIDE_BLOCK, f"text outside the json block: {snippet!r}")
    try:
        data = loads_unique(block.group(2))
    except DuplicateKeyError as exc:
        return Verdict.reject(Reason.BAD_KEYS, str(exc))
    except ValueError as exc:
        return Verdict.reject(Reason.INVALID_JSON, f"not valid JSON: {exc}")
    return _check_object(data, tools)


_VERDICTS: dict[tuple[str, int], tuple[Mapping[str, ToolSpec] | None, Verdict]] = {}
_VERDICTS_MAX = 65_536  # entries; the cache is emptied when full
_CACHED_CHARS = 20_000  # longer texts are checked every time


def check_action_cached(text: str, tools: Mapping[str, ToolSpec] | None) -> Verdict:
    """`check_action(text, tools)`, remembered for texts that repeat across the lines of a file (same `tools` object).

    The cache holds the `tools` object it was given, so an id is never taken for another mapping's.
    """
    if len(text) > _CACHED_CHARS:
        return check_action(text, tools)
    key = (text, id(tools))
    hit = _VERDICTS.get(key)
    if hit is not None and hit[0] is tools:
        return hit[1]
    verdict = check_action(text, tools)
    if len(_VERDICTS) >= _VERDICTS_MAX:
        _VERDICTS.clear()
    _VERDICTS[key] = (tools, verdict)
    return verdict


def _check_object(data: Any, tools: Mapping[str, ToolSpec] | None) -> Verdict:
    if not isinstance(data, dict):
        return Verdict.reject(Reason.BAD_KEYS, f"the JSON is a {type(data).__name__}, not an object")
    if set(data) != {"action", "action_input"}:
        return Verdict.reject(
            Reason.BAD_KEYS, f"keys must be exactly action and action_input, got {sorted(data)}"
        )
    action, action_input = data["action"], data["action_input"]
    if not isinstance(action, str):
        return Verdict.reject(Reason.UNKNOWN_ACTION, f"action is a {type(action).__name__}, not a string")
    if not isinstance(action_input, str):
        return Verdict.reject(
            Reason.ACTION_INPUT_NOT_STRING, f"action_input is a {type(action_input).__name__}, not a string"
        )
    if action == FINAL_ANSWER:
        if not action_input.strip():
            return Verdict.reject(Reason.EMPTY_ANSWER, "the Final Answer is empty")
        return Verdict(ok=True, action=Action(action, action_input))
    if tools is not None:
        spec = tools.get(action)
        if spec is None:
            hint = " (the final action is spelled exactly 'Final Answer')" if action.lower() == "final answer" else ""
            known = ", ".join(sorted(tools)) or "none"
            return Verdict.reject(Reason.UNKNOWN_ACTION, f"unknown action {action!r}{hint}; tools: {known}")
        if spec.input_schema is not None:
            value: Any = action_input
            if is_object_schema(spec.input_schema):  # structured arguments travel as the JSON text of an object
                try:
                    value = loads_unique(action_input)
                except ValueError as exc:
                    detail = f"action_input of {action} must be the JSON text of its arguments: {exc}"
                    return Verdict.reject(Reason.INVALID_ARGUMENTS, detail)
            problem = schema_problem(dict(spec.input_schema), value)
            if problem:
                return Verdict.reject(Reason.ACTION_INPUT_SCHEMA, f"action_input fails the {action} schema: {problem}")
    return Verdict(ok=True, action=Action(action, action_input))
