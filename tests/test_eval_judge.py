"""`distill eval --judge`: the generation judge grades each student's final answers, next to the token F1.

Scripted students and a scripted judge share one local OpenAI-compatible server (routed by the request's model and
its response format): a student that searches and answers from what it found, one that answers at once with a
well-formatted wrong answer, one that never answers. The judge scores by what the conversation it is shown holds,
so the means per criterion are known in advance; the offline teacher's lexical judge stands in without a key.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import distill
from distill.cli import main
from distill.config import config_from_dict
from distill.evaluation.questions import EvalError
from distill.formats.langchain_actions import render_action
from distill.generation.pipeline import generate
from tests.conftest import BASE_CONFIG, REPO
from tests.fake_openai import FakeResponse, chat_completion

SEARCH = "Vector Search Tool"
WRONG = "The moon is made of green cheese."
N = 5


def _student(body: dict[str, Any]) -> str:
    model, last = body["model"], body["messages"][-1]["content"]
    if model == "wrong":
        return render_action("Final Answer", WRONG)
    if model == "prose":
        return "I would rather not use the format."
    if last.startswith("TOOL RESPONSE"):
        return render_action("Final Answer", "BM25 ranks passages by term frequency and document length.")
    return render_action(SEARCH, "BM25 ranking")


class Server:
    def __init__(self) -> None:
        self.judge_bodies: list[dict[str, Any]] = []

    def __call__(self, body: dict[str, Any]) -> FakeResponse | str:
        schema = (body.get("response_format") or {}).get("json_schema", {})
        if schema.get("name") != "verdict":
            return _student(body)
        self.judge_bodies.append(body)
        conversation = body["messages"][1]["content"]
        wrong = WRONG in conversation
        verdict = {"supported": {"score": 1 if wrong else 5, "reason": "No observation says so." if wrong else "Found."},
                   "answers": {"score": 2 if wrong else 4, "reason": "Off topic." if wrong else "Mostly."}}
        return FakeResponse(json=chat_completion(json.dumps(verdict),
                                                 usage={"prompt_tokens": 200, "completion_tokens": 20,
                                                        "total_tokens": 220}))


def _config(provider: str, **judge: Any) -> Any:
    data = copy.deepcopy(BASE_CONFIG)
    data["teacher"] = {"provider": provider, "model": "judge-model", "max_retries": 0}
    data["generation"] = {"conversations": 30, "seed": 1, "mix": {"tool": 0.8, "direct": 0.2, "multi_turn": 0.0}}
    if judge:
        data["judge"] = judge
    return config_from_dict(data, file="cfg.yaml", base_dir=REPO / "configs")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval-judge") / "run"
    generate(_config("offline"), out, progress=False)
    return out


def test_the_judge_grades_each_answer_and_a_wrong_student_shows(run, fake_openai, tmp_path: Path) -> None:
    server = Server()
    fake_openai.chat_script = server
    config = _config("openai")
    report = distill.evaluate(config, ["right", "wrong", "prose"], run=run, n=N, out=tmp_path / "eval", judge=True)
    got = report.to_dict()["models"]
    chunks = (run / "index" / "chunks.jsonl").read_text(encoding="utf-8")
    chunks = " ".join(json.loads(x)["text"] for x in chunks.splitlines())
    # both answering students are well formatted; only the judge tells them apart
    assert got["right"]["metrics"]["format_adherence"]["rate"] == got["wrong"]["metrics"]["format_adherence"]["rate"] == 1.0
    assert got["right"]["metrics"]["judge"] == {"supported": {"mean": 5.0, "count": N}, "answers": {"mean": 4.0, "count": N},
                                                "judged": N, "errors": 0, "answered": N}
    assert got["wrong"]["metrics"]["judge"] == {"supported": {"mean": 1.0, "count": N}, "answers": {"mean": 2.0, "count": N},
                                                "judged": N, "errors": 0, "answered": N}
    assert "judge" not in got["prose"]["metrics"]  # no final answer: nothing to grade (it fails completion)
    # one judge request per answered question, built by the judge module: the verdict schema on the answer criteria
    assert len(server.judge_bodies) == 2 * N
    for body in server.judge_bodies:
        assert body["model"] == "judge-model" and body["temperature"] == 0
        assert body["response_format"]["json_schema"]["schema"]["required"] == ["supported", "answers"]
        passage = body["messages"][1]["content"].split('"""')[1].strip()
        assert passage and passage in chunks  # the held-out question's own passage, from the run's index
    searched = [b for b in server.judge_bodies if WRONG not in b["messages"][1]["content"]]
    assert all("The tool returned:" in b["messages"][1]["content"] for b in searched)  # observations shown
    assert report.settings["judge"] == {"judge": "judge-model", "criteria": ["supported", "answers"],
                                        "requests": 2 * N, "input_tokens": 400 * N, "output_tokens": 40 * N}
    on_disk = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert on_disk["models"]["wrong"]["metrics"]["judge"]["supported"]["mean"] == 1.0
    assert on_disk["settings"]["judge"]["judge"] == "judge-model"
    transcripts = [json.loads(x) for x in (tmp_path / "eval" / "transcripts" / "wrong.jsonl").read_text().splitlines()]
    assert all(t["judge"]["scores"]["supported"] == {"score": 1, "reason": "No observation says so."} for t in transcripts)
    table = report.table()
    assert "judge: supported (mean 1-5)" in table and "5.00 (n=5)" in table and "1.00 (n=5)" in table
    assert "| judge: answers (mean 1-5) | 4.00 (n=5) | 2.00 (n=5) | - |" in (tmp_path / "eval" / "report.md").read_text()


def test_an_unreadable_verdict_is_counted_not_scored(run, fake_openai, tmp_path: Path) -> None:
    fake_openai.chat_script = lambda b: ("not a verdict" if b.get("response_format") else _student(b))
    report = distill.evaluate(_config("openai"), ["right"], run=run, n=N, out=tmp_path / "eval", judge=True)
    assert report.to_dict()["models"]["right"]["metrics"]["judge"] == {"judged": 0, "errors": N, "answered": N}


def test_without_answer_criteria_eval_judge_fails_before_any_call(run, fake_openai, tmp_path: Path) -> None:
    config = _config("openai", criteria=["answerable", "tool_choice"])
    with pytest.raises(EvalError, match="judge.criteria"):
        distill.evaluate(config, ["right"], run=run, n=N, out=tmp_path / "eval", judge=True)
    assert fake_openai.requests_to("/chat/completions") == []


def test_eval_without_judge_writes_no_judge_figures(run, fake_openai, tmp_path: Path) -> None:
    fake_openai.chat_script = _student
    report = distill.evaluate(_config("openai"), ["right"], run=run, n=N, out=tmp_path / "eval")
    assert "judge" not in report.to_dict()["models"]["right"]["metrics"] and "judge" not in report.settings
    lines = (tmp_path / "eval" / "transcripts" / "right.jsonl").read_text().splitlines()
    assert all("judge" not in json.loads(x) for x in lines) and "judge:" not in report.table()


def test_cli_eval_judge_offline_uses_the_lexical_judge(run, fake_openai, tmp_path: Path, capsys) -> None:
    fake_openai.chat_script = _student
    config_path = tmp_path / "cfg.yaml"
    data = copy.deepcopy(BASE_CONFIG)
    data["teacher"] = {"provider": "offline"}
    data["tools"] = copy.deepcopy(BASE_CONFIG["tools"])
    config_path.write_text(json.dumps(data), encoding="utf-8")
    code = main(["eval", str(config_path), "--model", "right", "--run", str(run), "--n", str(N), "--judge",
                 "--base-url", fake_openai.base_url, "--out", str(tmp_path / "eval"), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "judge: supported (mean 1-5)" in out and "judge: answers (mean 1-5)" in out
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["settings"]["judge"] == {"judge": "offline-lexical", "criteria": ["supported", "answers"]}
    judged = report["models"]["right"]["metrics"]["judge"]
    assert judged["judged"] == N and 1 <= judged["supported"]["mean"] <= 5
    assert all(not b.get("response_format") for b in (r.json() for r in fake_openai.requests_to("/chat/completions")))
