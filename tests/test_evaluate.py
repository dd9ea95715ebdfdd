"""`distill eval`: scripted models behind a local OpenAI-compatible server, whose figures are known in advance.

The fake server routes each request by its "model" field, so several scripted students share one endpoint:
always valid, always prose, wrong tool names, truncated blobs, valid-then-prose, schema-breaking inputs, a model that
never stops searching and a model id the endpoint does not know. Each report figure must equal the known value.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import distill
import distill.evaluation.evaluate
from distill.agent.tools import ToolBox
from distill.cli import main
from distill.config import config_from_dict
from distill.formats.langchain_actions import render_action
from distill.formats.langchain_chat import STOP_SEQUENCES, LangChainChatFormat
from distill.generation.index import ChunkIndex
from distill.generation.pipeline import generate, load_trajectories
from tests.conftest import ANSWER, BASE_CONFIG, REPO
from tests.fake_openai import FakeResponse, chat_completion

SEARCH = "Vector Search Tool"


def _is_tool_response(body: dict[str, Any]) -> bool:
    return body["messages"][-1]["content"].startswith("TOOL RESPONSE")


def _non_canonical(action: str, action_input: str) -> str:
    """A valid action written differently from the canonical blob (indent 2): the scratchpad must keep it as is."""
    return "```json\n" + json.dumps({"action": action, "action_input": action_input}, indent=2) + "\n```"


SCRIPTS: dict[str, Any] = {
    "valid": lambda b: render_action("Final Answer", ANSWER) if _is_tool_response(b) else _non_canonical(SEARCH, "BM25"),
    "prose": lambda b: "I think BM25 ranks passages.",
    "wrong-tool": lambda b: render_action("Web Search", "BM25"),
    "truncated": lambda b: FakeResponse(
        json=chat_completion('```json\n{"action": "Final Answer", "action_input": "BM25 ra', finish_reason="length")
    ),
    "valid-then-prose": lambda b: "Done: BM25." if _is_tool_response(b) else render_action(SEARCH, "BM25"),
    "bad-input": lambda b: render_action("Calculator", "two plus two"),
    "looper": lambda b: render_action(SEARCH, "BM25 again"),
    "missing": lambda b: FakeResponse(status=404, json={"error": {"message": "model not found"}}),
}


def _route(body: dict[str, Any]) -> FakeResponse | str:
    return SCRIPTS[body["model"]](body)


def _config_data(calculator: bool = True) -> dict[str, Any]:
    data = copy.deepcopy(BASE_CONFIG)
    data["teacher"] = {"provider": "offline", "max_retries": 0}
    data["generation"] = {"conversations": 30, "seed": 1, "mix": {"tool": 0.6, "direct": 0.2, "multi_turn": 0.2}}
    if calculator:
        data["tools"].append({
            "name": "Calculator", "description": "Evaluates arithmetic.", "kind": "python",
            "function": "agent_tools:calculate", "input_schema": {"type": "string", "pattern": "^[0-9+*/(). -]+$"},
        })
    return data


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A small offline run (index, trajectories, train/validation split) shared by the tests of this module."""
    config = config_from_dict(_config_data(), file="cfg.yaml", base_dir=REPO / "configs")
    out = tmp_path_factory.mktemp("eval-run") / "run"
    generate(config, out, progress=False)
    return config, out


def _m(count: int, total: int) -> dict[str, Any]:
    return {"rate": round(count / total, 4) if total else None, "count": count, "total": total}


def test_scripted_models_figures_equal_the_known_values(run, questions, fake_openai, tmp_path: Path) -> None:
    config, run_dir = run
    fake_openai.chat_script = _route
    models = list(SCRIPTS)
    report = distill.evaluate(config, models, run=run_dir, questions=questions, out=tmp_path / "eval")
    got = report.to_dict()["models"]
    # (format adherence, tool choice, action_input, completion, tool use, answer F1 mean, answered)
    no_answer = {"mean": 0.0, "count": 4, "answered": 0}
    expected = {
        # search (valid, written with indent 2), then the final answer: 8 valid steps; F1 is 1 for three references
        # and 2/3 for "BM25 ranks passages" (precision 3/6, recall 3/3).
        "valid": (_m(8, 8), _m(8, 8), _m(8, 8), _m(4, 4), _m(3, 3), {"mean": round(11 / 12, 4), "count": 4,
                                                                        "answered": 4}),
        "prose": (_m(0, 4), _m(0, 0), _m(0, 0), _m(0, 4), _m(0, 3), no_answer),
        "wrong-tool": (_m(0, 4), _m(0, 4), _m(0, 0), _m(0, 4), _m(0, 3), no_answer),
        "truncated": (_m(0, 4), _m(0, 0), _m(0, 0), _m(0, 4), _m(0, 3), no_answer),
        "valid-then-prose": (_m(4, 8), _m(4, 4), _m(4, 4), _m(0, 4), _m(3, 3), no_answer),
        "bad-input": (_m(0, 4), _m(4, 4), _m(0, 4), _m(0, 4), _m(0, 3), no_answer),
        "looper": (_m(12, 12), _m(12, 12), _m(12, 12), _m(0, 4), _m(3, 3), no_answer),
        "missing": (_m(0, 0), _m(0, 0), _m(0, 0), _m(0, 4), _m(0, 3), no_answer),
    }
    keys = ["format_adherence", "tool_choice", "action_input", "completion", "tool_use", "answer_f1"]
    for model, figures in expected.items():
        assert {k: got[model]["metrics"][k] for k in keys} == dict(zip(keys, figures, strict=True)), model
        assert got[model]["format_adherence"] == figures[0]["rate"], model
    reasons = {m: got[m]["failures_by_reason"] for m in models}
    assert callable(distill.evaluate)  # still the API function once the evaluation module is imported
    assert reasons == {
        "valid": {},
        "prose": {"no_json_block": 4},
        "wrong-tool": {"unknown_action": 4},
        "truncated": {"truncated": 4},
        "valid-then-prose": {"no_json_block": 4},
        "bad-input": {"action_input_schema": 4},
        "looper": {"no_final_answer": 4},
        "missing": {"http_404": 4},
    }
    assert got["missing"]["call_errors"] == {"http_404": 4}
    # 8 + 4 + 4 + 4 + 8 + 4 + 12 + 4 requests, none of them more than max_steps per question
    assert len(fake_openai.requests_to("/chat/completions")) == 48

    out = tmp_path / "eval"
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["models"]["prose"]["format_adherence"] == 0.0
    assert on_disk["questions"] == {"source": str(questions), "count": 4}
    failures = [json.loads(x) for x in (out / "failures" / "wrong-tool.jsonl").read_text().splitlines()]
    assert len(failures) == 4 and failures[0]["failure"] == "unknown_action"
    assert failures[0]["steps"][0]["raw"] == render_action("Web Search", "BM25")
    assert "Web Search" in failures[0]["steps"][0]["detail"]
    assert (out / "failures" / "valid.jsonl").read_text() == ""
    assert len((out / "transcripts" / "valid.jsonl").read_text().splitlines()) == 4
    md = (out / "report.md").read_text()
    assert "| format adherence (valid steps) | 100.0% (8/8) | 0.0% (0/4) |" in md
    assert "## truncated" in md and "`truncated`" in md


def test_over_calling_is_seen_where_no_tool_was_needed(run, questions, fake_openai, tmp_path: Path) -> None:
    """The questions file has three questions whose reference searched and one ("Hello there!") answered directly."""
    config, run_dir = run

    def judicious(body: dict[str, Any]) -> str:
        if "Hello there!" in body["messages"][-1]["content"] or _is_tool_response(body):
            return render_action("Final Answer", ANSWER)
        return render_action(SEARCH, "BM25")

    fake_openai.chat_script = lambda body: judicious(body) if body["model"] == "judicious" else _route(body)
    report = distill.evaluate(config, ["judicious", "valid", "prose"], run=run_dir, questions=questions,
                              out=tmp_path / "eval")
    got = {m: report.to_dict()["models"][m]["metrics"] for m in ("judicious", "valid", "prose")}
    # judicious answers the greeting at once; valid searches on every question; prose never gets a valid step
    assert got["judicious"]["direct_answer"] == _m(1, 1) and got["judicious"]["over_calling"] == _m(0, 1)
    assert got["valid"]["direct_answer"] == _m(0, 1) and got["valid"]["over_calling"] == _m(1, 1)
    assert got["prose"]["direct_answer"] == _m(0, 1) and got["prose"]["over_calling"] == _m(0, 1)
    assert got["judicious"]["tool_use"] == got["valid"]["tool_use"] == _m(3, 3)
    assert "| over-calling (tool not needed) | 0.0% (0/1) | 100.0% (1/1) | 0.0% (0/1) |" in report.markdown()


def test_held_out_questions_and_the_exact_runtime_messages(run, fake_openai, tmp_path: Path) -> None:
    config, run_dir = run
    fake_openai.chat_script = _route
    report = distill.evaluate(config, "valid", run=run_dir, n=None, out=tmp_path / "eval", concurrency=1)

    manifest = json.loads((run_dir / "manifest.json").read_text())
    held_out = set(manifest["split"]["validation_documents"])
    assert held_out
    reference = [t for t in load_trajectories(run_dir) if t.outcome == "accepted" and t.doc_id in held_out]
    transcripts = report.models["valid"].transcripts
    assert [(t.question, t.reference) for t in transcripts] == [(r.turns[0].question, r.turns[0].answer)
                                                                for r in reference]
    assert [t.reference_used_tool for t in transcripts] == [r.kind != "direct" for r in reference]
    train_text = (run_dir / "train.jsonl").read_text()
    assert all(json.dumps(t.question)[1:-1] not in train_text for t in transcripts if len(t.question) > 30)

    # Exactly what LangChain's agent sends: the rendered prompt, its stop sequences, and a scratchpad holding the
    # model's own raw output (action.log) and the real tool's observation.
    fmt = LangChainChatFormat(config)
    toolbox = ToolBox(config, ChunkIndex.load(run_dir / "index"))
    bodies = [r.json() for r in fake_openai.requests_to("/chat/completions")]
    first, second = bodies[0], bodies[1]
    question = transcripts[0].question
    assert first["messages"] == fmt.messages_for_step([], question, [])
    assert first["stop"] == STOP_SEQUENCES and first["temperature"] == 0.0 and first["max_tokens"] == 512
    assert second["messages"][:-2] == first["messages"]
    assert second["messages"][-2] == {"role": "assistant", "content": _non_canonical(SEARCH, "BM25")}
    observation = str(toolbox.function(SEARCH)("BM25"))
    assert observation.startswith("['") and len(observation) > 100
    assert second["messages"][-1]["content"] == fmt.template_tool_response.format(observation=observation)
    assert transcripts[0].steps[0].observation == observation


def test_max_steps_bounds_every_question(run, questions, fake_openai, tmp_path: Path) -> None:
    config, run_dir = run
    fake_openai.chat_script = _route
    config = config.model_copy(update={"agent": config.agent.model_copy(update={"max_steps": 2})})
    report = distill.evaluate(config, ["looper"], run=run_dir, questions=questions, out=tmp_path / "e")
    assert [len(t.steps) for t in report.models["looper"].transcripts] == [2, 2, 2, 2]
    assert report.to_dict()["models"]["looper"]["metrics"]["completion"] == _m(0, 4)


def test_few_shot_inserts_train_examples_after_the_system_message(run, questions, fake_openai, tmp_path: Path) -> None:
    config, run_dir = run
    fake_openai.chat_script = _route
    report = distill.evaluate(config, ["prose"], run=run_dir, questions=questions, few_shot=2, concurrency=1,
                                           out=tmp_path / "e")
    assert report.settings["few_shot"] == 2
    sent = fake_openai.requests_to("/chat/completions")[0].json()["messages"]
    fmt = LangChainChatFormat(config)
    runtime = fmt.messages_for_step([], "What is BM25?", [])
    assert sent[0] == runtime[0] and sent[-1] == runtime[-1]
    demos = sent[1:-1]
    train = [json.loads(line)["messages"] for line in (run_dir / "train.jsonl").read_text().splitlines()]
    # one tool-using example (user, tool call, TOOL RESPONSE, final answer), then one direct (user, final answer)
    assert [m["role"] for m in demos] == ["user", "assistant", "user", "assistant", "user", "assistant"]
    assert demos[:4] in [ex[1:] for ex in train] and demos[4:] in [ex[1:] for ex in train]
    assert demos[1]["content"].startswith('```json\n{\n    "action": "')
    assert '"action": "Final Answer"' in demos[5]["content"]


def _write_config(tmp_path: Path) -> Path:
    import yaml

    data = _config_data(calculator=False)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_cli_prints_the_side_by_side_table(run, questions, fake_openai, tmp_path: Path, capsys) -> None:
    _, run_dir = run
    fake_openai.chat_script = _route
    cfg = _write_config(tmp_path)
    argv = ["eval", str(cfg), "--model", "valid", "--model", "prose", "--model", "missing", "--run", str(run_dir),
            "--questions", str(questions), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["metric", "valid", "prose", "missing"]
    adherence = next(line for line in lines if line.startswith("format adherence"))
    assert adherence.split("  ")[-1].strip() == "- (0/0)"
    assert "100.0% (8/8)" in adherence and "0.0% (0/4)" in adherence
    assert "missing: 4 question(s) got no answer from the endpoint (http_404)" in captured.err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["models"]["valid"]["format_adherence"] == 1.0


def test_cli_errors_are_one_line(run, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    _, run_dir = run
    cfg = _write_config(tmp_path)
    assert main(["eval", str(cfg), "--model", "a", "--run", str(run_dir)]) == 2
    assert "OPENAI_API_KEY is not set and no --base-url" in capsys.readouterr().err
    assert main(["eval", str(cfg), "--model", "a", "--model", "a", "--run", str(run_dir)]) == 2
    assert "given twice: a" in capsys.readouterr().err
    assert main(["eval", str(cfg), "--model", "a", "--run", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"reference": "x"}\n')
    assert main(["eval", str(cfg), "--model", "a", "--run", str(run_dir), "--questions", str(bad)]) == 2
    assert 'q.jsonl:1: needs a non-empty "question"' in capsys.readouterr().err


def test_each_model_may_have_its_own_endpoint(run, questions, fake_openai, tmp_path: Path) -> None:
    from tests.fake_openai import FakeOpenAI

    config, run_dir = run
    fake_openai.chat_script = _route
    with FakeOpenAI(_route) as local:
        local_url = local.base_url
        report = distill.evaluate(config, ["valid", f"prose@{local_url}"], run=run_dir, questions=questions,
                                  out=tmp_path / "e")
        assert {r.json()["model"] for r in local.requests_to("/chat/completions")} == {"prose"}
    assert {r.json()["model"] for r in fake_openai.requests_to("/chat/completions")} == {"valid"}
    got = report.to_dict()["models"]
    assert list(got) == ["valid", "prose"]
    assert got["prose"]["base_url"] == local_url and got["valid"]["base_url"] == fake_openai.base_url
    assert (got["valid"]["format_adherence"], got["prose"]["format_adherence"]) == (1.0, 0.0)


def test_bad_options_are_errors(run, fake_openai) -> None:
    config, run_dir = run
    with pytest.raises(distill.evaluation.evaluate.EvalError, match="concurrency must be at least 1, got 0"):
        distill.evaluate(config, ["valid"], run=run_dir, concurrency=0)
    with pytest.raises(distill.evaluation.evaluate.EvalError, match="few_shot must be at least 0, got -1"):
        distill.evaluate(config, ["valid"], run=run_dir, few_shot=-1)
    assert not fake_openai.requests

