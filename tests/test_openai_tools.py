"""agent.format openai-tools: exported lines against a validator written from the published fine-tuning format,
one rejection per rule; strict reading of tool calls; real-world schemas; simulated tools.

The reference validator below is written from OpenAI's published chat fine-tuning format (the `FineTuneChatRequestInput`
line: `messages`, `tools`, `parallel_tool_calls`; assistant `tool_calls` with string `arguments` and `weight` 0 or 1;
`tool` messages with `tool_call_id`) plus the pairing rules of Chat Completions. It does not use distill's linter;
every rule is checked against both.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from distill.config import config_from_dict
from distill.errors import ConfigError
from distill.formats.openai_tools import OpenAIToolsFormat
from distill.generation.pipeline import generate, load_trajectories
from distill.teachers.base import TeacherReply, TeacherRequest
from distill.validation.lint import lint_example, lint_file

REPO = Path(__file__).resolve().parent.parent
SUPPORT = yaml.safe_load((REPO / "configs" / "support_agent.yaml").read_text(encoding="utf-8"))
MODEL = "gpt-4o-mini-2024-07-18"


def support_config(*, fmt: str = "openai-tools", parallel: bool = True, conversations: int = 60, seed: int = 3,
                   follow_ups: int = 1, tools: list[dict[str, Any]] | None = None, provider: str = "offline",
                   mix: dict[str, float] | None = None) -> Any:
    """configs/support_agent.yaml's tools over the corpus, offline, no dedup (the tests count exact things)."""
    data = {
        "name": "support-test",
        "agent": {"format": fmt, "system_prompt": SUPPORT["agent"]["system_prompt"], "max_steps": 4, "memory_window": 5,
                  "parallel_tool_calls": parallel},
        "tools": copy.deepcopy(tools if tools is not None else SUPPORT["tools"]),
        "sources": [{"path": str(REPO / "corpus")}],
        "teacher": {"provider": provider, "max_retries": 0},
        "generation": {"conversations": conversations, "seed": seed, "follow_ups": follow_ups,
                       "mix": mix or {"tool": 0.6, "direct": 0.15, "multi_turn": 0.25}},
        "export": {"validation_fraction": 0.2, "dedup": {"enabled": False}},
    }
    return config_from_dict(data, file=str(REPO / "configs" / "support-test.yaml"), base_dir=REPO / "configs")


def read_lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for name in ("train", "validation")
            for line in (run / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    config = support_config()
    out = tmp_path_factory.mktemp("openai-tools") / "run"
    generate(config, out, progress=False)
    return config, out


# -- a validator written from the published format -------------------------------------------------------------------

_TEXT = {"anyOf": [{"type": "string"}, {"type": "array", "items": {
    "type": "object", "required": ["type", "text"], "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}}]}
LINE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["messages"],
    "additionalProperties": False,
    "properties": {
        "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/message"}},
        "tools": {"type": "array", "items": {"$ref": "#/$defs/tool"}},
        "parallel_tool_calls": {"type": "boolean"},
    },
    "$defs": {
        "tool": {"type": "object", "required": ["type", "function"], "additionalProperties": False, "properties": {
            "type": {"const": "function"},
            "function": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
                "strict": {"type": ["boolean", "null"]}}}}},
        "tool_call": {"type": "object", "required": ["id", "type", "function"], "additionalProperties": False,
                      "properties": {
                          "id": {"type": "string"},
                          "type": {"const": "function"},
                          "function": {"type": "object", "required": ["name", "arguments"], "additionalProperties": False,
                                       "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}}}},
        "message": {"oneOf": [
            {"type": "object", "required": ["role", "content"], "additionalProperties": False, "properties": {
                "role": {"enum": ["system", "user"]}, "content": _TEXT, "name": {"type": "string"}}},
            {"type": "object", "required": ["role"], "additionalProperties": False, "properties": {
                "role": {"const": "assistant"},
                "content": {"anyOf": [_TEXT, {"type": "null"}]},
                "tool_calls": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/tool_call"}},
                "weight": {"enum": [0, 1]},
                "name": {"type": "string"},
                "refusal": {"type": ["string", "null"]}},
             "anyOf": [{"required": ["tool_calls"]},
                       {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}}]},
            {"type": "object", "required": ["role", "content", "tool_call_id"], "additionalProperties": False,
             "properties": {"role": {"const": "tool"}, "content": _TEXT, "tool_call_id": {"type": "string"}}},
        ]},
    },
}
_LINE = jsonschema.Draft202012Validator(LINE_SCHEMA)


def reference_problems(line: Any) -> set[str]:
    """The rules a line breaks: "format" (the published line schema), then the tool-calling rules."""
    if not _LINE.is_valid(line):
        return {"format"}
    found: set[str] = set()
    functions = {t["function"]["name"]: t["function"].get("parameters", {"type": "object"}) for t in line.get("tools", [])}
    for name, parameters in list(functions.items()):
        try:
            jsonschema.validators.validator_for(parameters).check_schema(parameters)
        except jsonschema.SchemaError:
            found.add("parameters_schema")
            functions[name] = {}  # its arguments cannot be checked
        if parameters.get("type") != "object":
            found.add("parameters_type")
    pending: set[str] = set()
    previous = None
    for message in line["messages"]:
        role = message["role"]
        if role == "assistant" and previous == "assistant":
            found.add("consecutive_assistant")
        if role != "tool" and pending:
            found.add("unanswered")
            pending = set()
        if role == "tool":
            if message["tool_call_id"] in pending:
                pending.discard(message["tool_call_id"])
            else:
                found.add("tool_call_id_unknown")
        for call in message.get("tool_calls", []):
            if call["id"] in pending:
                found.add("duplicate_id")
            pending.add(call["id"])
            name = call["function"]["name"]
            if name not in functions:
                found.add("unknown_function" if functions else "tools_missing")
                continue
            try:
                arguments = json.loads(call["function"]["arguments"])
            except ValueError:
                found.add("arguments_json")
                continue
            if not isinstance(arguments, dict):
                found.add("arguments_object")
            elif not jsonschema.validators.validator_for(functions[name])(functions[name]).is_valid(arguments):
                found.add("arguments_schema")
        if len(message.get("tool_calls", [])) > 1 and line.get("parallel_tool_calls") is False:
            found.add("parallel")
        previous = role
    if pending:
        found.add("unanswered")
    if not any(m["role"] == "assistant" and m.get("weight", 1) == 1 for m in line["messages"]):
        found.add("nothing_trained")
    last = line["messages"][-1]
    if last["role"] != "assistant" or last.get("tool_calls") or not last.get("content"):
        found.add("no_final_answer")
    return found


def lint_reasons(line: Any, tools: Any = None) -> set[str]:
    return {p.reason for p in lint_example(line, tools=tools, max_steps=None, model=MODEL, token_limit=None)}


# -- the exported lines ------------------------------------------------------------------------------------------------


def _calls(line: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [m["tool_calls"] for m in line["messages"] if m.get("tool_calls")]


def test_every_exported_line_is_accepted_by_the_reference_and_by_distill(run: tuple[Any, Path]) -> None:
    config, out = run
    lines = read_lines(out)
    assert len(lines) > 40
    for line in lines:
        assert reference_problems(line) == set(), line
        assert lint_reasons(line) == set(), line
        assert line["parallel_tool_calls"] is True
        assert [t["function"]["name"] for t in line["tools"]] == [t.name for t in config.tools]
    for name in ("train.jsonl", "validation.jsonl"):
        report = lint_file(out / name, config)
        assert report.ok, report.by_reason()
    # the run exercised what the format is for: every tool, structured arguments, parallel calls, direct answers
    called = {c["function"]["name"] for line in lines for calls in _calls(line) for c in calls}
    assert called == {"search_docs", "calculator", "lookup_invoice", "open_ticket"}
    assert any(len(calls) == 2 for line in lines for calls in _calls(line))
    assert any(not _calls(line) for line in lines)
    assert any(m.get("weight") == 0 and m.get("tool_calls") for line in lines for m in line["messages"])


def test_string_tools_take_an_input_object_and_structured_tools_their_schema(run: tuple[Any, Path]) -> None:
    _, out = run
    line = read_lines(out)[0]
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in line["tools"]}
    assert tools["search_docs"] == {"type": "object", "properties": {"input": {"type": "string"}},
                                    "required": ["input"], "additionalProperties": False}
    assert tools["calculator"]["properties"]["input"] == {"type": "string", "pattern": "^[0-9+*/(). -]+$"}
    assert tools["lookup_invoice"] == SUPPORT["tools"][2]["input_schema"]
    assert tools["open_ticket"]["$defs"] == {"email": {"type": "string", "format": "email"}}


# -- one rejection per rule ------------------------------------------------------------------------------------------


def _first(lines: list[dict[str, Any]], want: Any) -> dict[str, Any]:
    return copy.deepcopy(next(line for line in lines if want(line)))


def _structured(line: dict[str, Any]) -> bool:
    return any(c["function"]["name"] == "lookup_invoice" for calls in _calls(line) for c in calls)


def _parallel(line: dict[str, Any]) -> bool:
    return any(len(calls) == 2 for calls in _calls(line))


def _call_message(line: dict[str, Any]) -> dict[str, Any]:
    return next(m for m in line["messages"] if m.get("tool_calls"))


def _set_arguments(value: Any) -> Any:
    def mutate(line: dict[str, Any]) -> None:
        _call_message(line)["tool_calls"][0]["function"]["arguments"] = value
    return mutate


def _tool_index(line: dict[str, Any]) -> int:
    return next(i for i, m in enumerate(line["messages"]) if m["role"] == "tool")


def _drop_tool_message(line: dict[str, Any]) -> None:
    del line["messages"][_tool_index(line)]


def _answer_twice(line: dict[str, Any]) -> None:
    i = _tool_index(line)
    line["messages"].insert(i + 1, copy.deepcopy(line["messages"][i]))


def _wrong_id(line: dict[str, Any]) -> None:
    line["messages"][_tool_index(line)]["tool_call_id"] = "call_nobody"


def _no_id(line: dict[str, Any]) -> None:
    del line["messages"][_tool_index(line)]["tool_call_id"]


def _two_assistants(line: dict[str, Any]) -> None:
    line["messages"].insert(len(line["messages"]) - 1, {"role": "assistant", "content": "Let me think."})


def _drop_final(line: dict[str, Any]) -> None:
    line["messages"].pop()


def _final_is_call(line: dict[str, Any]) -> None:
    line["messages"][-1] = copy.deepcopy(_call_message(line))
    line["messages"][-1]["tool_calls"][0]["id"] = "call_last"


def _no_parallel(line: dict[str, Any]) -> None:
    line["parallel_tool_calls"] = False


def _unknown_function(line: dict[str, Any]) -> None:
    _call_message(line)["tool_calls"][0]["function"]["name"] = "refund_invoice"


def _no_tools(line: dict[str, Any]) -> None:
    del line["tools"]


def _bad_tool_name(line: dict[str, Any]) -> None:
    line["tools"][0]["function"]["name"] = "search docs"


def _bad_parameters(line: dict[str, Any]) -> None:
    line["tools"][2]["function"]["parameters"]["properties"]["invoice_id"]["type"] = "strng"


def _weight(value: Any, role: str = "assistant") -> Any:
    def mutate(line: dict[str, Any]) -> None:
        next(m for m in line["messages"] if m["role"] == role)["weight"] = value
    return mutate


def _nothing_trained(line: dict[str, Any]) -> None:
    for m in line["messages"]:
        if m["role"] == "assistant":
            m["weight"] = 0


def _null_content(line: dict[str, Any]) -> None:
    line["messages"][-1]["content"] = None


def _calls_on_user(line: dict[str, Any]) -> None:
    line["messages"][1]["tool_calls"] = copy.deepcopy(_call_message(line)["tool_calls"])


def _unknown_key(line: dict[str, Any]) -> None:
    line["messages"][-1]["reasoning"] = "because"


def _unknown_top_key(line: dict[str, Any]) -> None:
    line["metadata"] = {"simulated": True}


RULES = [  # (rule, which line, mutation, the reference's finding, distill's reason)
    ("arguments are JSON", _structured, _set_arguments('{"invoice_id": "INV-1'), "arguments_json", "invalid_arguments"),
    ("arguments are an object", _structured, _set_arguments("[1, 2]"), "arguments_object", "invalid_arguments"),
    ("arguments satisfy the schema", _structured, _set_arguments('{"invoice_id": "204518"}'), "arguments_schema",
     "arguments_schema"),
    ("no extra arguments", _structured, _set_arguments('{"invoice_id": "INV-204518", "x": 1}'), "arguments_schema",
     "arguments_schema"),
    ("arguments are a string", _structured, _set_arguments({"invoice_id": "INV-204518"}), "format", "bad_tool_calls"),
    ("calls a defined function", _structured, _unknown_function, "unknown_function", "unknown_action"),
    ("tools are given", _structured, _no_tools, "tools_missing", "tools_missing"),
    ("function names", _structured, _bad_tool_name, "format", "bad_tools"),
    ("parameters are a JSON Schema", _structured, _bad_parameters, "parameters_schema", "bad_tools"),
    ("every call is answered", _structured, _drop_tool_message, "unanswered", "tool_call_id_unanswered"),
    ("answered exactly once", _structured, _answer_twice, "tool_call_id_unknown", "tool_call_id_unknown"),
    ("answers a pending call", _structured, _wrong_id, "tool_call_id_unknown", "tool_call_id_unknown"),
    ("tool messages carry tool_call_id", _structured, _no_id, "format", "message_missing_key"),
    ("no consecutive assistant messages", _structured, _two_assistants, "consecutive_assistant",
     "consecutive_assistant_messages"),
    ("ends with an answer", _structured, _drop_final, "no_final_answer", "no_final_answer"),
    ("the answer is text", _structured, _final_is_call, "no_final_answer", "tool_call_id_unanswered"),
    ("parallel calls only when allowed", _parallel, _no_parallel, "parallel", "parallel_tool_calls_not_allowed"),
    ("weight is 0 or 1", _structured, _weight(2), "format", "bad_weight"),
    ("weight only on assistant", _structured, _weight(0, "user"), "format", "bad_weight"),
    ("something is trained", _structured, _nothing_trained, "nothing_trained", "example_missing_assistant_message"),
    ("assistant has content or calls", _structured, _null_content, "format", "missing_content"),
    ("tool_calls only on assistant", _structured, _calls_on_user, "format", "bad_tool_calls"),
    ("known message keys", _structured, _unknown_key, "format", "message_unrecognized_key"),
    ("known top-level keys", _structured, _unknown_top_key, "format", "unrecognized_top_level_key"),
]


@pytest.mark.parametrize(("rule", "which", "mutate", "reference", "reason"), RULES, ids=[r[0] for r in RULES])
def test_a_line_breaking_one_rule_is_rejected_by_both(run: tuple[Any, Path], rule: str, which: Any, mutate: Any,
                                                       reference: str, reason: str) -> None:
    line = _first(read_lines(run[1]), which)
    assert reference_problems(line) == set() and lint_reasons(line) == set()
    mutate(line)
    assert reference in reference_problems(line), rule
    assert reason in lint_reasons(line), rule


def test_the_config_schemas_apply_when_given(run: tuple[Any, Path], tmp_path: Path) -> None:
    config, out = run
    line = _first(read_lines(out), _structured)
    # the line's own tools say anything goes; the config's input_schema still decides
    for tool in line["tools"]:
        tool["function"]["parameters"] = {"type": "object"}
    _set_arguments('{"invoice_id": "204518"}')(line)
    assert lint_reasons(line) == set()
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    assert lint_file(path, config).by_reason() == {"arguments_schema": 1}


# -- reading the teacher's tool calls strictly -------------------------------------------------------------------------


def _call(name: str, arguments: Any, call_id: str = "call_x") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (TeacherReply(text=None, tool_calls=[_call("lookup_invoice", '{"invoice_id": "INV-1')]), "invalid_arguments"),
        (TeacherReply(text=None, tool_calls=[_call("lookup_invoice", '{"invoice_id": "INV-204518", '
                                                   '"invoice_id": "INV-204519"}')]), "invalid_arguments"),
        (TeacherReply(text=None, tool_calls=[_call("lookup_invoice", '"INV-204518"')]), "invalid_arguments"),
        (TeacherReply(text=None, tool_calls=[_call("lookup_invoice", '{"invoice_id": "inv-1"}')]), "arguments_schema"),
        (TeacherReply(text=None, tool_calls=[_call("search_docs", '{"query": "BM25"}')]), "arguments_schema"),
        (TeacherReply(text=None, tool_calls=[_call("refund", "{}")]), "unknown_action"),
        (TeacherReply(text=None, tool_calls=[_call("search_docs", '{"input": "a"}', "1"),
                                             _call("search_docs", '{"input": "b"}', "2")]),
         "parallel_tool_calls_not_allowed"),
        (TeacherReply(text="  "), "empty_answer"),
        (TeacherReply(text="The answer is", finish_reason="length"), "truncated"),
    ],
    ids=["truncated-json", "duplicate-key", "not-an-object", "pattern", "wrong-key", "unknown-tool", "parallel",
         "empty", "length"],
)
def test_teacher_replies_are_read_strictly(reply: TeacherReply, reason: str) -> None:
    fmt = OpenAIToolsFormat(support_config(parallel=False))
    reading = fmt.read(reply)
    assert not reading.ok and reading.reason == reason, reading.detail
    kept = json.dumps({"content": reply.text, "tool_calls": reply.tool_calls}, ensure_ascii=False)
    assert reading.raw == (kept if reply.tool_calls else reply.text)  # the raw answer goes to rejected.jsonl


def test_parallel_calls_become_steps_with_their_ids_and_structured_arguments_canonical_text() -> None:
    fmt = OpenAIToolsFormat(support_config(parallel=True))
    reading = fmt.read(TeacherReply(text=None, finish_reason="tool_calls", tool_calls=[
        _call("search_docs", '{"input": "refund policy"}', "call_a"),
        _call("lookup_invoice", '{"invoice_id":"INV-204518","include_lines":null}', "call_b"),
    ]))
    assert reading.ok and not reading.final
    a, b = reading.steps
    assert (a.action, a.action_input, a.call_id, a.parallel) == ("search_docs", "refund policy", "call_a", False)
    assert (b.action, b.call_id, b.parallel) == ("lookup_invoice", "call_b", True)
    assert b.action_input == '{"invoice_id": "INV-204518", "include_lines": null}'
    assert json.loads(a.raw)["tool_calls"][1]["id"] == "call_b"


# -- real-world schemas --------------------------------------------------------------------------------------------------

REAL_WORLD = {
    "type": "object",
    "$defs": {"address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": ["string", "null"]}},
                          "required": ["city"]}},
    "properties": {
        "name": {"type": ["string", "null"]},
        "kind": {"enum": ["home", "work"]},
        "where": {"$ref": "#/$defs/address"},
        "contact": {"anyOf": [{"type": "string", "format": "email"}, {"type": "integer", "minimum": 0}]},
        "tags": {"type": "array", "items": {"type": "object", "properties": {"label": {"type": "string"}},
                                           "required": ["label"]}},
    },
    "required": ["kind", "where"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("arguments", "ok"),
    [
        ({"name": None, "kind": "home", "where": {"city": "Lyon", "zip": None}}, True),
        ({"kind": "work", "where": {"city": "Oslo"}, "contact": 7, "tags": [{"label": "vip"}]}, True),
        ({"kind": "work", "where": {"city": "Oslo"}, "contact": "a@b.example"}, True),
        ({"kind": "office", "where": {"city": "Oslo"}}, False),  # enum
        ({"kind": "home", "where": {"zip": "0150"}}, False),  # $defs: city required
        ({"kind": "home", "where": {"city": "Oslo"}, "contact": -1}, False),  # anyOf
        ({"kind": "home", "where": {"city": "Oslo"}, "name": 3}, False),  # nullable string
        ({"kind": "home", "where": {"city": "Oslo"}, "tags": [{}]}, False),  # nested object
    ],
)
def test_real_world_schemas_load_and_check_arguments(arguments: dict[str, Any], ok: bool) -> None:
    tool = {"name": "save_contact", "kind": "simulated", "description": "Saves a contact.", "input_schema": REAL_WORLD,
            "output_schema": {"type": "object", "properties": {"saved": {"type": "boolean"}}}}
    fmt = OpenAIToolsFormat(support_config(tools=[SUPPORT["tools"][0], tool]))
    assert fmt.tools[1]["function"]["parameters"] == REAL_WORLD
    reading = fmt.read(TeacherReply(text=None, tool_calls=[_call("save_contact", json.dumps(arguments))]))
    assert reading.ok is ok, reading.detail
    assert ok or reading.reason == "arguments_schema"


def test_a_bare_yaml_null_in_a_type_list_is_a_config_error_with_the_fix() -> None:
    tool = yaml.safe_load("name: t\nkind: simulated\ndescription: d\noutput_schema: {type: object}\n"
                          "input_schema: {type: object, properties: {a: {type: [string, null]}}}\n")
    with pytest.raises(ConfigError) as err:
        support_config(tools=[SUPPORT["tools"][0], tool])
    assert "tools[1]" in str(err.value) and 'quote it, e.g. [string, "null"]' in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "search docs"}, "tools[0].name: 'search docs' is not a valid function name"),
        ({"kind": "retriever", "input_schema": {"type": "object"}}, "a retriever takes one string query"),
    ],
)
def test_tool_config_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    tools = copy.deepcopy(SUPPORT["tools"])
    tools[0].update(change)
    with pytest.raises(ConfigError) as err:
        support_config(tools=tools)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"output_schema": None, "examples": []}, "needs output_schema or examples with an output"),
        ({"examples": [{"question": "q?", "input": "INV-204518"}]}, "examples[0].input must be a mapping"),
        ({"examples": [{"question": "q?", "input": {"invoice_id": "1"}}]}, "examples[0].input does not satisfy"),
        ({"examples": [{"question": "q?", "input": {"invoice_id": "INV-204518"}, "output": {"status": "paid"}}]},
         "examples[0].output does not satisfy output_schema"),
    ],
)
def test_simulated_tool_config_errors(change: dict[str, Any], message: str) -> None:
    tools = copy.deepcopy(SUPPORT["tools"])
    tools[2].update(change)
    with pytest.raises(ConfigError) as err:
        support_config(tools=tools)
    assert "tools[2]" in str(err.value) and message in str(err.value)


# -- simulated tools ---------------------------------------------------------------------------------------------------


def test_simulated_observations_are_marked_counted_and_satisfy_the_output_schema(run: tuple[Any, Path]) -> None:
    config, out = run
    trajectories = [t for t in load_trajectories(out) if t.outcome == "accepted"]
    simulated = [(t, s) for t in trajectories for turn in t.turns for s in turn.steps if s.simulated]
    assert simulated and all(s.action in ("lookup_invoice", "open_ticket") for _, s in simulated)
    for t, step in simulated:
        assert t.meta["simulated_calls"] == sum(s.simulated for turn in t.turns for s in turn.steps)
        output = json.loads(step.observation)
        assert jsonschema.Draft202012Validator(config.tool(step.action).output_schema).is_valid(output)
        if step.action == "lookup_invoice":  # the call's invoice id is echoed back
            assert output["invoice_id"] == json.loads(step.action_input)["invoice_id"]
    assert not any(s.simulated for t in trajectories for turn in t.turns for s in turn.steps
                   if s.action in ("search_docs", "calculator"))
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    by_tool: dict[str, int] = {}
    for _, step in simulated:
        by_tool[step.action] = by_tool.get(step.action, 0) + 1
    assert manifest["simulated_tools"] == {
        "conversations": len({t.id for t, _ in simulated}), "calls": len(simulated), "by_tool": by_tool}


def test_offline_simulation_is_deterministic(run: tuple[Any, Path], tmp_path: Path) -> None:
    config, out = run
    generate(config, tmp_path / "again", progress=False)
    assert (tmp_path / "again" / "trajectories.jsonl").read_text() == (out / "trajectories.jsonl").read_text()


def _support_script(parallel_ids: tuple[str, str] = ("call_a", "call_b")) -> Any:
    """A scripted teacher for the support agent: questions, then (per question) calls, then an answer."""
    def script(body: dict[str, Any]) -> Any:
        from tests.fake_openai import FakeResponse, chat_completion

        if body.get("response_format", {}).get("json_schema", {}).get("name") == "questions":
            return json.dumps({"questions": ["Has invoice INV-204518 been paid, and what do the docs say about BM25?"]})
        if body.get("response_format"):  # a simulated tool's output
            return json.dumps({"invoice_id": "INV-204518", "status": "paid", "refund_eligible": True,
                               "total": {"amount": 249.0, "currency": "USD"}, "due_date": "2026-03-01"})
        if body["messages"][-1]["role"] == "tool":
            return "INV-204518 is paid; BM25 ranks passages by the query's terms."
        calls = [_call("lookup_invoice", '{"invoice_id": "INV-204518"}', parallel_ids[0]),
                 _call("search_docs", '{"input": "BM25"}', parallel_ids[1])]
        return FakeResponse(json=chat_completion(None, tool_calls=calls, finish_reason="tool_calls"))
    return script


def test_openai_teacher_sends_tools_and_the_simulation_request(fake_openai, tmp_path: Path) -> None:
    fake_openai.chat_script = _support_script()
    config = support_config(conversations=2, provider="openai", mix={"tool": 1.0, "direct": 0.0, "multi_turn": 0.0})
    result = generate(config, tmp_path / "run", progress=False)
    assert result.conversations["accepted"] == 2
    bodies = [r.json() for r in fake_openai.requests_to("/chat/completions")]
    steps = [b for b in bodies if "tools" in b]
    simulations = [b for b in bodies if b.get("response_format", {}).get("json_schema", {}).get("name")
                   == "lookup_invoice_output"]
    assert len(steps) == 4 and len(simulations) == 2  # per conversation: calls, answer; one simulated call
    assert all(b["parallel_tool_calls"] is True and "stop" not in b for b in steps)
    assert steps[0]["tools"] == OpenAIToolsFormat(config).tools
    second = next(b["messages"] for b in steps if b["messages"][-1]["role"] == "tool")  # conversations interleave
    assert [m["role"] for m in second[-4:]] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in second[-2:]] == ["call_1", "call_2"]
    assert json.loads(second[-2]["content"])["status"] == "paid"
    simulation = simulations[0]
    assert simulation["response_format"]["json_schema"]["schema"] == config.tool("lookup_invoice").output_schema
    assert '{"invoice_id": "INV-204518"}' in simulation["messages"][1]["content"]
    assert "Has invoice INV-204518 been paid" in simulation["messages"][1]["content"]
    for line in read_lines(tmp_path / "run"):
        assert reference_problems(line) == set() and lint_reasons(line) == set()


def test_an_off_schema_simulated_output_rejects_the_conversation_with_raw_text(fake_openai, tmp_path: Path) -> None:
    script = _support_script()

    def bad_simulation(body: dict[str, Any]) -> Any:
        if body.get("response_format", {}).get("json_schema", {}).get("name") == "lookup_invoice_output":
            return json.dumps({"invoice_id": "INV-204518", "status": "lost"})
        return script(body)

    fake_openai.chat_script = bad_simulation
    config = support_config(conversations=1, provider="openai", mix={"tool": 1.0, "direct": 0.0, "multi_turn": 0.0})
    result = generate(config, tmp_path / "run", progress=False)
    assert result.conversations == {"requested": 1, "accepted": 0, "rejected": 1, "failed": 0}
    rejected = json.loads(result.rejected.read_text(encoding="utf-8").splitlines()[0])
    assert rejected["reason"] == "simulated_output" and '"status": "lost"' in rejected["raw"]


def test_request_keys_include_tools_and_keep_langchain_keys() -> None:
    base = TeacherRequest(stage="rollout", messages=[{"role": "user", "content": "hi"}], params={"seed": 1})
    legacy = json.dumps({"model": "m", "messages": base.messages, "params": base.params, "response_format": None},
                        sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    import hashlib

    assert base.key("m") == hashlib.sha256(legacy.encode()).hexdigest()
    with_tools = TeacherRequest(stage="rollout", messages=base.messages, params=base.params,
                                tools=[{"type": "function", "function": {"name": "a"}}], parallel_tool_calls=False)
    other = TeacherRequest(stage="rollout", messages=base.messages, params=base.params,
                           tools=[{"type": "function", "function": {"name": "b"}}], parallel_tool_calls=False)
    assert len({base.key("m"), with_tools.key("m"), other.key("m")}) == 3
