"""Native OpenAI tool calling (`agent.format: openai-tools`): tools sent as `tools`, answers as `tool_calls`.

What the runtime sends: a system message (`agent.system_prompt`, else `DEFAULT_SYSTEM_PROMPT`), the earlier turns
kept by the memory window in full (user message, assistant `tool_calls`, `tool` messages, final answer), the user's
message, then this turn's calls and observations; `tools` (each configured tool as a function whose JSON-Schema
`parameters` is its object `input_schema`, or for a string-input tool `{"input": <its string schema>}`) and
`parallel_tool_calls` (`agent.parallel_tool_calls`) go with every request. The teacher answers with native
`tool_calls` or with the final answer as text.

Strict reading of a reply: known function names, arguments that parse as JSON (no repair, no duplicate keys) into an
object that satisfies the tool's schema, at most one call per message unless parallel calls are allowed, a final
answer that is non-empty text. A fine-tuning line is one turn: earlier turns at `"weight": 0`, plus `tools` and
`parallel_tool_calls`. Tool-call ids are canonical (`call_1`, `call_2`, ... through the conversation): at run time the
API assigns them, the model never writes them; the teacher's own ids stay in the record (`Step.call_id`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from distill.config import Config, is_object_schema
from distill.formats.base import STRUCTURE_READ, NotRenderable, Reading
from distill.formats.schema_checks import checker
from distill.schema import loads_unique, schema_problem, validator
from distill.trajectory import FINAL_ANSWER, Reason, Step, Trajectory, Turn

__all__ = ["DEFAULT_SYSTEM_PROMPT", "OpenAIToolsFormat", "check_line", "tool_definition", "tool_parameters"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Use the tools when they help you answer the user's question, and answer directly "
    "when no tool is needed."
)


def tool_parameters(tool: Any) -> dict[str, Any]:
    """The function's JSON-Schema parameters: an object input_schema as it is, else {"input": <string schema>}."""
    if tool.structured:
        return tool.input_schema
    inner = dict(tool.input_schema) if tool.input_schema is not None else {"type": "string"}
    return {"type": "object", "properties": {"input": inner}, "required": ["input"], "additionalProperties": False}


def tool_definition(tool: Any) -> dict[str, Any]:
    """One entry of `tools`: {"type": "function", "function": {name, description, parameters}}."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool_parameters(tool)},
    }


def _reject(reason: str, detail: str, raw: str | None) -> Reading:
    return Reading(ok=False, reason=str(reason), detail=detail, raw=raw)


class OpenAIToolsFormat:
    """Renders trajectories as the messages a native tool-calling runtime sends, and reads `tool_calls` strictly."""

    name = "openai-tools"
    stop: list[str] | None = None  # native tool calls need no stop sequences

    def __init__(self, config: Config) -> None:
        self.config = config
        self.system_prompt = config.agent.system_prompt or DEFAULT_SYSTEM_PROMPT
        self.memory_window = config.agent.memory_window
        self.parallel_tool_calls: bool | None = config.agent.parallel_tool_calls
        self.tools: list[dict[str, Any]] | None = [tool_definition(t) for t in config.tools]
        self._parameters = {t.name: tool_parameters(t) for t in config.tools}
        self._structured = frozenset(t.name for t in config.tools if t.structured)

    # -- what the runtime sends ------------------------------------------------------------------------------
    def _steps(self, steps: Sequence[Step], number: int, out: list[dict[str, Any]]) -> int:
        """Append the messages of some steps; `number` is the last canonical call number used. Returns the new one."""
        i = 0
        while i < len(steps):
            step = steps[i]
            if step.is_final:
                out.append({"role": "assistant", "content": step.action_input})
                i += 1
                continue
            group = [step]
            while i + len(group) < len(steps) and steps[i + len(group)].parallel:
                group.append(steps[i + len(group)])
            calls, answers = [], []
            for call in group:
                number += 1
                call_id = f"call_{number}"
                if call.action in self._structured:
                    arguments = call.action_input
                else:
                    arguments = json.dumps({"input": call.action_input}, ensure_ascii=False)
                calls.append({"id": call_id, "type": "function", "function": {"name": call.action, "arguments": arguments}})
                answers.append({"role": "tool", "tool_call_id": call_id, "content": call.observation or ""})
            out.append({"role": "assistant", "content": None, "tool_calls": calls})
            out.extend(answers)
            i += len(group)
        return number

    def _prefix(self, earlier: Sequence[Turn], question: str) -> tuple[list[dict[str, Any]], int]:
        kept_from = max(0, len(earlier) - self.memory_window)
        number = sum(1 for turn in earlier[:kept_from] for s in turn.steps if not s.is_final)
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system_prompt}]
        for turn in earlier[kept_from:]:
            messages.append({"role": "user", "content": turn.question})
            number = self._steps(turn.steps, number, messages)
        messages.append({"role": "user", "content": question})
        return messages, number

    def messages_for_step(self, earlier: Sequence[Turn], question: str, steps: Sequence[Step]) -> list[dict[str, Any]]:
        """The chat messages the runtime sends the model for the next step of a turn (with `tools` beside them)."""
        messages, number = self._prefix(earlier, question)
        self._steps(steps, number, messages)
        return messages

    def messages_as_written(
        self, earlier: Sequence[Turn], question: str, steps: Sequence[Step]
    ) -> list[dict[str, Any]]:
        """`messages_for_step` with this turn's answers as they came (content, tool-call ids, argument text) over the
        canonical rendering of their calls, and the `tool` messages' ids matching (an answer without ids keeps
        call_N)."""
        messages = self.messages_for_step(earlier, question, steps)
        if not steps:
            return messages
        mine = self._prefix(earlier, question)[0]
        calls = iter(steps)
        ids: dict[str, str] = {}
        for message in messages[len(mine) :]:
            if message.get("role") == "assistant" and message.get("tool_calls"):
                group = [next(calls) for _ in message["tool_calls"]]
                sent = json.loads(group[0].raw) if group[0].raw else {}
                raw_calls = sent.get("tool_calls") or []
                if len(raw_calls) == len(group):
                    for rendered, original in zip(message["tool_calls"], raw_calls, strict=True):
                        ids[rendered["id"]] = original.get("id") or rendered["id"]
                        rendered["id"] = ids[rendered["id"]]
                        rendered["function"]["arguments"] = original["function"]["arguments"]
                    message["content"] = sent.get("content")
            elif message.get("role") == "tool" and message.get("tool_call_id") in ids:
                message["tool_call_id"] = ids[message["tool_call_id"]]
        return messages

    # -- reading the model's answer ----------------------------------------------------------------------------
    def read(self, reply: Any) -> Reading:
        """A teacher reply (`TeacherReply`) checked strictly: its tool calls as steps, or the final answer."""
        calls = reply.tool_calls or []
        raw = reply.text if not calls else json.dumps({"content": reply.text, "tool_calls": calls}, ensure_ascii=False)
        if reply.finish_reason == "length":
            return _reject(Reason.TRUNCATED, "the teacher hit its max_tokens (finish_reason=length)", raw)
        if reply.finish_reason == "content_filter":
            return _reject(Reason.CONTENT_FILTER, "the teacher's output was filtered (finish_reason=content_filter)", raw)
        if not calls:
            text = reply.text
            if not text or not text.strip():
                return _reject(Reason.EMPTY_ANSWER, "neither a tool call nor a text answer", raw)
            return Reading(ok=True, steps=[Step(action=FINAL_ANSWER, action_input=text, raw=text)])
        if len(calls) > 1 and not self.parallel_tool_calls:
            detail = f"{len(calls)} tool calls in one message, but agent.parallel_tool_calls is false"
            return _reject(Reason.PARALLEL_NOT_ALLOWED, detail, raw)
        steps: list[Step] = []
        for k, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                function = {}
            name = function.get("name")
            parameters = self._parameters.get(name) if isinstance(name, str) else None
            if parameters is None or not isinstance(name, str):
                known = ", ".join(self._parameters)
                return _reject(Reason.UNKNOWN_ACTION, f"tool_calls[{k}] calls unknown tool {name!r}; tools: {known}", raw)
            text = function.get("arguments")
            if not isinstance(text, str):
                detail = f"tool_calls[{k}] ({name}) arguments are a {type(text).__name__}, not a JSON string"
                return _reject(Reason.INVALID_ARGUMENTS, detail, raw)
            try:
                arguments = loads_unique(text)
            except ValueError as exc:
                return _reject(Reason.INVALID_ARGUMENTS, f"tool_calls[{k}] ({name}) arguments are not valid JSON: {exc}", raw)
            if not isinstance(arguments, dict):
                detail = f"tool_calls[{k}] ({name}) arguments are a JSON {type(arguments).__name__}, not an object"
                return _reject(Reason.INVALID_ARGUMENTS, detail, raw)
            problem = schema_problem(parameters, arguments)
            if problem:
                return _reject(Reason.ARGUMENTS_SCHEMA, f"tool_calls[{k}] ({name}) arguments fail its schema: {problem}", raw)
            action_input = json.dumps(arguments, ensure_ascii=False) if name in self._structured else arguments["input"]
            call_id = call.get("id") if isinstance(call.get("id"), str) else None
            steps.append(Step(action=name, action_input=action_input, raw=raw or "", call_id=call_id, parallel=k > 0))
        return Reading(ok=True, steps=steps)

    def named_actions(self, reply: Any, reason: str) -> list[str | None] | None:
        """The functions a rejected answer called (FINAL_ANSWER for an empty text answer), when they could be read."""
        if reason == Reason.EMPTY_ANSWER:  # no tool call and no text: an empty final answer
            return [FINAL_ANSWER]
        if reason not in STRUCTURE_READ or not reply.tool_calls:
            return None
        functions = [c.get("function") if isinstance(c, dict) else None for c in reply.tool_calls]
        names = [f.get("name") if isinstance(f, dict) else None for f in functions]
        return [n if isinstance(n, str) else None for n in names]

    # -- fine-tuning lines ---------------------------------------------------------------------------------------
    def render_turn(self, earlier: Sequence[Turn], turn: Turn) -> dict[str, Any]:
        """One fine-tuning line: the turn's whole exchange after its history (history's assistant messages at weight 0)."""
        messages, number = self._prefix(earlier, turn.question)
        for message in messages:
            if message["role"] == "assistant":
                message["weight"] = 0
        self._steps(turn.steps, number, messages)
        return {"messages": messages, "tools": self.tools, "parallel_tool_calls": self.parallel_tool_calls}

    def render(self, trajectory: Trajectory) -> list[dict[str, Any]]:
        """Every turn of an accepted trajectory as its own fine-tuning line."""
        for turn in trajectory.turns:
            for step in turn.steps:
                if not step.is_final and step.action not in self._parameters:
                    raise NotRenderable(Reason.UNKNOWN_ACTION, f"{step.action!r} is not a configured tool")
                if step.parallel and not self.parallel_tool_calls:
                    detail = "the trajectory has parallel tool calls but agent.parallel_tool_calls is false"
                    raise NotRenderable(Reason.FORMAT_DEPENDENT, detail)
        return [self.render_turn(trajectory.turns[:i], turn) for i, turn in enumerate(trajectory.turns)]


# -- linting fine-tuning lines of this format (used by distill.validation.lint) -------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _line_parameters(example: dict[str, Any], out: list[tuple[str, str, int | None]]) -> dict[str, Any] | None:
    """The line's functions and their parameters; None when `tools` is malformed (the generic checks report it)."""
    import jsonschema

    found: dict[str, Any] = {}
    tools = example.get("tools")
    if not isinstance(tools, list):
        return None
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            return None
        name = function.get("name")
        if not isinstance(name, str) or tool.get("type") != "function":
            return None
        if not _NAME.fullmatch(name):
            out.append(("bad_tools", f"tools[{i}] name {name!r} is not letters, digits, _ or - (at most 64)", None))
        if name in found:
            out.append(("bad_tools", f"tools[{i}] repeats the function name {name!r}", None))
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            continue
        if parameters.get("type") != "object":
            out.append(("bad_tools", f"tools[{i}] ({name}) parameters must be a JSON Schema of type object", None))
        try:
            validator(parameters)
        except jsonschema.SchemaError as exc:
            out.append(("bad_tools", f"tools[{i}] ({name}) parameters is not a valid JSON Schema: {exc.message}", None))
            continue
        found[name] = parameters
    return found


class _Checks(dict[str, Callable[[Any], "str | None"]]):
    """Each function's argument check, compiled on first use (a broken schema fails only when it is used)."""

    def __init__(self, parameters: Mapping[str, Any]) -> None:
        super().__init__()
        self.parameters = parameters

    def __missing__(self, name: str) -> Callable[[Any], str | None]:
        found = self[name] = checker(self.parameters[name])
        return found


@lru_cache(maxsize=256)
def _tools_verdict(tools_text: str) -> tuple[tuple[tuple[str, str, int | None], ...], _Checks | None]:
    """`_line_parameters` of a line whose `tools` has this JSON text (tool lists repeat on every line of a file)."""
    out: list[tuple[str, str, int | None]] = []
    found = _line_parameters({"tools": json.loads(tools_text)}, out)
    return tuple(out), None if found is None else _Checks(found)


_config_checks: list[tuple[Mapping[str, Any], _Checks]] = []  # the last config tools seen (held, so ids stay theirs)


def _for_config(tools: Mapping[str, Any]) -> _Checks:
    if _config_checks and _config_checks[0][0] is tools:
        return _config_checks[0][1]
    checks = _Checks({name: tool_parameters(_Spec(spec.input_schema)) for name, spec in tools.items()})
    _config_checks[:] = [(tools, checks)]
    return checks


def _line_checks(
    example: dict[str, Any], tools_text: str | None, out: list[tuple[str, str, int | None]]
) -> _Checks | None:
    try:
        text = tools_text if tools_text is not None else json.dumps(example["tools"], ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON data (a caller's Python objects): checked without the cache
        found = _line_parameters(example, out)
        return None if found is None else _Checks(found)
    problems, checks = _tools_verdict(text)
    out.extend(problems)
    return checks


def check_line(
    example: dict[str, Any],
    messages: list[Any],
    tools: Mapping[str, Any] | None,
    max_steps: int | None,
    *,
    tools_text: str | None = None,
) -> list[tuple[str, str, int | None]]:
    """This format's rules for one fine-tuning line with `tools` or `tool_calls`: (reason, detail, message index).

    Function definitions must be valid (names, object parameters that are valid JSON Schemas, no repeats); every
    call must name a defined function (the config's tools when given, which then also supply the schemas) with
    arguments that parse as JSON into an object satisfying the schema; parallel calls only when
    `parallel_tool_calls` is not false; at most `max_steps` assistant messages after the last user message; the line
    ends with an assistant text answer. Pairing of `tool_call_id`s and consecutive assistant messages are checked by
    the generic format checks of `distill.validation.lint`. `tools_text` is `json.dumps(example["tools"],
    ensure_ascii=False)` when the caller has it: the verdict on a tool list is cached by that text.
    """
    out: list[tuple[str, str, int | None]] = []
    checks = _line_checks(example, tools_text, out) if "tools" in example else _Checks({})
    if tools is not None:  # the config's tools decide: ToolSpec(name, input_schema)
        checks = _for_config(tools)
    elif "tools" not in example:
        out.append(("tools_missing", "the line has tool_calls but no tools: the model never sees the functions", None))
        return out
    elif checks is None:  # malformed tools: which functions exist is unknown
        return out
    parameters = checks.parameters
    parallel = example.get("parallel_tool_calls") is not False
    last_user = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), default=-1)
    steps = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        steps += i > last_user
        calls = message.get("tool_calls")
        if not isinstance(calls, list):
            continue
        if len(calls) > 1 and not parallel:
            detail = f"{len(calls)} tool calls in one message, but the line sets parallel_tool_calls to false"
            out.append((str(Reason.PARALLEL_NOT_ALLOWED), detail, i))
        for j, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                continue  # the generic format checks report it
            name, text = function["name"], function.get("arguments")
            if name not in parameters:
                known = ", ".join(parameters) or "none"
                out.append((str(Reason.UNKNOWN_ACTION), f"tool_calls[{j}] calls {name!r}, not a defined tool ({known})", i))
                continue
            try:
                arguments = loads_unique(text) if isinstance(text, str) else None
            except ValueError as exc:
                out.append((str(Reason.INVALID_ARGUMENTS), f"tool_calls[{j}] ({name}) arguments are not JSON: {exc}", i))
                continue
            if not isinstance(arguments, dict):
                detail = f"tool_calls[{j}] ({name}) arguments are not the JSON text of an object"
                out.append((str(Reason.INVALID_ARGUMENTS), detail, i))
                continue
            problem = checks[name](arguments)
            if problem:
                out.append((str(Reason.ARGUMENTS_SCHEMA), f"tool_calls[{j}] ({name}) arguments fail its schema: {problem}", i))
    if max_steps is not None and steps > max_steps:
        out.append((str(Reason.TOO_MANY_STEPS), f"{steps} assistant messages in the last turn > max_steps={max_steps}", None))
    final = messages[-1] if isinstance(messages[-1], dict) else {}
    content = final.get("content")
    answered = final.get("role") == "assistant" and isinstance(content, str) and bool(content) and not content.isspace()
    if not answered and not (final.get("role") == "assistant" and final.get("tool_calls")):  # calls: unanswered
        detail = "the line must end with the assistant's final text answer (no tool_calls)"
        out.append((str(Reason.NO_FINAL_ANSWER), detail, len(messages) - 1))
    return out


@dataclass(frozen=True)
class _Spec:
    input_schema: Any

    @property
    def structured(self) -> bool:
        return is_object_schema(self.input_schema)
