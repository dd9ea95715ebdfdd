"""`distill chat`: a scripted model behind a local OpenAI-compatible server, run inside LangChain's own agent.

Checks that the tool really ran on the run's index, that actions, observations and the final answer are printed,
that memory carries earlier turns, and that `distill eval` sends a model exactly what this runtime sends it.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from langchain_classic.agents.conversational_chat.prompt import TEMPLATE_TOOL_RESPONSE

import distill
from distill.agent.tools import ToolBox
from distill.cli import main
from distill.config import config_from_dict
from distill.evaluation.chat import chat
from distill.formats.langchain_actions import render_action
from distill.generation.index import ChunkIndex
from distill.generation.pipeline import generate
from tests.conftest import BASE_CONFIG, REPO

SEARCH = "Vector Search Tool"


def _student(body: dict[str, Any]) -> str:
    """Searches once (valid JSON, written with indent 2 rather than LangChain's 4), then answers."""
    messages = body["messages"]
    if messages[-1]["content"].startswith("TOOL RESPONSE"):
        question = next(m["content"] for m in reversed(messages) if m["content"].startswith("TOOLS\n"))
        topic = "memory" if question.endswith("And memory?") else "BM25"
        return render_action("Final Answer", f"{topic} is explained in the documents.")
    return "```json\n" + json.dumps({"action": SEARCH, "action_input": "BM25 ranking"}, indent=2) + "\n```"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Path]:
    data = copy.deepcopy(BASE_CONFIG)
    data["teacher"] = {"provider": "offline", "max_retries": 0}
    data["generation"] = {"conversations": 12, "seed": 0, "mix": {"tool": 0.5, "direct": 0.25, "multi_turn": 0.25}}
    folder = tmp_path_factory.mktemp("chat")
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    config = config_from_dict(data, file=str(path), base_dir=REPO / "configs")
    generate(config, folder / "run", progress=False)
    return config, path, folder / "run"


def test_chat_question_runs_the_tool_and_prints_the_final_answer(run, fake_openai, capsys) -> None:
    config, path, run_dir = run
    fake_openai.chat_script = _student
    code = main(["chat", str(path), "--model", "student", "--run", str(run_dir), "--question", "What is BM25?"])
    out = capsys.readouterr().out
    assert code == 0, out
    observation = str(ToolBox(config, ChunkIndex.load(run_dir / "index")).function(SEARCH)("BM25 ranking"))
    bodies = [r.json() for r in fake_openai.requests_to("/chat/completions")]
    assert len(bodies) == 2 and all(b["model"] == "student" for b in bodies)
    # The tool ran on the run's index: its observation came back to the model in LangChain's TOOL RESPONSE.
    assert bodies[1]["messages"][-1]["content"] == TEMPLATE_TOOL_RESPONSE.format(observation=observation)
    assert f"> Action: {SEARCH}\n  Action Input: BM25 ranking\n  Observation: {observation[:100]}" in out
    assert out.rstrip().endswith("> Final Answer: BM25 is explained in the documents.")


def test_interactive_chat_keeps_memory(run, fake_openai) -> None:
    config, _, run_dir = run
    fake_openai.chat_script = _student
    out = io.StringIO()
    code = chat(config, "student", run=run_dir, inp=io.StringIO("What is BM25?\n\nAnd memory?\nexit\n"), out=out)
    assert code == 0
    bodies = [r.json() for r in fake_openai.requests_to("/chat/completions")]
    assert len(bodies) == 4
    history = bodies[2]["messages"][1:3]  # ConversationBufferWindowMemory: raw question, plain-text answer
    assert history == [{"role": "user", "content": "What is BM25?"},
                       {"role": "assistant", "content": "BM25 is explained in the documents."}]
    assert out.getvalue().count("> Final Answer:") == 2
    assert "> Final Answer: memory is explained in the documents." in out.getvalue()


def test_prose_and_lenient_answers_are_reported(run, fake_openai) -> None:
    config, _, run_dir = run
    fake_openai.chat_script = lambda body: "I do not know."
    out = io.StringIO()
    assert chat(config, "student", run=run_dir, question="What is BM25?", out=out) == 1
    assert "! the model's answer is not an agent action" in out.getvalue()

    # LangChain's parser accepts prose around the block; the strict validator's verdict is shown alongside.
    fake_openai.chat_script = lambda body: "Sure!\n" + render_action("Final Answer", "Hi.")
    out = io.StringIO()
    assert chat(config, "student", run=run_dir, question="Hello", out=out) == 0
    assert "(strict validator: text_outside_block" in out.getvalue()
    assert "> Final Answer: Hi." in out.getvalue()


def test_eval_sends_exactly_what_the_langchain_runtime_sends(run, fake_openai, tmp_path: Path) -> None:
    config, _, run_dir = run
    fake_openai.chat_script = _student
    question = "What is BM25?"
    assert chat(config, "student", run=run_dir, question=question, out=io.StringIO()) == 0
    runtime = [r.json() for r in fake_openai.requests_to("/chat/completions")]
    fake_openai.requests.clear()
    questions = tmp_path / "q.txt"
    questions.write_text(question + "\n")
    distill.evaluate(config, ["student"], run=run_dir, questions=questions, out=tmp_path / "eval")
    evaluated = [r.json() for r in fake_openai.requests_to("/chat/completions")]
    assert len(runtime) == len(evaluated) == 2
    for lc, ours in zip(runtime, evaluated, strict=True):
        assert ours["messages"] == lc["messages"]
        assert ours["stop"] == lc["stop"]
