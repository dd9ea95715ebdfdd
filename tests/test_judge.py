"""The judge: scripted verdicts through the fake endpoint, thresholds, stored verdicts (zero-call re-export), costs
per stage, failures, the offline lexical judge and the report."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.cli import main
from distill.config import load_config
from distill.errors import ConfigError
from distill.formats.langchain_actions import render_action
from distill.generation.offline_judge import OfflineJudge
from distill.generation.pipeline import generate, load_trajectories
from distill.trajectory import Step, Trajectory, Turn
from tests.conftest import CORPUS
from tests.fake_openai import FakeRequest, FakeResponse, chat_completion

ITEM = re.compile(r"User: What does item (\d+) say")


def supported_score(n: int) -> int:
    return n % 5 + 1


def answers_score(n: int) -> int:
    return (n // 5) % 5 + 1


class Script:
    """Questions, rollouts and scripted judge verdicts (scores from the item number of the conversation's question)."""

    def __init__(self) -> None:
        self.judge_bodies: list[dict[str, Any]] = []
        self.judge_answer: str | None = None  # answer every judge request with this text instead
        self.judge_status: int | None = None  # answer every judge request with this HTTP status

    def __call__(self, request: FakeRequest) -> FakeResponse:
        body = request.json()
        fmt = (body.get("response_format") or {}).get("json_schema", {}).get("name")
        usage = {"prompt_tokens": 300, "completion_tokens": 40, "total_tokens": 340}
        if fmt == "verdict":
            self.judge_bodies.append(body)
            if self.judge_status is not None:
                return FakeResponse(status=self.judge_status, json={"error": {"message": "judge down"}})
            if self.judge_answer is not None:
                return FakeResponse(json=chat_completion(self.judge_answer, usage=usage))
            n = int(ITEM.search(body["messages"][1]["content"]).group(1))
            verdict = {
                "supported": {"score": supported_score(n), "reason": f"Item {n} support reason."},
                "answers": {"score": answers_score(n), "reason": f"Item {n} answers reason."},
            }
            return FakeResponse(json=chat_completion(json.dumps(verdict), usage=usage))
        seed = body["seed"]
        if fmt == "questions":
            text = json.dumps({"questions": [f"What does item {seed % 1000} say about BM25?"]})
        elif body["messages"][-1]["content"].startswith("TOOL RESPONSE"):
            text = render_action("Final Answer", f"BM25 ranks passages ({seed}).")
        else:
            text = render_action("Vector Search Tool", f"bm25 item {seed}")
        return FakeResponse(json=chat_completion(text, usage=usage))


def _config_file(tmp_path: Path, judge: dict[str, Any], name: str = "cfg.yaml") -> Path:
    data = {
        "name": "judge-test",
        "tools": [{"name": "Vector Search Tool", "description": "Searches the documents.", "kind": "retriever"}],
        "sources": [{"path": str(CORPUS)}],
        "teacher": {"provider": "openai", "model": "gpt-4o", "concurrency": 4, "max_retries": 0, "backoff_s": 0.01},
        "generation": {"conversations": 24, "seed": 2, "mix": {"tool": 1.0, "direct": 0.0, "multi_turn": 0.0},
                       "max_extra_conversations": 0},
        "export": {"validation_fraction": 0.2, "dedup": {"enabled": False}},
        "judge": judge,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def script(fake_openai) -> Script:
    s = Script()
    fake_openai.route("POST", r"/v1/chat/completions", s)
    return s


def _items(run: Path) -> dict[str, int]:
    """Conversation id -> the item number of its question."""
    return {t.id: int(re.search(r"item (\d+)", t.turns[0].question).group(1)) for t in load_trajectories(run)}


def _rejected(run: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(x) for x in (run / "rejected.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in rows}


JUDGE = {"enabled": True, "criteria": ["supported", "answers"], "thresholds": {"supported": 3, "answers": 2}}


def test_thresholds_reject_exactly_the_conversations_below_them(script, fake_openai, tmp_path: Path) -> None:
    config = load_config(_config_file(tmp_path, JUDGE))
    run = tmp_path / "run"
    result = generate(config, run, progress=False)
    items = _items(run)
    assert len(script.judge_bodies) == len(items) == 24  # one judge request per accepted conversation
    expected = {}
    for cid, n in items.items():
        if supported_score(n) < 3:
            expected[cid] = ("judge_supported", f"supported scored {supported_score(n)} < 3: Item {n} support reason.")
        elif answers_score(n) < 2:
            expected[cid] = ("judge_answers", f"answers scored {answers_score(n)} < 2: Item {n} answers reason.")
    assert expected and len(expected) < len(items)
    rejected = _rejected(run)
    assert {cid: (r["reason"], r["detail"]) for cid, r in rejected.items()} == expected
    assert all(r["stage"] == "judge" for r in rejected.values())
    c = result.conversations
    assert c["accepted"] == len(items) - len(expected) and c["accepted"] + c["rejected"] + c["failed"] == c["requested"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["judge"]["judges"] == {"gpt-4o": 24}
    assert sum(manifest["judge"]["scores"]["supported"].values()) == 24
    assert manifest["judge"]["scores"]["supported"]["1"] == sum(supported_score(n) == 1 for n in items.values())
    stage = manifest["teacher_usage"]["this_invocation"]["by_stage"]["judge"]
    assert stage["requests"] == 24 and stage["input_tokens"] == 24 * 300 and stage["usd"] > 0
    assert manifest["teacher_usage"]["run_folder"]["by_stage"]["judge"]["responses"] == 24
    stored = load_trajectories(run)[0].meta["judge"]
    assert set(stored["scores"]) == {"supported", "answers"} and stored["judge"] == "gpt-4o"


def test_reexport_with_a_new_threshold_makes_zero_calls(script, fake_openai, tmp_path: Path, capsys) -> None:
    generate(load_config(_config_file(tmp_path, JUDGE)), tmp_path / "run", progress=False)
    items = _items(tmp_path / "run")
    sent = len(fake_openai.requests_to("/chat/completions"))
    stricter = _config_file(tmp_path, {**JUDGE, "thresholds": {"supported": 5, "answers": 1}}, "strict.yaml")
    assert main(["export", str(stricter), "--run", str(tmp_path / "run")]) == 0
    assert len(fake_openai.requests_to("/chat/completions")) == sent  # counted at the server: no call
    rejected = _rejected(tmp_path / "run")
    assert set(rejected) == {cid for cid, n in items.items() if supported_score(n) < 5}
    assert {r["reason"] for r in rejected.values()} == {"judge_supported"}
    # a new threshold through `distill generate` costs no call either: conversations and verdicts are kept
    generate(load_config(stricter), tmp_path / "run", progress=False)
    assert len(fake_openai.requests_to("/chat/completions")) == sent
    # the judge off: every conversation passes, still no call
    off = _config_file(tmp_path, {**JUDGE, "enabled": False}, "off.yaml")
    assert main(["export", str(off), "--run", str(tmp_path / "run")]) == 0
    assert not (tmp_path / "run" / "rejected.jsonl").read_text().strip()
    assert "judge" not in json.loads((tmp_path / "run" / "manifest.json").read_text())


def test_the_judge_model_is_sent_and_its_answer_is_structured(script, fake_openai, tmp_path: Path) -> None:
    config = load_config(_config_file(tmp_path, {**JUDGE, "model": "gpt-4.1-mini"}))
    generate(config, tmp_path / "run", progress=False)
    body = script.judge_bodies[0]
    assert body["model"] == "gpt-4.1-mini" and body["temperature"] == 0
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["supported", "answers"]
    assert schema["properties"]["supported"]["required"] == ["score", "reason"]
    prompt = body["messages"][1]["content"]
    assert "supported: every factual claim" in prompt and "The tool returned:" in prompt  # rubric and observations
    assert "tool_choice:" not in prompt  # only the configured criteria


def test_an_unreadable_verdict_rejects_and_a_failed_judge_call_fails(script, fake_openai, tmp_path: Path) -> None:
    script.judge_answer = '{"supported": {"score": 9, "reason": "x"}}'
    result = generate(load_config(_config_file(tmp_path, JUDGE)), tmp_path / "a", progress=False)
    assert result.conversations["rejected"] == 24
    assert {r["reason"] for r in _rejected(tmp_path / "a").values()} == {"judge_unreadable"}
    script.judge_answer, script.judge_status = None, 400
    result = generate(load_config(_config_file(tmp_path, JUDGE)), tmp_path / "b", progress=False)
    assert result.conversations["failed"] == 24 and result.conversations["accepted"] == 0
    assert {r["stage"] for r in _rejected(tmp_path / "b").values()} == {"judge"}


def test_offline_the_lexical_judge_stands_in_and_says_so(make_config, tmp_path: Path) -> None:
    config = make_config(judge={"enabled": True, "threshold": 4})
    result = generate(config, tmp_path / "run", progress=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    judged = manifest["judge"]
    # the judge's rejections count against the mix: the top-up planned more, and every one was judged
    assert manifest["top_up"]["extra_conversations"] > 0
    assert judged["judges"] == {"offline-lexical": manifest["conversations"]["requested"]} and "lexical" in judged["note"]
    assert sum(judged["rejected_by_reason"].values()) == result.conversations["rejected"] > 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "rejected.jsonl").read_text().splitlines()]
    assert rows and all(r["reason"].startswith("judge_") and r["detail"] for r in rows)


def _conversation(answer: str, observation: str, tool: str = "Vector Search Tool") -> Trajectory:
    steps = [Step(action=tool, action_input="bm25", raw="", observation=observation),
             Step(action="Final Answer", action_input=answer, raw="")]
    return Trajectory(id="c1", kind="tool", doc_id="d", chunk_id="c", meta={"tool": "Vector Search Tool"},
                      turns=[Turn(question="How does BM25 rank passages?", steps=steps)])


def test_offline_judge_scores_lexical_support() -> None:
    judge = OfflineJudge()
    observation = "BM25 ranks passages by term frequency and inverse document frequency."
    good = judge.verdict(_conversation("BM25 ranks passages by term frequency.", observation), observation, ["supported"])
    bad = judge.verdict(_conversation("Neural rerankers trained on clicks decide it.", observation), observation,
                        ["supported"])
    assert good["supported"]["score"] == 5 and bad["supported"]["score"] == 1
    choice = judge.verdict(_conversation("x", observation, tool="Calculator"), "", ["tool_choice"])
    assert choice["tool_choice"]["score"] == 3 and "instead of" in choice["tool_choice"]["reason"]


def test_judge_config_is_validated(make_config) -> None:
    assert make_config().judge.enabled is False
    with pytest.raises(ConfigError, match="judge.criteria"):
        make_config(judge={"criteria": ["truthiness"]})
    with pytest.raises(ConfigError, match="thresholds.answers"):
        make_config(judge={"criteria": ["supported"], "thresholds": {"answers": 3}})
    with pytest.raises(ConfigError, match="judge.threshold"):
        make_config(judge={"threshold": 6})


def test_the_report_shows_score_distributions_and_the_judged_out(script, fake_openai, tmp_path: Path) -> None:
    from distill.reporting.report import write_report

    generate(load_config(_config_file(tmp_path, JUDGE)), tmp_path / "run", progress=False)
    result = write_report(tmp_path / "run")
    judge = result.figures["judge"]
    rejected = _rejected(tmp_path / "run")
    assert {d["id"] for d in judge["judged_out"]} == set(rejected)
    assert judge["scores"]["answers"] == json.loads((tmp_path / "run" / "manifest.json").read_text())["judge"]["scores"]["answers"]
    page = result.html.read_text(encoding="utf-8")
    assert 'data-chart="judge"' in page and 'aria-label="judge chart"' in page
    first = next(iter(rejected.values()))
    assert first["detail"].split(": ", 1)[1] in page  # the judge's reason, next to the judged-out conversation


def test_offline_terms_of_several_texts_are_the_terms_of_the_texts_joined() -> None:
    """The offline judge reads each text's words once (cached) and unites them: the same words as reading the texts
    joined by spaces, as it did before, for any texts (case, digits, Unicode, empty texts, words at the edges)."""
    import random

    from distill.generation.offline_judge import _STOP, _WORD, _terms

    rng = random.Random(7)
    alphabet = "abcXYZ019 _-'\n\tİKΣσς.ä"
    for _ in range(300):
        texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(12))) for _ in range(rng.randrange(4))]
        joined = {w for w in _WORD.findall(" ".join(texts).lower()) if len(w) >= 3 and w not in _STOP}
        assert _terms(*texts) == joined


def test_the_judge_grades_while_the_last_conversations_are_in_flight(fake_openai, tmp_path: Path) -> None:
    # The last planned conversation is held at the endpoint until the first judge request arrives: a judge stage that
    # waited for the rollouts to drain would never send it.
    class Held(Script):
        def __init__(self) -> None:
            super().__init__()
            self.asked, self.judging, self.held, self.lock = 0, threading.Event(), [], threading.Lock()

        def __call__(self, request: FakeRequest) -> FakeResponse:
            body = request.json()
            fmt = (body.get("response_format") or {}).get("json_schema", {}).get("name")
            if fmt == "verdict":
                self.judging.set()
            elif fmt == "questions":
                with self.lock:
                    self.asked += 1
                    last = self.asked == 24
                if last:  # the last planned conversation's questions: marked
                    return FakeResponse(json=chat_completion(json.dumps({"questions": ["What does item 999 say? LAST"]})))
            elif "LAST" in body["messages"][-1]["content"] and not self.held \
                    and "TOOL RESPONSE" not in body["messages"][-1]["content"]:
                self.held.append(self.judging.wait(5))  # True: judged while this one was held
            return super().__call__(request)

    held = Held()
    fake_openai.route("POST", r"/v1/chat/completions", held)
    generate(load_config(_config_file(tmp_path, JUDGE)), tmp_path / "run", progress=False)
    assert held.held == [True]
    assert len(held.judge_bodies) == 24  # and every accepted conversation was judged, once
