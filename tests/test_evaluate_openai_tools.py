"""`distill eval` with `agent.format: openai-tools`: scripted tool-calling students behind the fake server.

Each scripted model answers with native `tool_calls` (or text) and the figures are known in advance; they mean what
they mean for langchain-chat (tests/test_evaluate.py): format adherence, valid tool choice, arguments validity,
completion, tool use where the reference used a tool, answer F1. The requests carry the format's `tools` and
`parallel_tool_calls` and no `stop`; the model's own calls (ids, argument text) go back with `tool` messages whose
ids match.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import distill
from distill.agent.tools import ToolBox
from distill.config import config_from_dict
from distill.formats.openai_tools import OpenAIToolsFormat
from distill.generation.index import ChunkIndex
from distill.generation.pipeline import generate
from tests.conftest import ANSWER, BASE_CONFIG, REPO
from tests.fake_openai import FakeResponse, chat_completion
from tests.test_evaluate import _m

SEARCH_ARGS = '{ "input":"BM25" }'  # valid, not canonical: it must go back to the model as written


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _calls(*calls: dict[str, Any]) -> FakeResponse:
    return FakeResponse(json=chat_completion(None, tool_calls=list(calls), finish_reason="tool_calls"))


def _after_tool(body: dict[str, Any]) -> bool:
    return body["messages"][-1]["role"] == "tool"


SCRIPTS: dict[str, Any] = {
    "calls-then-answers": lambda b: ANSWER if _after_tool(b) else _calls(_call("call_abc", "search_docs", SEARCH_ARGS)),
    "bad-json": lambda b: _calls(_call("call_x", "search_docs", '{"input": "BM25"')),
    "unknown-function": lambda b: _calls(_call("call_y", "web_search", '{"input": "BM25"}')),
    "bad-schema": lambda b: _calls(_call("call_z", "calculator", '{"input": "two plus two"}')),
    "plain-text": lambda b: ANSWER,
    "parallel": lambda b: ANSWER if _after_tool(b) else _calls(
        _call("p1", "search_docs", '{"input": "BM25"}'), _call("p2", "search_docs", '{"input": "ranking"}')
    ),
}


def _route(body: dict[str, Any]) -> FakeResponse | str:
    return SCRIPTS[body["model"]](body)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A small offline run generated in the openai-tools format (function-name tools, parallel calls allowed)."""
    data = copy.deepcopy(BASE_CONFIG)
    data["agent"] = {"format": "openai-tools", "max_steps": 3, "memory_window": 5, "parallel_tool_calls": True}
    data["tools"] = [
        {"name": "search_docs", "description": "Searches the documents.", "kind": "retriever", "top_k": 3},
        {"name": "calculator", "description": "Evaluates arithmetic.", "kind": "python",
         "function": "agent_tools:calculate", "input_schema": {"type": "string", "pattern": "^[0-9+*/(). -]+$"}},
    ]
    data["teacher"] = {"provider": "offline", "max_retries": 0}
    data["generation"] = {"conversations": 16, "seed": 1, "mix": {"tool": 0.6, "direct": 0.2, "multi_turn": 0.2}}
    config = config_from_dict(data, file="cfg.yaml", base_dir=REPO / "configs")
    out = tmp_path_factory.mktemp("eval-tools-run") / "run"
    generate(config, out, progress=False)
    return config, out


def test_scripted_tool_calling_models_figures_equal_the_known_values(run, questions, fake_openai, tmp_path) -> None:
    config, run_dir = run
    fake_openai.chat_script = _route
    report = distill.evaluate(config, list(SCRIPTS), run=run_dir, questions=questions, out=tmp_path / "eval")
    got = report.to_dict()["models"]
    answered = {"mean": round(11 / 12, 4), "count": 4, "answered": 4}  # F1 1, 2/3, 1, 1 (as in test_evaluate.py)
    no_answer = {"mean": 0.0, "count": 4, "answered": 0}
    expected = {  # format adherence, tool choice, arguments, completion, tool use, answer F1
        "calls-then-answers": (_m(8, 8), _m(8, 8), _m(8, 8), _m(4, 4), _m(3, 3), answered),
        # the function is known, its arguments are not JSON: a valid choice with invalid arguments
        "bad-json": (_m(0, 4), _m(4, 4), _m(0, 4), _m(0, 4), _m(0, 3), no_answer),
        "unknown-function": (_m(0, 4), _m(0, 4), _m(0, 0), _m(0, 4), _m(0, 3), no_answer),
        "bad-schema": (_m(0, 4), _m(4, 4), _m(0, 4), _m(0, 4), _m(0, 3), no_answer),
        # a plain text answer is a valid final answer: adherent and complete, but no tool where the reference used one
        "plain-text": (_m(4, 4), _m(4, 4), _m(4, 4), _m(4, 4), _m(0, 3), answered),
        "parallel": (_m(8, 8), _m(8, 8), _m(8, 8), _m(4, 4), _m(3, 3), answered),
    }
    keys = ["format_adherence", "tool_choice", "action_input", "completion", "tool_use", "answer_f1"]
    for model, figures in expected.items():
        assert {k: got[model]["metrics"][k] for k in keys} == dict(zip(keys, figures, strict=True)), model
    assert {m: got[m]["failures_by_reason"] for m in SCRIPTS} == {
        "calls-then-answers": {}, "bad-json": {"invalid_arguments": 4}, "unknown-function": {"unknown_action": 4},
        "bad-schema": {"arguments_schema": 4}, "plain-text": {}, "parallel": {},
    }
    assert len(fake_openai.requests_to("/chat/completions")) == 8 + 4 + 4 + 4 + 4 + 8

    bad = report.models["unknown-function"].transcripts[0].steps[0]
    assert (bad.action, bad.known_action) == ("web_search", False) and "web_search" in bad.detail
    assert json.loads(bad.raw)["tool_calls"][0]["function"]["name"] == "web_search"
    both = report.models["parallel"].transcripts[0].steps[0]
    assert both.action == "search_docs, search_docs"
    assert [(c["id"], c["action_input"]) for c in both.calls] == [("p1", "BM25"), ("p2", "ranking")]
    failures = [json.loads(x) for x in (tmp_path / "eval" / "failures" / "bad-json.jsonl").read_text().splitlines()]
    assert len(failures) == 4 and failures[0]["failure"] == "invalid_arguments"


def test_requests_carry_tools_and_the_models_own_calls_back(run, questions, fake_openai, tmp_path) -> None:
    config, run_dir = run
    fake_openai.chat_script = _route
    report = distill.evaluate(config, ["calls-then-answers", "parallel"], run=run_dir, questions=questions, n=1,
                              concurrency=1, out=tmp_path / "eval")
    fmt = OpenAIToolsFormat(config)
    toolbox = ToolBox(config, ChunkIndex.load(run_dir / "index"))
    bodies = [r.json() for r in fake_openai.requests_to("/chat/completions")]
    first, second, third, fourth = bodies
    for body in bodies:
        assert body["tools"] == fmt.tools and body["parallel_tool_calls"] is True and "stop" not in body
        assert body["temperature"] == 0.0 and body["max_tokens"] == 512
    assert [t["function"]["name"] for t in first["tools"]] == ["search_docs", "calculator"]
    assert first["messages"] == fmt.messages_for_step([], "What is BM25?", [])
    # the model's call goes back as it wrote it (its id, its argument text), then the tool's answer with that id
    observation = str(toolbox.function("search_docs")("BM25"))
    assert second["messages"][:-2] == first["messages"]
    assert second["messages"][-2:] == [
        {"role": "assistant", "content": None, "tool_calls": [_call("call_abc", "search_docs", SEARCH_ARGS)]},
        {"role": "tool", "tool_call_id": "call_abc", "content": observation},
    ]
    assert report.models["calls-then-answers"].transcripts[0].steps[0].observation == observation
    # parallel calls: every call runs, one tool message each, ids matching
    assert fourth["messages"][-3:] == [
        {"role": "assistant", "content": None, "tool_calls": [_call("p1", "search_docs", '{"input": "BM25"}'),
                                                               _call("p2", "search_docs", '{"input": "ranking"}')]},
        {"role": "tool", "tool_call_id": "p1", "content": observation},
        {"role": "tool", "tool_call_id": "p2", "content": str(toolbox.function("search_docs")("ranking"))},
    ]
    assert third["messages"] == first["messages"]


def test_parallel_calls_are_refused_when_the_config_forbids_them(run, questions, fake_openai, tmp_path) -> None:
    config, run_dir = run
    fake_openai.chat_script = _route
    serial = config.model_copy(update={"agent": config.agent.model_copy(update={"parallel_tool_calls": False})})
    report = distill.evaluate(serial, ["parallel", "calls-then-answers"], run=run_dir, questions=questions,
                              out=tmp_path / "eval")
    got = report.to_dict()["models"]
    assert got["parallel"]["failures_by_reason"] == {"parallel_tool_calls_not_allowed": 4}
    # not past the structure checks: no tool choice is judged
    assert got["parallel"]["metrics"]["tool_choice"] == _m(0, 0)
    assert got["calls-then-answers"]["format_adherence"] == 1.0
    assert all(r.json()["parallel_tool_calls"] is False for r in fake_openai.requests_to("/chat/completions"))


def test_held_out_questions_of_an_openai_tools_run(run, fake_openai, tmp_path) -> None:
    config, run_dir = run
    fake_openai.chat_script = _route
    report = distill.evaluate(config, ["calls-then-answers"], run=run_dir, n=None, out=tmp_path / "eval")
    transcripts = report.models["calls-then-answers"].transcripts
    assert transcripts and all(t.reference for t in transcripts)
    assert all(t.answer == ANSWER and len(t.steps) == 2 for t in transcripts)
