"""Simulated tools (`kind: simulated`): the teacher writes what a tool that cannot run during generation returns.

A payments API or a ticket system cannot be called while training data is made, yet the agent must learn to call it
and to use what it returns. For each call of such a tool the teacher gets one request: the tool's description, its
input and output schemas, its examples (input -> output) and the call; it answers with the tool's output (JSON
satisfying `output_schema` when one is given, via structured outputs, else text). The reply is checked strictly (a
truncated, non-JSON or off-schema output rejects the conversation with reason `simulated_output`), the step is marked
`simulated` and the trajectory's `meta["simulated_calls"]` counts them; the manifest counts them per tool.

The offline teacher simulates deterministically (`simulate_offline`): an example with the same input gives its
output; otherwise a value is sampled from `output_schema` (enums, nullable types, anyOf, nested objects, arrays,
$defs references), echoing arguments of the same name and imitating the examples' values; the seed is the plan's.
"""

from __future__ import annotations

import json
import re
from typing import Any

from distill.agent.tools import Observation
from distill.config import Config, SimulatedTool
from distill.errors import Rejection
from distill.schema import schema_problem
from distill.teachers.base import TeacherReply, TeacherRequest
from distill.teachers.sampler import observation_text, wrapped_output
from distill.templates import template
from distill.trajectory import Plan, Reason, Step

__all__ = [
    "SimulationError",
    "observation_text",
    "read_simulation",
    "simulation_request",
]


class SimulationError(Rejection):
    """A simulated observation that cannot be used; `reason` is machine-readable, `raw` the teacher's text."""


def _response_format(tool: SimulatedTool) -> dict[str, Any] | None:
    schema = tool.output_schema
    if schema is None:
        return None
    if wrapped_output(tool):
        schema = {"type": "object", "properties": {"output": schema}, "required": ["output"]}
    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{tool.name}_output")[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "strict": False, "schema": schema}}


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


_PARTS: dict[int, tuple[SimulatedTool, dict[str, str]]] = {}


def _tool_parts(tool: SimulatedTool) -> dict[str, str]:
    """The parts of the prompt that depend only on the tool (computed once per tool)."""
    cached = _PARTS.get(id(tool))
    if cached is not None and cached[0] is tool:
        return cached[1]
    examples = [e for e in tool.examples if e.output is not None]
    shown = "".join(
        f"- input: {json.dumps(e.input, ensure_ascii=False)}\n  output: {json.dumps(e.output, ensure_ascii=False)}\n"
        for e in examples[:5]
    )
    if tool.output_schema is not None:
        output = f"It returns JSON that satisfies this schema:\n{_dump(tool.output_schema)}"
        answer = 'Answer with {"output": ...} holding the output.' if wrapped_output(tool) else "Answer with the JSON only."
    else:
        output = "It returns text."
        answer = "Answer with the tool's output text only."
    parts = {
        "name": tool.name,
        "description": tool.description,
        "input_schema": _dump(tool.input_schema) if tool.input_schema is not None else '{"type": "string"}',
        "output": output,
        "examples": f"Examples of calls and what the tool returned:\n{shown}" if shown else "",
        "answer": answer,
    }
    _PARTS[id(tool)] = (tool, parts)
    return parts


def simulation_request(config: Config, tool: SimulatedTool, plan: Plan, question: str, step: Step) -> TeacherRequest:
    """The teacher request that writes one simulated observation (stage `simulate`)."""
    call = step.action_input if tool.structured else json.dumps(step.action_input, ensure_ascii=False)
    user = template("simulate.user.md").substitute(_tool_parts(tool), question=question, call=call)
    return TeacherRequest(
        stage="simulate",
        messages=[
            {"role": "system", "content": template("simulate.system.md").template.strip()},
            {"role": "user", "content": user},
        ],
        params={"temperature": config.teacher.temperature, "max_tokens": config.teacher.max_tokens, "seed": plan.seed},
        response_format=_response_format(tool),
        context={"plan": plan, "tool": tool, "question": question, "step": step},
    )


def read_simulation(reply: TeacherReply, tool: SimulatedTool) -> Observation:
    """The simulated observation, checked: JSON that satisfies output_schema (when given), else non-empty text."""
    raw = reply.text
    if reply.finish_reason == "length":
        raise SimulationError(Reason.TRUNCATED, "the simulated output hit max_tokens (finish_reason=length)", raw)
    if reply.finish_reason == "content_filter":
        raise SimulationError(Reason.CONTENT_FILTER, "the simulated output was filtered", raw)
    text = (raw or "").strip()
    if not text:
        raise SimulationError(Reason.SIMULATED_OUTPUT, f"the simulated output of {tool.name} is empty", raw)
    if tool.output_schema is None:
        return Observation(text=text, value=text)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SimulationError(Reason.SIMULATED_OUTPUT, f"the simulated output of {tool.name} is not JSON: {exc}", raw)
    if wrapped_output(tool):
        if not isinstance(value, dict) or set(value) != {"output"}:
            raise SimulationError(Reason.SIMULATED_OUTPUT, 'expected {"output": ...}', raw)
        value = value["output"]
    problem = schema_problem(tool.output_schema, value)
    if problem:
        raise SimulationError(Reason.SIMULATED_OUTPUT, f"{tool.name} output fails its output_schema: {problem}", raw)
    return Observation(text=observation_text(value), value=value)
