"""Runtime parity: every trained assistant message was trained on exactly what LangChain's own agent sends.

Each accepted trajectory of a generated run is replayed through langchain-classic's
`initialize_agent(CHAT_CONVERSATIONAL_REACT_DESCRIPTION)` with `ConversationBufferWindowMemory`, a fake chat model
that records the messages it receives and answers with the recorded assistant messages, and the run's real tools
(the retriever over the run's saved index). The messages the runtime sent at every step must equal the exported
example's prefix at that step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distill.agent.tools import ToolBox
from distill.generation.index import ChunkIndex
from distill.generation.pipeline import generate, load_trajectories

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def _recording_model(responses: list[str]) -> Any:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from pydantic import Field

    class RecordingChatModel(FakeListChatModel):
        calls: list[dict[str, Any]] = Field(default_factory=list)

        def _call(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
            self.calls.append(
                {"messages": [{"role": _ROLES[m.type], "content": m.content} for m in messages], "stop": stop}
            )
            return super()._call(messages, stop, run_manager, **kwargs)

    return RecordingChatModel(responses=responses, calls=[])


def _replay(config: Any, toolbox: ToolBox, turns: list[Any], responses: list[str]) -> list[dict[str, Any]]:
    from langchain_classic.agents import AgentType, initialize_agent
    from langchain_classic.memory import ConversationBufferWindowMemory
    from langchain_core.tools import Tool

    llm = _recording_model(responses)
    tools = [Tool(name=t.name, description=t.description, func=toolbox.function(t.name)) for t in config.tools]
    memory = ConversationBufferWindowMemory(
        memory_key="chat_history", k=config.agent.memory_window, return_messages=True
    )
    agent = initialize_agent(
        tools,
        llm,
        agent=AgentType.CHAT_CONVERSATIONAL_REACT_DESCRIPTION,
        memory=memory,
        max_iterations=config.agent.max_steps,
        early_stopping_method="force",
    )
    for turn in turns:
        out = agent.invoke({"input": turn.question})
        assert out["output"] == turn.answer
    return llm.calls


def _strip_weight(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k != "weight"} for m in messages]


@pytest.fixture
def run(tmp_path: Path, make_config, calculator_tool, configs_on_path) -> tuple[Any, Path]:
    config = make_config(
        tools=[
            {"name": "Vector Search Tool", "description": "Searches the documents.", "kind": "retriever", "top_k": 2},
            calculator_tool,
        ],
        agent={"format": "langchain-chat", "max_steps": 3, "memory_window": 1},
        generation={"conversations": 60, "seed": 3, "follow_ups": 2,
                     "mix": {"tool": 0.5, "direct": 0.2, "multi_turn": 0.3}},
    )
    out = tmp_path / "run"
    generate(config, out, progress=False)
    return config, out


def test_every_trained_message_matches_the_runtime_prompt(run: tuple[Any, Path]) -> None:
    config, out = run
    toolbox = ToolBox(config, ChunkIndex.load(out / "index"))
    examples = [
        json.loads(line)
        for name in ("train", "validation")
        for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    trajectories = [t for t in load_trajectories(out) if t.outcome == "accepted"]
    kinds = {t.kind for t in trajectories}
    assert kinds == {"tool", "direct", "multi_turn"}
    assert any(len(turn.steps) >= 2 for t in trajectories for turn in t.turns), "need multi-step turns"
    assert any(len(t.turns) == 3 for t in trajectories), "need turns beyond the memory window (k=1)"

    checked_steps = replay_and_compare(config, toolbox, trajectories, examples)
    assert checked_steps > 60


def replay_and_compare(config: Any, toolbox: ToolBox, trajectories: list[Any], examples: list[dict[str, Any]]) -> int:
    """Replay each trajectory through LangChain's agent; every trained step's prompt must equal the runtime's.

    Returns the number of steps compared.
    """
    by_text = {json.dumps(_strip_weight(ex["messages"])) for ex in examples}
    checked = 0
    for trajectory in trajectories:
        # The recorded assistant messages are those of the exported examples, turn after turn.
        rendered = [ex["messages"] for ex in _examples_of(trajectory, examples)]
        responses = [m["content"] for msgs in rendered for m in msgs if m["role"] == "assistant" and "weight" not in m]
        calls = _replay(config, toolbox, trajectory.turns, responses)
        assert len(calls) == len(responses)
        i = 0
        for msgs in rendered:
            for j in [j for j, m in enumerate(msgs) if m["role"] == "assistant" and "weight" not in m]:
                assert calls[i]["messages"] == _strip_weight(msgs[:j]), f"{trajectory.id} step {i}"
                assert calls[i]["stop"] == ["\nObservation:", "\n\tObservation:"]
                checked += 1
                i += 1
        assert all(json.dumps(_strip_weight(m)) in by_text for m in rendered)
    return checked


def _examples_of(trajectory: Any, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The exported lines of a trajectory, in turn order: matched by each turn's question in its last user input."""
    found = []
    for turn in trajectory.turns:
        matches = [
            ex for ex in examples
            if any(m["role"] == "user" and m["content"].endswith("\n\n" + turn.question) for m in ex["messages"])
            and ex["messages"][-1]["content"].find(json.dumps(turn.answer, ensure_ascii=False)[1:-1]) >= 0
        ]
        assert matches, f"no exported example for {trajectory.id}: {turn.question!r}"
        found.append(matches[0])
    return found


def test_history_answers_are_weight_zero_and_every_trained_message_is_an_action(run: tuple[Any, Path]) -> None:
    _, out = run
    seen_history = 0
    for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines():
        for m in json.loads(line)["messages"]:
            if m["role"] != "assistant":
                continue
            if m.get("weight") == 0:
                seen_history += 1
                assert not m["content"].startswith("```")
            else:
                assert m["content"].startswith("```json\n{") and m["content"].endswith("}\n```")
    assert seen_history > 0
