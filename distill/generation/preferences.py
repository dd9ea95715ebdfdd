"""Preference pairs (`export.preferences: true`): a rejected attempt next to the accepted answer at the same prompt.

Every step whose record holds rejected attempts (`Step.attempts`, written by step resampling) gives one line per
attempt in OpenAI's preference fine-tuning format (`method: dpo`):

    {"input": {"messages": [...], "tools": [...], "parallel_tool_calls": false},
     "preferred_output": [{"role": "assistant", ...}], "non_preferred_output": [{"role": "assistant", ...}]}

`input.messages` are exactly the messages the agent runtime sent at that step (the format's `messages_for_step`,
the same the teacher request held; `tools` and `parallel_tool_calls` for native tool calling); `preferred_output` is
the accepted answer as the training line renders it (canonical action, canonical tool-call ids); the non-preferred
output is the rejected reply as the teacher wrote it (for tool calls: its calls, with the canonical id numbering).
Lines follow the document split of train/validation (`preferences.train.jsonl`, `preferences.validation.jsonl`).
An attempt that is no assistant message at all (an empty reply, a malformed call list), that equals the preferred
answer, or whose line passes the example token limit is skipped and counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from distill.formats.base import Format
from distill.run_folder import SPLITS, RunFolder
from distill.tokens import count_example
from distill.trajectory import Attempt, Step, Trajectory

__all__ = ["PREFERENCE_FILES", "build_preferences", "preference_lines", "rejected_message"]

PREFERENCE_FILES = {name: RunFolder(Path()).preference_split(name).name for name in SPLITS}


def _groups(steps: Sequence[Step]) -> Iterator[tuple[int, int]]:
    """(start, end) of each teacher reply in a turn: a step and the parallel calls made with it."""
    start = 0
    while start < len(steps):
        end = start + 1
        while end < len(steps) and steps[end].parallel:
            end += 1
        yield start, end
        start = end


def _native_calls(raw: str, first_number: int) -> dict[str, Any] | None:
    """A native tool-call reply's JSON (`Reading.raw`) as an assistant message with canonical ids, else None."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict) or set(value) != {"content", "tool_calls"} or not isinstance(value["tool_calls"], list):
        return None
    calls = []
    for k, call in enumerate(value["tool_calls"]):
        function = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(function, dict) and isinstance(function.get("name"), str)
                and isinstance(function.get("arguments"), str)):
            return None  # not expressible as an assistant message
        calls.append({"id": f"call_{first_number + k + 1}", "type": "function",
                      "function": {"name": function["name"], "arguments": function["arguments"]}})
    if not calls:
        return None
    content = value["content"] if isinstance(value["content"], str) and value["content"].strip() else None
    return {"role": "assistant", "content": content, "tool_calls": calls}


def rejected_message(attempt: Attempt, native: bool, first_number: int) -> dict[str, Any] | None:
    """The rejected reply as an assistant message (None when it is none: an empty reply, malformed calls)."""
    raw = attempt.raw
    if raw is None or not raw.strip():
        return None
    if native and raw.lstrip().startswith("{"):
        message = _native_calls(raw, first_number)
        if message is not None:
            return message
    return {"role": "assistant", "content": raw}


def _calls_before(trajectory: Trajectory, turn_index: int, steps: Sequence[Step]) -> int:
    earlier = sum(1 for t in trajectory.turns[:turn_index] for s in t.steps if not s.is_final)
    return earlier + sum(1 for s in steps if not s.is_final)


def preference_lines(trajectory: Trajectory, fmt: Format, skipped: Counter[str] | None = None) -> list[dict[str, Any]]:
    """The preference lines of one accepted trajectory (one per rejected attempt at a step's prompt)."""
    skipped = skipped if skipped is not None else Counter()
    native = fmt.tools is not None
    lines: list[dict[str, Any]] = []
    for t_index, turn in enumerate(trajectory.turns):
        earlier = trajectory.turns[:t_index]
        for start, end in _groups(turn.steps):
            attempts = turn.steps[start].attempts
            if not attempts:
                continue
            messages = fmt.messages_for_step(earlier, turn.question, turn.steps[:start])
            preferred = fmt.messages_for_step(earlier, turn.question, turn.steps[:end])[len(messages)]
            first_number = _calls_before(trajectory, t_index, turn.steps[:start])
            for attempt in attempts:
                rejected = rejected_message(attempt, native, first_number)
                if rejected is None:
                    skipped["not_a_message"] += 1
                    continue
                if rejected == preferred:
                    skipped["same_as_preferred"] += 1
                    continue
                source: dict[str, Any] = {"messages": messages}
                if native:
                    source["tools"] = fmt.tools
                    source["parallel_tool_calls"] = fmt.parallel_tool_calls
                lines.append({
                    "input": source,
                    "preferred_output": [preferred],
                    "non_preferred_output": [rejected],
                    "_reason": attempt.reason,
                })
    return lines


def _tokens(line: dict[str, Any], model: str) -> int:
    source = line["input"]
    longest = max((line["preferred_output"], line["non_preferred_output"]), key=lambda m: len(json.dumps(m)))
    return count_example({**source, "messages": [*source["messages"], *longest]}, model)


def build_preferences(
    accepted: Iterable[Trajectory], fmt: Format, validation_docs: set[str], *, model: str, limit: int
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The lines of each split (keys of PREFERENCE_FILES) and the manifest's `preferences` section."""
    skipped: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
    for trajectory in accepted:
        split = "validation" if trajectory.doc_id in validation_docs else "train"
        for line in preference_lines(trajectory, fmt, skipped):
            reason = line.pop("_reason")
            if _tokens(line, model) > limit:
                skipped["over_token_limit"] += 1
                continue
            reasons[reason] += 1
            rows[split].append(line)
    return rows, {
        "train": len(rows["train"]),
        "validation": len(rows["validation"]),
        "non_preferred_by_reason": dict(reasons.most_common()),
        "skipped": dict(skipped.most_common()),
        "files": dict(PREFERENCE_FILES),
    }
