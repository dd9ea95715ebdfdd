"""Lint any OpenAI chat fine-tuning JSONL file: line numbers, named reasons, token statistics.

This is the engine behind `distill validate FILE [--config C]`. Every non-blank line is checked for the format the
fine-tuning service accepts (the OpenAI cookbook's checks, updated for `tool` messages, `tool_calls` and `weight`,
plus the tool-call structure the service rejects with an opaque "invalid schema"), and counted against the target
model's per-example token limit. Lines in LangChain's conversational-chat format (a user message that contains
the SUFFIX header "TOOLS\\n------") are also checked step by step with the strict `distill.formats.langchain_actions.check_action`:
every trained assistant message must be exactly one canonical action, and every turn must end in a Final Answer
within the configured step budget. Lines with `tools` or `tool_calls` (native tool calling, `agent.format:
openai-tools`) are checked by `distill.formats.openai_tools.check_line`: valid function definitions, known
functions, arguments that parse as JSON and satisfy the schema (the config's, when given), parallel calls only where
allowed, the step budget, and a final assistant text answer. Preference (DPO) lines are checked by
`distill.validation.preferences`. A problem is data (`Problem`), never an exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.errors import DistillError
from distill.formats.langchain_actions import ToolSpec, check_action_cached
from distill.tokens import count_example, example_limit
from distill.trajectory import Reason
from distill.validation.chunks import auto_workers, map_ranges
from distill.validation.decode import decode_line
from distill.validation.preferences import is_preference_line, lint_preference
from distill.validation.report import LintReport, Problem, format_report

__all__ = ["DEFAULT_MODEL", "LintReport", "Problem", "format_report", "lint_example", "lint_file"]


DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"
_ROLES = frozenset({"system", "user", "assistant", "tool"})
_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal"}
)
_TOP_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})


# -- LangChain conversational-chat markers, taken from langchain-classic's own templates ----------------------------


@lru_cache(maxsize=1)
def _markers() -> tuple[str, str, re.Pattern[str]]:
    from langchain_classic.agents.conversational_chat.prompt import (
        FORMAT_INSTRUCTIONS,
        SUFFIX,
        TEMPLATE_TOOL_RESPONSE,
    )

    suffix_head = "\n".join(SUFFIX.split("\n")[:2])  # "TOOLS\n------"
    tool_response_head = TEMPLATE_TOOL_RESPONSE.split("\n")[0].rstrip()  # "TOOL RESPONSE:"
    names_line = next(line for line in FORMAT_INSTRUCTIONS.split("\n") if "{tool_names}" in line)
    lead = names_line.split("{tool_names}")[0].rsplit("\\", 1)[-1].strip()  # "The action to take. Must be one of"
    return suffix_head, tool_response_head, re.compile(re.escape(lead) + r"[ \t]*([^\n]*)")


@lru_cache(maxsize=256)
def _inferred_tools(names: str) -> dict[str, ToolSpec]:
    return {n: ToolSpec(n) for n in (s.strip() for s in names.split(",")) if n}


def _text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


# -- format checks ---------------------------------------------------------------------------------------------------


def _check_tools(example: dict[str, Any], out: list[Problem]) -> None:
    tools = example.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            out.append(Problem(0, "bad_tools", f"tools is a {type(tools).__name__}, not a list"))
        else:
            for i, tool in enumerate(tools):
                fn = tool.get("function") if isinstance(tool, dict) else None
                if not isinstance(fn, dict) or tool.get("type") != "function" or set(tool) - {"type", "function"}:
                    out.append(Problem(0, "bad_tools", f'tools[{i}] is not {{"type": "function", "function": {{...}}}}'))
                elif not isinstance(fn.get("name"), str) or not fn["name"]:
                    out.append(Problem(0, "bad_tools", f"tools[{i}].function has no name"))
                elif set(fn) - {"name", "description", "parameters", "strict"}:
                    extra = sorted(set(fn) - {"name", "description", "parameters", "strict"})
                    out.append(Problem(0, "bad_tools", f"tools[{i}].function has unknown keys {extra}"))
                elif "parameters" in fn and not isinstance(fn["parameters"], dict):
                    out.append(Problem(0, "bad_tools", f"tools[{i}].function.parameters is not an object"))
    if "functions" in example and not isinstance(example["functions"], list):
        out.append(Problem(0, "bad_tools", "functions (deprecated) is not a list"))
    if "parallel_tool_calls" in example and not isinstance(example["parallel_tool_calls"], bool):
        out.append(Problem(0, "bad_parallel_tool_calls", "parallel_tool_calls must be true or false"))


def _check_content(i: int, message: dict[str, Any], out: list[Problem]) -> None:
    role, content = message.get("role"), message.get("content")
    calls = message.get("tool_calls") or message.get("function_call") or message.get("refusal")
    if role == "assistant" and calls and content is None:
        return
    if role in ("system", "user") and isinstance(content, list):
        if not all(isinstance(p, dict) and p.get("type") in ("text", "image_url") for p in content):
            out.append(Problem(0, "missing_content", "content parts must be text or image_url objects", i))
        return
    if "content" not in message:
        out.append(Problem(0, "missing_content", f"{role} message has no content", i))
    elif not isinstance(content, str):
        what = "null" if content is None else f"a {type(content).__name__}"
        out.append(Problem(0, "missing_content", f"{role} content is {what}, not a string", i))
    elif role != "tool" and (not content or content.isspace()):  # `not content.strip()`, without copying the text
        out.append(Problem(0, "missing_content", f"{role} content is empty", i))


def _check_tool_calls(i: int, message: dict[str, Any], out: list[Problem]) -> list[str]:
    calls = message["tool_calls"]
    if message.get("role") != "assistant":
        out.append(Problem(0, "bad_tool_calls", "tool_calls are only allowed on assistant messages", i))
        return []
    if not isinstance(calls, list) or not calls:
        out.append(Problem(0, "bad_tool_calls", "tool_calls must be a non-empty list", i))
        return []
    ids: list[str] = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or not isinstance(call.get("id"), str)
            or call.get("type") != "function"
            or not isinstance(fn, dict)
            or not isinstance(fn.get("name"), str)
            or not isinstance(fn.get("arguments"), str)
        ):
            out.append(Problem(0, "bad_tool_calls", f'tool_calls[{j}] needs id, type "function", name, arguments', i))
        elif call["id"] in ids:
            out.append(Problem(0, "bad_tool_calls", f"tool_calls[{j}] repeats id {call['id']!r}", i))
        else:
            ids.append(call["id"])
    return ids


def _check_format(example: dict[str, Any], messages: list[Any], out: list[Problem]) -> None:
    if not _TOP_KEYS.issuperset(example):
        for key in sorted(set(example) - _TOP_KEYS, key=str):
            out.append(Problem(0, "unrecognized_top_level_key", f"unknown top-level key {key!r}"))
    _check_tools(example, out)
    trained = False
    pending: dict[str, int] = {}  # tool_call id -> index of the assistant message that made it
    previous_role: Any = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            out.append(Problem(0, "data_type", f"message is a {type(message).__name__}, not an object", i))
            previous_role = None
            continue
        role = message.get("role")
        if "role" not in message:
            out.append(Problem(0, "message_missing_key", "message has no role", i))
        elif role not in _ROLES:
            out.append(Problem(0, "unrecognized_role", f"role {role!r} is not system, user, assistant or tool", i))
        if not _MESSAGE_KEYS.issuperset(message):
            for key in sorted(set(message) - _MESSAGE_KEYS, key=str):
                out.append(Problem(0, "message_unrecognized_key", f"unknown message key {key!r}", i))
        _check_content(i, message, out)
        if "weight" in message:
            weight = message["weight"]
            if role != "assistant":
                out.append(Problem(0, "bad_weight", "weight is only allowed on assistant messages", i))
            elif isinstance(weight, bool) or weight not in (0, 1):
                out.append(Problem(0, "bad_weight", f"weight must be 0 or 1, got {weight!r}", i))
        if role == "assistant" and message.get("weight", 1) != 0:
            trained = True
        if role == "assistant" and previous_role == "assistant":
            detail = "two assistant messages in a row (the service rejects this as an invalid schema)"
            out.append(Problem(0, "consecutive_assistant_messages", detail, i))
        if role != "tool":
            for call_id, at in pending.items():
                detail = f"tool call {call_id!r} is not answered by a tool message before message {i}"
                out.append(Problem(0, "tool_call_id_unanswered", detail, at))
            pending = {}
        if "tool_calls" in message:
            pending = dict.fromkeys(_check_tool_calls(i, message, out), i)
        if role == "tool":
            answered = message.get("tool_call_id")
            if "tool_call_id" not in message:
                out.append(Problem(0, "message_missing_key", "tool message has no tool_call_id", i))
            elif not isinstance(answered, str) or pending.pop(answered, None) is None:
                detail = f"tool_call_id {answered!r} answers no pending tool call of the previous assistant message"
                out.append(Problem(0, "tool_call_id_unknown", detail, i))
        elif "tool_call_id" in message:
            out.append(Problem(0, "message_unrecognized_key", "tool_call_id is only allowed on tool messages", i))
        previous_role = role
    for call_id, at in pending.items():
        out.append(Problem(0, "tool_call_id_unanswered", f"tool call {call_id!r} is never answered", at))
    if not trained:
        out.append(Problem(0, "example_missing_assistant_message", "no assistant message with weight != 0"))


# -- LangChain conversational-chat checks ----------------------------------------------------------------------------


def _check_langchain(
    messages: list[Any], texts: list[str], tools: Mapping[str, ToolSpec] | None, max_steps: int | None, out: list[Problem]
) -> None:
    suffix_head, tool_response_head, names_re = _markers()
    if tools is None:
        suffix = next((t for t in texts if t.startswith(suffix_head)), "")
        found = names_re.search(suffix)
        tools = _inferred_tools(found.group(1)) if found else None

    turn: list[tuple[int, bool, bool]] | None = None  # (index, trained, is_final) of the current turn's steps
    awaiting = False  # the last step of the turn was a tool call that still needs its TOOL RESPONSE

    def end_turn(where: str) -> None:
        if not turn or not any(trained for _, trained, _ in turn):
            return
        if max_steps is not None and len(turn) > max_steps:
            detail = f"the turn has {len(turn)} assistant steps, more than agent.max_steps={max_steps}"
            out.append(Problem(0, Reason.TOO_MANY_STEPS.value, detail, turn[max_steps][0]))
        if not turn[-1][2]:
            detail = f"the turn ends {where} without a Final Answer"
            out.append(Problem(0, Reason.NO_FINAL_ANSWER.value, detail, turn[-1][0]))

    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        role, text = message.get("role"), texts[i]
        if role == "user":
            if text.startswith(suffix_head):
                end_turn(f"at message {i} (a new question)")
                turn, awaiting = [], False
            elif text.startswith(tool_response_head):
                if turn is None or not awaiting:
                    detail = "a TOOL RESPONSE that answers no tool call of the current turn"
                    out.append(Problem(0, "unexpected_tool_response", detail, i))
                awaiting = False
            elif turn is not None and awaiting:
                detail = (
                    "after a tool call the runtime sends the observation in LangChain's TOOL RESPONSE template; "
                    "this user message is not in it, so the example differs from what the agent sees at run time"
                )
                out.append(Problem(0, "observation_not_tool_response", detail, i))
                turn, awaiting = None, False
            elif turn is not None:
                end_turn(f"at message {i} (a user message that is not a TOOL RESPONSE)")
                turn, awaiting = None, False
        elif role == "assistant":
            trained = message.get("weight", 1) != 0
            if trained:
                verdict = check_action_cached(text, tools)  # a non-string content (already missing_content) has no action
                if not verdict.ok:
                    out.append(Problem(0, str(verdict.reason), verdict.detail, i))
            else:  # history: plain text allowed; parsed leniently only to follow the turn's structure
                verdict = check_action_cached(text, None)
            final = verdict.action is not None and verdict.action.is_final
            if turn is not None:
                turn.append((i, trained, final))
                awaiting = not final
    end_turn("at the end of the example")


def _is_langchain(messages: list[Any], texts: list[str]) -> bool:
    head = _markers()[0]
    return any(head in t and m.get("role") == "user" for m, t in zip(messages, texts, strict=True))


# -- examples and files ----------------------------------------------------------------------------------------------


def _lint(
    example: Any,
    tools: Mapping[str, ToolSpec] | None,
    max_steps: int | None,
    model: str,
    token_limit: int | None,
    tools_text: str | None = None,
) -> tuple[list[Problem], int | None]:
    """Problems and token count of one decoded line; `tools_text` is its tools' JSON text (`decode_line`'s)."""
    if not isinstance(example, dict):
        return [Problem(0, "data_type", f"the line is a JSON {type(example).__name__}, not an object")], None
    if is_preference_line(example):  # a preference (DPO) line: its prompt + preferred answer is linted as a chat line
        return lint_preference(example, lambda chat: _lint(chat, tools, max_steps, model, token_limit))
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        what = "missing" if messages is None else "empty" if messages == [] else f"a {type(messages).__name__}"
        return [Problem(0, "missing_messages_list", f'"messages" is {what}; it must be a non-empty list')], None
    out: list[Problem] = []
    _check_format(example, messages, out)
    if tools_text is None and example.get("tools"):
        tools_text = json.dumps(example["tools"], ensure_ascii=False)
    texts = [_text(m) for m in messages]  # "" for a message that is not an object or has no string content
    if _is_langchain(messages, texts):
        _check_langchain(messages, texts, tools, max_steps, out)
    elif "tools" in example or any(isinstance(m, dict) and "tool_calls" in m for m in messages):
        from distill.formats.openai_tools import check_line  # native tool calling (agent.format openai-tools)

        found = check_line(example, messages, tools, max_steps, tools_text=tools_text)
        out.extend(Problem(0, reason, detail, at) for reason, detail, at in found)
    tokens: int | None = None
    if all(isinstance(m, dict) for m in messages):
        tokens = count_example(example, model, tools_text=tools_text)
        limit = token_limit if token_limit is not None else example_limit(model)
        if tokens > limit:
            detail = f"{tokens} tokens, over the {limit}-token limit for {model} (the service truncates it)"
            out.append(Problem(0, Reason.OVER_TOKEN_LIMIT.value, detail))
    return out, tokens


def lint_example(
    example: Any,
    *,
    tools: Mapping[str, ToolSpec] | None,
    max_steps: int | None,
    model: str,
    token_limit: int | None,
) -> list[Problem]:
    """Every problem of one parsed line (line number 0; the caller fills it in).

    `tools=None` infers a LangChain example's tool names from its prompt; `max_steps=None` skips the step budget;
    `token_limit=None` uses the model's per-example limit.
    """
    return _lint(example, tools, max_steps, model, token_limit)[0]


def _lint_range(
    settings: tuple[Mapping[str, ToolSpec] | None, int | None, str, int | None], path: str, start: int, end: int
) -> tuple[int, int, int, list[Problem], list[int]]:
    """Lint the lines in bytes [start, end) of a file: (newlines read, lines, ok lines, problems, token counts), with
    line numbers counted from the range's start."""
    tools, max_steps, model, token_limit = settings
    problems_all: list[Problem] = []
    token_counts: list[int] = []
    lines = ok_lines = number = 0
    with open(path, "rb", buffering=1 << 20) as handle:  # lines of kilobytes: one read for many
        handle.seek(start)
        remaining = end - start
        while remaining > 0:
            raw = handle.readline(remaining)
            if not raw:
                break
            remaining -= len(raw)
            number += 1
            if raw.isspace():  # blank (`not raw.strip()`: raw is never empty here), without copying the line
                continue
            lines += 1
            try:
                example, tools_text = decode_line(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                problems = [Problem(number, "invalid_json_line", f"not UTF-8 text: {exc.reason} at byte {exc.start}")]
            except ValueError as exc:
                problems = [Problem(number, "invalid_json_line", f"not valid JSON: {exc}")]
            else:
                found, tokens = _lint(example, tools, max_steps, model, token_limit, tools_text)
                problems = [Problem(number, p.reason, p.detail, p.message) for p in found]
                if tokens is not None:
                    token_counts.append(tokens)
            problems_all.extend(problems)
            ok_lines += not problems
    return number, lines, ok_lines, problems_all, token_counts


def lint_file(
    path: str | Path, config: Config | None = None, *, model: str | None = None, workers: int | None = None
) -> LintReport:
    """Lint every non-blank line of a fine-tuning JSONL file; with a config, its tools and step budget apply.

    `workers` processes share a large file (None: `chunks.auto_workers`, one process for small files); the report
    is the same whatever the count.
    """
    file = Path(path)
    if not file.is_file():
        raise DistillError(f"{file}: no such file", hint="give the path of a .jsonl fine-tuning file")
    model = model or (config.export.model if config else DEFAULT_MODEL)
    tools = {t.name: ToolSpec(t.name, t.input_schema) for t in config.tools} if config else None
    max_steps = config.agent.max_steps if config else None
    token_limit = config.export.max_example_tokens if config else None
    count = auto_workers(file) if workers is None else max(1, workers)
    report = LintReport(path=str(path), lines=0, ok_lines=0)
    before = 0  # lines of the ranges before this one
    for numbers, lines, ok_lines, problems, token_counts in map_ranges(
        partial(_lint_range, (tools, max_steps, model, token_limit)), file, count
    ):
        report.lines += lines
        report.ok_lines += ok_lines
        report.problems.extend(
            problems if not before else [Problem(p.line + before, p.reason, p.detail, p.message) for p in problems]
        )
        report.token_counts.extend(token_counts)
        before += numbers
    return report
