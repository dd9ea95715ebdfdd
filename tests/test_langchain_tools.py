"""`kind: langchain`: the user's own LangChain objects as tools, observed exactly as LangChain's agent observes them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tools import create_retriever_tool

from distill.agent.langchain_tools import langchain_tools
from distill.agent.tools import ToolBox
from distill.errors import ConfigError
from distill.generation.pipeline import generate, load_trajectories
from tests import lc_objects
from tests.test_parity import _recording_model

NAME, DESCRIPTION = "Docs Search", "Searches the distill docs by meaning."
RETRIEVER = {"kind": "langchain", "object": "tests.lc_objects:make_retriever", "name": NAME, "description": DESCRIPTION}


class _Observed(BaseCallbackHandler):
    def __init__(self) -> None:
        self.outputs: list[str] = []

    def on_tool_end(self, output: Any, **kwargs: Any) -> None:
        self.outputs.append(str(output))


def _langchain_replay(trajectory: Any, tools: list[Any], config: Any) -> list[str]:
    """Play a recorded conversation through LangChain's own agent with `tools`; what its tools answered."""
    from langchain_classic.agents import AgentType, initialize_agent
    from langchain_classic.memory import ConversationBufferWindowMemory

    from distill.formats.langchain_actions import render_action

    responses = [render_action(s.action, s.action_input) for turn in trajectory.turns for s in turn.steps]
    with warnings.catch_warnings():  # LangChain's deprecated agent is the runtime being matched
        warnings.simplefilter("ignore", DeprecationWarning)
        memory = ConversationBufferWindowMemory(memory_key="chat_history", k=config.agent.memory_window,
                                                return_messages=True)
        agent = initialize_agent(tools, _recording_model(responses), memory=memory, early_stopping_method="force",
                                 agent=AgentType.CHAT_CONVERSATIONAL_REACT_DESCRIPTION,
                                 max_iterations=config.agent.max_steps)
    observed = _Observed()
    for turn in trajectory.turns:
        assert agent.invoke({"input": turn.question}, config={"callbacks": [observed]})["output"] == turn.answer
    return observed.outputs


def test_retriever_over_a_vector_store_observes_what_langchains_agent_receives(make_config, tmp_path: Path) -> None:
    config = make_config(tools=[RETRIEVER], generation={"conversations": 16, "seed": 4,
                                                        "mix": {"tool": 0.6, "direct": 0.1, "multi_turn": 0.3}})
    tool = config.tools[0]
    assert tool.kind == "langchain" and tool.searches and tool.input_schema is None  # one string query
    out = tmp_path / "run"
    generate(config, out, progress=False)
    trajectories = [t for t in load_trajectories(out) if t.outcome == "accepted"]
    recorded = [[s.observation for turn in t.turns for s in turn.steps if not s.is_final] for t in trajectories]
    assert sum(map(len, recorded)) >= 8
    # LangChain's agent, given the same retriever made a tool by LangChain itself, receives the same texts.
    theirs = create_retriever_tool(lc_objects.make_retriever(), NAME, DESCRIPTION)
    for trajectory, mine in zip(trajectories, recorded, strict=True):
        assert _langchain_replay(trajectory, [theirs], config) == mine
    assert "According to the documentation" in (out / "train.jsonl").read_text(encoding="utf-8")


def test_basetools_and_factories_keep_their_schema_and_runtime_object(make_config) -> None:
    config = make_config(
        tools=[{"kind": "langchain", "object": "tests.lc_objects:word_count"},
               {"kind": "langchain", "object": "tests.lc_objects:make_word_count", "name": "Counter",
                "description": "Counts words."},
               {"kind": "langchain", "object": "tests.lc_objects:add"}],
        agent={"format": "openai-tools"},
    )
    count, counter, add = config.tools
    assert (count.name, count.description, count.input_schema) == ("word_count", "Counts the words of a text.", None)
    assert (counter.name, counter.description) == ("Counter", "Counts words.")
    assert add.structured and set(add.input_schema["properties"]) == {"a", "b"}
    box = ToolBox(config)
    assert box.run("word_count", "three little words").text == "3"
    assert box.run("add", json.dumps({"a": 2, "b": 40})).text == "42"
    runtime = langchain_tools(config, box)
    assert runtime[0] is lc_objects.word_count  # LangChain's agent gets the user's own object
    assert (runtime[1].name, runtime[1].description) == ("Counter", "Counts words.")


@pytest.mark.parametrize(("entry", "message"), [
    ({"object": "tests.lc_objects:NOT_A_TOOL"}, "is a int, not a LangChain BaseTool or BaseRetriever"),
    ({"object": "tests.lc_objects:make_retriever"}, "is a retriever; give the tool a name: and a description:"),
    ({"object": "tests.lc_objects:missing"}, "has no attribute 'missing'"),
    ({"object": "no_colon"}, 'must look like "package.module:attribute"'),
])
def test_bad_langchain_objects_are_config_errors(make_config, entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        make_config(tools=[{"kind": "langchain", **entry}])
    assert message in str(exc.value) and str(exc.value.key).startswith("tools[0]")
