"""One trajectory, many renderings: the same stored trajectories render in both agent formats, switching
`agent.format` on a finished run re-exports with zero teacher calls, and LangChain lines rendered from trajectories
generated in the openai-tools format still pass the LangChain runtime-parity replay."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.agent.tools import ToolBox
from distill.cli import main
from distill.config import load_config
from distill.formats.langchain_actions import render_action
from distill.generation.index import ChunkIndex
from distill.generation.pipeline import generate, load_trajectories, reexport
from distill.validation.lint import lint_file
from tests.fake_openai import FakeResponse, chat_completion
from tests.test_openai_tools import SUPPORT, lint_reasons, read_lines, reference_problems, support_config
from tests.test_parity import replay_and_compare

_FORMAT_ONLY = {"raw", "call_id"}  # what a step records of the format it was generated in


def _canonical(run: Path) -> list[dict[str, Any]]:
    out = []
    for t in load_trajectories(run):
        record = t.model_dump()
        record["meta"].pop("format")
        for turn in record["turns"]:
            for step in turn["steps"]:
                for key in _FORMAT_ONLY:
                    step.pop(key)
        out.append(record)
    return out


def test_the_same_trajectories_render_in_both_formats(tmp_path: Path) -> None:
    chat = support_config(fmt="langchain-chat", parallel=False, conversations=40, seed=5)
    tools = support_config(fmt="openai-tools", parallel=False, conversations=40, seed=5)
    generate(chat, tmp_path / "chat", progress=False)
    generate(tools, tmp_path / "tools", progress=False)
    # the canonical record does not depend on the format the teacher played
    assert _canonical(tmp_path / "chat") == _canonical(tmp_path / "tools")
    simulated = [s for t in load_trajectories(tmp_path / "chat") for turn in t.turns for s in turn.steps if s.simulated]
    assert simulated and all(json.loads(s.action_input) for s in simulated)  # structured inputs as JSON text

    # each run re-rendered in the other format is line for line the other run's export
    for run, other, config in (("chat", "tools", tools), ("tools", "chat", chat)):
        copy = tmp_path / f"{run}-as-{other}"
        shutil.copytree(tmp_path / run, copy)
        reexport(config, copy)
        for name in ("train.jsonl", "validation.jsonl", "rejected.jsonl"):
            assert (copy / name).read_text() == (tmp_path / other / name).read_text(), (run, name)

    chat_lines, tools_lines = read_lines(tmp_path / "chat"), read_lines(tmp_path / "tools")
    assert len(chat_lines) == len(tools_lines) > 30
    for a, b in zip(chat_lines, tools_lines, strict=True):
        assert "tools" not in a and a["messages"][-1]["content"].startswith("```json")
        assert b["tools"] and b["parallel_tool_calls"] is False
        assert a["messages"][0]["content"] == b["messages"][0]["content"] == SUPPORT["agent"]["system_prompt"]
    for line in tools_lines:
        assert reference_problems(line) == set() and lint_reasons(line) == set()
    for name in ("train.jsonl", "validation.jsonl"):
        assert lint_file(tmp_path / "chat" / name, chat).ok
        assert lint_file(tmp_path / "tools" / name, tools).ok


def _scripted_teacher() -> Any:
    """Questions alternate between one needing two tools at once and one needing a single search."""
    questions = itertools.cycle(["Has invoice INV-204518 been paid, and what do the docs say about BM25?",
                                 "What do the docs say about BM25 ranking?"])

    def script(body: dict[str, Any]) -> Any:
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("name")
        if schema == "questions":
            return json.dumps({"questions": [next(questions)]})
        if schema == "lookup_invoice_output":
            return json.dumps({"invoice_id": "INV-204518", "status": "paid", "refund_eligible": True,
                               "total": {"amount": 249.0, "currency": "USD"}, "due_date": "2026-03-01"})
        messages = body["messages"]
        if messages[-1]["role"] == "tool":
            return "According to the documentation, BM25 ranks passages by the query's terms."
        calls = [{"id": "call_s", "type": "function", "function": {"name": "search_docs", "arguments": '{"input": "BM25"}'}}]
        if "INV-" in messages[-1]["content"]:
            calls.insert(0, {"id": "call_i", "type": "function",
                             "function": {"name": "lookup_invoice", "arguments": '{"invoice_id": "INV-204518"}'}})
        return FakeResponse(json=chat_completion(None, tool_calls=calls, finish_reason="tool_calls"))

    return script


def _write(config_data: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(config_data, sort_keys=False), encoding="utf-8")
    return path


def test_switching_the_format_of_a_run_reexports_with_zero_teacher_calls(
    fake_openai, configs_on_path, tmp_path: Path, capsys
) -> None:
    fake_openai.chat_script = _scripted_teacher()
    data = support_config(provider="openai", conversations=6,
                          mix={"tool": 1.0, "direct": 0.0, "multi_turn": 0.0}).model_dump(mode="json", exclude_defaults=True)
    tools_yaml = _write(data, tmp_path / "support_tools.yaml")
    data["agent"]["format"] = "langchain-chat"
    chat_yaml = _write(data, tmp_path / "support_chat.yaml")
    run = tmp_path / "run"
    result = generate(load_config(tools_yaml), run, progress=False)
    assert result.conversations["accepted"] == 6
    native = {name: (run / name).read_text() for name in ("train.jsonl", "validation.jsonl")}
    sent = len(fake_openai.requests)

    assert main(["export", str(chat_yaml), "--run", str(run)]) == 0
    assert len(fake_openai.requests) == sent  # no teacher call
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["agent_format"] == "langchain-chat"
    assert manifest["conversations"] == {"requested": 6, "accepted": 3, "rejected": 3, "failed": 0}
    assert manifest["rejects_by_reason"] == {"format_dependent": 3}  # the parallel calls have no LangChain form
    rejected = [json.loads(line) for line in (run / "rejected.jsonl").read_text().splitlines()]
    assert all("parallel tool calls" in r["detail"] for r in rejected)
    lines = read_lines(run)
    # the scripted teacher answered the three alike: the same line is written once (issue 16 item 9)
    assert len(lines) + manifest["duplicates"]["lines"]["dropped"] == 3
    assert all(line["messages"][-1]["content"].startswith("```json") for line in lines)
    assert all("TOOLS\n------" in line["messages"][1]["content"] for line in lines)
    for name in ("train.jsonl", "validation.jsonl"):
        assert lint_file(run / name, load_config(chat_yaml)).ok

    assert main(["export", str(tools_yaml), "--run", str(run)]) == 0  # and back: the original export, exactly
    assert len(fake_openai.requests) == sent
    assert {name: (run / name).read_text() for name in native} == native
    assert "re-exported with no teacher call" in capsys.readouterr().out


def test_langchain_lines_of_openai_tools_trajectories_pass_the_runtime_replay(tmp_path: Path) -> None:
    string_tools = SUPPORT["tools"][:2]  # the replay runs the real tools: search and the calculator
    tools = support_config(fmt="openai-tools", parallel=False, conversations=30, seed=4, follow_ups=2,
                           tools=string_tools)
    generate(tools, tmp_path / "run", progress=False)
    chat = support_config(fmt="langchain-chat", parallel=False, conversations=30, seed=4, follow_ups=2,
                          tools=string_tools)
    chat.agent.memory_window = 1  # earlier turns fall out of the window: history differs per turn
    chat.agent.system_prompt = None  # the replay's agent uses LangChain's own PREFIX
    reexport(chat, tmp_path / "run")

    out = tmp_path / "run"
    toolbox = ToolBox(chat, ChunkIndex.load(out / "index"))
    examples = read_lines(out)
    trajectories = [t for t in load_trajectories(out) if t.outcome == "accepted"]
    assert {t.kind for t in trajectories} == {"tool", "direct", "multi_turn"}
    assert all(t.meta["format"] == "openai-tools" for t in trajectories)
    checked = replay_and_compare(chat, toolbox, trajectories, examples)
    assert checked > 40


def _turn(question: str, answer: str, steps: list[Any]) -> Any:
    from distill.trajectory import Step, Turn

    final = Step(action="Final Answer", action_input=answer, raw="")
    return Turn(question=question, steps=[*(Step(**s) for s in steps), final])


@pytest.mark.parametrize("system_prompt", [None, "You help with ünïcode.\n\nSay \"hi\" \\ first."])
def test_the_prompt_frame_renders_what_langchain_renders(make_config, system_prompt: str | None) -> None:
    """The langchain-chat messages assembled from the prompt's frame (system, text around the input, the tool
    response's text around the observation) equal LangChain's own rendering of every call, whatever the history
    and the input hold."""
    from distill.formats.langchain_chat import LangChainChatFormat

    agent = {"format": "langchain-chat", "memory_window": 2, **({"system_prompt": system_prompt} if system_prompt
                                                                 else {})}
    fmt = LangChainChatFormat(make_config(agent=agent))
    assert fmt._frame is not None and fmt._response is not None
    search = {"action": "Vector Search Tool", "action_input": 'q "x"', "raw": "", "observation": "['a {b}', 'c\\n']"}
    turns = [
        _turn("What is {input}?", "It is {x}.", [search]),
        _turn("Ünï\ncodé \u2028 </s>", "", [search, {**search, "observation": None}]),
        _turn("And then?", "Done \\ \" '", []),
        _turn("Last one", "ok", [search]),
    ]
    checked = 0
    for i, turn in enumerate(turns):
        for k in range(len(turn.steps)):
            got = fmt.messages_for_step(turns[:i], turn.question, turn.steps[:k])
            base = fmt._base_rendered(turns[:i], turn.question)
            scratch = [m for s in turn.steps[:k] for m in (
                {"role": "assistant", "content": render_action(s.action, s.action_input)},
                {"role": "user", "content": fmt.template_tool_response.format(observation=s.observation)})]
            assert got == base + scratch
            checked += 1
        line = fmt.render_turn(turns[:i], turn)["messages"]
        assert [m.get("weight") for m in line[1:-1] if m["role"] == "assistant" and "weight" in m] == \
            [0] * min(i, 2)
    assert checked == 8
