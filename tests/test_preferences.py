"""Preference pairs (`export.preferences`): OpenAI's preference format, the exact step prompt, the split, the linter.

The reference checker below is written from OpenAI's published preference fine-tuning format (the
`FineTunePreferenceRequestInput` line of `method: dpo`): `input` holds `messages` (Chat Completions messages) and
optionally `tools` and `parallel_tool_calls`; `preferred_output` and `non_preferred_output` are each a list holding
one assistant message (text content, or `tool_calls` with string `arguments`). It does not use distill's linter.
Trajectories with rejected attempts are built directly here (the loop's resampling writes them the same way).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from distill.formats import get_format
from distill.generation.pipeline import generate, load_trajectories, reexport
from distill.generation.rollout import Rollout
from distill.trajectory import Attempt, Plan, Trajectory
from distill.validation.lint import lint_example, lint_file
from tests.test_openai_tools import support_config

ROLES = {"system", "user", "assistant", "tool"}


def check_openai_preference(line: Any) -> list[str]:
    """Problems of one line against OpenAI's published preference format (empty: the line is valid)."""
    problems: list[str] = []
    if not isinstance(line, dict) or set(line) != {"input", "preferred_output", "non_preferred_output"}:
        return ["top level must be exactly input, preferred_output, non_preferred_output"]
    source = line["input"]
    if not isinstance(source, dict) or "messages" not in source or set(source) - {"messages", "tools", "parallel_tool_calls"}:
        return ["input must hold messages and optionally tools, parallel_tool_calls"]
    messages = source["messages"]
    if not isinstance(messages, list) or not messages:
        problems.append("input.messages must be a non-empty list")
    for m in messages:
        if m.get("role") not in ROLES:
            problems.append(f"unknown role {m.get('role')!r}")
        if m.get("role") == "tool" and not isinstance(m.get("tool_call_id"), str):
            problems.append("tool message without tool_call_id")
        if not isinstance(m.get("content"), str) and not (m.get("role") == "assistant" and m.get("tool_calls")):
            problems.append("message content must be a string")
    if "tools" in source:
        for tool in source["tools"]:
            if tool.get("type") != "function" or not isinstance(tool.get("function", {}).get("name"), str):
                problems.append("tools entries are {type: function, function: {name, ...}}")
    if "parallel_tool_calls" in source and not isinstance(source["parallel_tool_calls"], bool):
        problems.append("parallel_tool_calls must be a boolean")
    for key in ("preferred_output", "non_preferred_output"):
        out = line[key]
        if not isinstance(out, list) or len(out) != 1:
            problems.append(f"{key} must be a list of one message")
            continue
        message = out[0]
        if message.get("role") != "assistant":
            problems.append(f"{key} must be an assistant message")
        calls = message.get("tool_calls")
        if calls:
            for call in calls:
                fn = call.get("function", {})
                if call.get("type") != "function" or not isinstance(call.get("id"), str) \
                        or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
                    problems.append(f"{key} tool call must be {{id, type: function, function: {{name, arguments}}}}")
        elif not (isinstance(message.get("content"), str) and message["content"].strip()):
            problems.append(f"{key} needs text content or tool_calls")
    if line["preferred_output"] == line["non_preferred_output"]:
        problems.append("the two outputs are the same")
    return problems


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _add_attempts(run: Path, native: bool) -> list[Trajectory]:
    """Give every accepted conversation rejected attempts: at its first step, and two at its last final answer
    (the second an empty reply, which is no message and is skipped)."""
    trajectories = load_trajectories(run)
    for t in trajectories:
        if t.outcome != "accepted":
            continue
        first = t.turns[0].steps[0]
        bad_call = {"content": None, "tool_calls": [{"id": "teacher_7", "type": "function",
                                                     "function": {"name": "search_docs", "arguments": "{\"q\": "}}]}
        raw = json.dumps(bad_call) if native and not first.is_final else "I would look that up for you."
        first.attempts.append(Attempt(raw=raw, reason="invalid_arguments" if native else "no_json_block", seed=11))
        last = t.turns[-1].steps[-1]
        last.attempts += [Attempt(raw="```json\n{\"action\": \"Final Answer\"", reason="unclosed_block", seed=12),
                          Attempt(raw="", reason="empty_answer", seed=13)]
    (run / "trajectories.jsonl").write_text("".join(t.model_dump_json() + "\n" for t in trajectories), encoding="utf-8")
    return trajectories


def _expected(config: Any, run: Path, trajectories: list[Trajectory]) -> tuple[dict[str, list[Any]], list[str]]:
    """Per split: (input messages as the runtime request holds them, preferred message) of every pair."""
    fmt = get_format(config)
    plans = {p["id"]: Plan.model_validate(p) for p in _read(run / "plans.jsonl")}
    rollout = Rollout(config=config, teacher=None, fmt=fmt, tools=None)  # type: ignore[arg-type]
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    validation_docs = set(manifest["split"]["validation_documents"])
    trained = {json.dumps(x) for name in ("train", "validation") for x in _read(run / f"{name}.jsonl")}
    out: dict[str, list[Any]] = {"train": [], "validation": []}
    for t in trajectories:
        if t.outcome != "accepted":
            continue
        lines = fmt.render(t)
        for i, turn in enumerate(t.turns):
            line = lines[i]
            assert json.dumps(line) in trained  # the training step these pairs belong to is in the dataset
            for k, step in enumerate(turn.steps):
                usable = [a for a in step.attempts if a.raw]
                if not usable:
                    continue
                request = rollout.step_request(plans[t.id], t.turns[:i], turn.question, turn.steps[:k])
                n = len(request.messages)
                unweighted = [{key: v for key, v in m.items() if key != "weight"} for m in line["messages"][:n]]
                assert json.dumps(unweighted) == json.dumps(request.messages)  # the training line's prefix, byte for byte
                split = "validation" if t.doc_id in validation_docs else "train"
                for _ in usable:
                    out[split].append((request.messages, line["messages"][n], request.tools))
    return out, sorted(validation_docs)


@pytest.mark.parametrize("native", [False, True], ids=["langchain-chat", "openai-tools"])
def test_preference_lines_are_openai_format_and_hold_the_exact_step_prompt(make_config, tmp_path: Path, native: bool) -> None:
    if native:
        base = support_config(conversations=24)
        config = base.model_copy(update={"export": base.export.model_copy(update={"preferences": True})})
    else:
        config = make_config(export={"validation_fraction": 0.3, "dedup": {"enabled": False}, "preferences": True})
    run = tmp_path / "run"
    generate(config, run, progress=False)
    trajectories = _add_attempts(run, native)
    reexport(config, run)
    expected, validation_docs = _expected(config, run, trajectories)
    assert validation_docs and expected["train"] and expected["validation"]
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    accepted = sum(t.outcome == "accepted" for t in trajectories)
    assert manifest["preferences"]["skipped"] == {"not_a_message": accepted}
    for split in ("train", "validation"):
        lines = _read(run / f"preferences.{split}.jsonl")
        assert manifest["preferences"][split] == len(lines) == len(expected[split])
        for line, (messages, preferred, tools) in zip(lines, expected[split], strict=True):
            assert check_openai_preference(line) == []
            assert json.dumps(line["input"]["messages"]) == json.dumps(messages)
            assert line["preferred_output"] == [preferred]
            assert line["input"].get("tools") == tools
            if native:
                assert line["input"]["parallel_tool_calls"] is config.agent.parallel_tool_calls
        report = lint_file(run / f"preferences.{split}.jsonl", config)
        assert report.ok, report.problems[:3]
    if native:  # a rejected tool call keeps its (broken) arguments, under the canonical id numbering
        rejected = [line["non_preferred_output"][0] for line in _read(run / "preferences.train.jsonl")]
        calls = [m["tool_calls"][0] for m in rejected if m.get("tool_calls")]
        assert calls and all(c["id"].startswith("call_") and c["function"]["arguments"] == "{\"q\": " for c in calls)


def test_preferences_off_writes_no_file(make_config, tmp_path: Path) -> None:
    generate(make_config(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "preferences.train.jsonl").exists()
    assert "preferences" not in json.loads((tmp_path / "run" / "manifest.json").read_text())


GOOD = {
    "input": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
    "preferred_output": [{"role": "assistant", "content": "Hello!"}],
    "non_preferred_output": [{"role": "assistant", "content": "I cannot help."}],
}


def _lint(line: dict[str, Any]) -> list[str]:
    return [p.reason for p in lint_example(line, tools=None, max_steps=None, model="gpt-4o-mini-2024-07-18",
                                           token_limit=None)]


def test_the_linter_checks_preference_lines_by_their_shape() -> None:
    assert check_openai_preference(GOOD) == [] and _lint(GOOD) == []
    broken = []
    two = copy.deepcopy(GOOD)
    two["non_preferred_output"].append({"role": "assistant", "content": "again"})
    broken.append((two, "bad_preference_output"))
    user = copy.deepcopy(GOOD)
    user["preferred_output"][0]["role"] = "user"
    broken.append((user, "bad_preference_output"))
    same = copy.deepcopy(GOOD)
    same["non_preferred_output"] = copy.deepcopy(same["preferred_output"])
    broken.append((same, "identical_outputs"))
    extra = copy.deepcopy(GOOD)
    extra["chosen"] = "x"
    broken.append((extra, "unrecognized_top_level_key"))
    no_input = {k: v for k, v in GOOD.items() if k != "input"} | {"input": {"messages": []}}
    broken.append((no_input, "missing_messages_list"))
    bad_role = copy.deepcopy(GOOD)
    bad_role["input"]["messages"][0]["role"] = "narrator"
    broken.append((bad_role, "unrecognized_role"))
    for line, reason in broken:
        assert check_openai_preference(line) != [], reason  # the independent checker agrees it is broken
        assert reason in _lint(line)


def test_a_preferred_tool_call_step_need_not_end_the_turn() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"bm25\"}"}}
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
    line = {
        "input": {"messages": [{"role": "user", "content": "What is BM25?"}], "tools": tools,
                  "parallel_tool_calls": False},
        "preferred_output": [{"role": "assistant", "content": None, "tool_calls": [call]}],
        "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
    }
    assert check_openai_preference(line) == [] and _lint(line) == []
    wrong = copy.deepcopy(line)
    wrong["preferred_output"][0]["tool_calls"][0]["function"]["arguments"] = "{\"q\": 3}"
    assert "arguments_schema" in _lint(wrong)
