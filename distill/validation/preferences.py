"""Lint one line of a preference fine-tuning file (OpenAI `method: dpo`), selected by its shape (`input`, no `messages`).

A line is `{"input": {"messages": [...], "tools"?: [...], "parallel_tool_calls"?: bool}, "preferred_output": [one
assistant message], "non_preferred_output": [one assistant message]}`. The prompt followed by the preferred answer is
linted as a chat fine-tuning line with every rule of `distill.validation.lint` (the LangChain action format, tool
calls against their schemas, token limits), the prompt's assistant messages as history (weight 0), except that the
preferred answer may be a tool call that the prompt does not go on to answer (a step, not a whole turn). The non-preferred answer is meant to be wrong: only its shape is
checked (one assistant message with text or tool calls). Both answers must differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distill.trajectory import Reason
from distill.validation.report import Problem

__all__ = ["is_preference_line", "lint_preference"]

_TOP = frozenset({"input", "preferred_output", "non_preferred_output"})
_INPUT = frozenset({"messages", "tools", "parallel_tool_calls"})
_OUTPUT_KEYS = frozenset({"role", "content", "tool_calls", "name", "refusal"})
_STEP_ENDS = frozenset({Reason.NO_FINAL_ANSWER.value, "tool_call_id_unanswered"})  # a tool-call step is no turn end

ChatLint = Callable[[dict[str, Any]], tuple[list[Problem], int | None]]


def is_preference_line(example: Any) -> bool:
    """True for a line shaped like a preference example (it has `input` and no `messages`)."""
    return isinstance(example, dict) and "input" in example and "messages" not in example


def _output(example: dict[str, Any], key: str, out: list[Problem]) -> dict[str, Any] | None:
    value = example.get(key)
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        what = "missing" if value is None else f"a list of {len(value)}" if isinstance(value, list) else "not a list"
        out.append(Problem(0, "bad_preference_output", f"{key} must be a list of exactly one message ({what})"))
        return None
    message = value[0]
    if message.get("role") != "assistant":
        out.append(Problem(0, "bad_preference_output", f"{key}[0] has role {message.get('role')!r}, not assistant"))
    extra = sorted(set(message) - _OUTPUT_KEYS, key=str)
    if extra:
        out.append(Problem(0, "bad_preference_output", f"{key}[0] has unknown keys {extra}"))
    content, calls = message.get("content"), message.get("tool_calls")
    if calls is not None and (not isinstance(calls, list) or not calls):
        out.append(Problem(0, "bad_preference_output", f"{key}[0].tool_calls must be a non-empty list"))
    elif calls is None and not (isinstance(content, str) and content.strip()):
        out.append(Problem(0, "bad_preference_output", f"{key}[0] has neither text content nor tool_calls"))
    elif content is not None and not isinstance(content, str):
        out.append(Problem(0, "bad_preference_output", f"{key}[0].content is not a string"))
    return message


def lint_preference(example: dict[str, Any], lint_chat: ChatLint) -> tuple[list[Problem], int | None]:
    """Every problem of one preference line, and its token count (the prompt and the preferred answer)."""
    out: list[Problem] = []
    for key in sorted(set(example) - _TOP, key=str):
        out.append(Problem(0, "unrecognized_top_level_key", f"unknown top-level key {key!r} in a preference line"))
    source = example.get("input")
    if not isinstance(source, dict):
        return [*out, Problem(0, "bad_preference_input", "input must be an object holding messages")], None
    for key in sorted(set(source) - _INPUT, key=str):
        out.append(Problem(0, "bad_preference_input", f"unknown key input.{key}"))
    messages = source.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*out, Problem(0, "missing_messages_list", "input.messages must be a non-empty list")], None
    preferred = _output(example, "preferred_output", out)
    rejected = _output(example, "non_preferred_output", out)
    if preferred is None or rejected is None:
        return out, None
    if preferred == rejected:
        out.append(Problem(0, "identical_outputs", "preferred_output and non_preferred_output are the same"))
    last = len(messages)
    context = [{**m, "weight": 0} if isinstance(m, dict) and m.get("role") == "assistant" and "weight" not in m else m
               for m in messages]  # the prompt is never trained on: earlier answers are history
    chat = {**{k: v for k, v in source.items() if k != "messages"}, "messages": [*context, preferred]}
    found, tokens = lint_chat(chat)
    for p in found:
        if p.reason in _STEP_ENDS and p.message == last:
            continue
        if p.reason == "example_missing_assistant_message":
            continue  # the preferred output is the trained message
        out.append(p)
    return out, tokens
