"""`distill eval` plays each student through the teacher's engine: rate limits, Retry-After, refusals, no ledger.

The endpoint enforces a requests-per-minute limit (a token bucket, as OpenAI's) and answers 429 with
`retry-after-ms` when a request is over it; every question must still complete, the limit must be what the engine's
limiter learned (as in `generate`), and the run folder's ledger and manifest must stay untouched. A student can also
be any in-process policy implementing the `Teacher` protocol: the same loop plays it.
"""

from __future__ import annotations

import asyncio
import json

import distill
from distill.agent.tools import ToolBox
from distill.evaluation.evaluate import Student
from distill.evaluation.questions import load_questions
from distill.formats import get_format
from distill.formats.langchain_actions import render_action
from distill.generation.index import ChunkIndex
from distill.teachers.base import TeacherReply, TeacherRequest
from tests.conftest import ANSWER
from tests.fake_openai import FakeRequest, FakeResponse, RpmLimit, chat_completion
from tests.test_evaluate import SEARCH, _m, run  # noqa: F401 - `run` is the module's generated run (a fixture)


def _valid(request: FakeRequest) -> FakeResponse:
    body = request.json()
    done = body["messages"][-1]["content"].startswith("TOOL RESPONSE")
    return FakeResponse(json=chat_completion(render_action("Final Answer", ANSWER) if done
                                             else render_action(SEARCH, "BM25")))


def test_eval_under_an_rpm_limit_completes_and_learns_the_limit(run, questions, fake_openai, tmp_path) -> None:  # noqa: F811
    config, run_dir = run
    limit = RpmLimit(_valid, rpm=1200, burst=1, first_429=True)
    fake_openai.route("POST", r"/v1/chat/completions", limit)
    manifest = (run_dir / "manifest.json").read_bytes()
    report = distill.evaluate(config, ["student"], run=run_dir, questions=questions, out=tmp_path / "eval",
                              concurrency=4)
    got = report.to_dict()["models"]["student"]
    # every question completed: search, then the final answer (2 accepted answers each), no call error
    assert got["metrics"]["completion"] == _m(4, 4) and got["call_errors"] == {}
    assert limit.counts[200] == 8  # nothing answered was asked again
    refused = limit.counts[429]
    assert refused >= 1  # the first request at least
    # what the engine learned, as in `generate`: the endpoint's limit from its headers, every 429 counted
    limits = got["limits"]
    assert limits["rpm_from_headers"] == 1200 and 0 < limits["rpm_in_force"] <= 1200  # (lower when 429s taught)
    assert limits["responses_429"] == refused
    assert len(fake_openai.requests_to("/chat/completions")) == 8 + refused
    # eval never writes into the run folder's teacher ledger nor its manifest
    assert not (run_dir / "ledger.sqlite").exists()
    assert (run_dir / "manifest.json").read_bytes() == manifest
    on_disk = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert on_disk["models"]["student"]["limits"]["responses_429"] == refused


def test_a_refused_model_is_a_finding_not_a_stopped_run(run, questions, fake_openai, tmp_path) -> None:  # noqa: F811
    """401 would stop a teacher's run; for a student it is that model's figure, and the next model still runs."""
    config, run_dir = run

    def handler(request: FakeRequest) -> FakeResponse:
        if request.json()["model"] == "locked":
            return FakeResponse(status=401, json={"error": {"message": "invalid key"}})
        return _valid(request)

    fake_openai.route("POST", r"/v1/chat/completions", handler)
    report = distill.evaluate(config, ["locked", "student"], run=run_dir, questions=questions, out=tmp_path / "e")
    got = report.to_dict()["models"]
    assert got["locked"]["call_errors"] == {"http_401": 4}
    assert got["student"]["metrics"]["completion"] == _m(4, 4)


class _ScriptedPolicy:
    """An in-process policy (no endpoint): searches once, then answers."""

    provider, model = "local", "scripted"

    def __init__(self) -> None:
        self.requests: list[TeacherRequest] = []

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        self.requests.append(request)
        done = request.messages[-1]["content"].startswith("TOOL RESPONSE")
        text = render_action("Final Answer", ANSWER) if done else render_action(SEARCH, "BM25")
        return TeacherReply(text=text, usage={"output": 7})

    async def aclose(self) -> None:
        pass


def test_any_teacher_protocol_policy_plays_the_agent(run, questions) -> None:  # noqa: F811
    config, run_dir = run
    policy = _ScriptedPolicy()
    fmt = get_format(config)
    student = Student("scripted", policy, fmt, ToolBox(config, ChunkIndex.load(run_dir / "index")),
                      config.agent.max_steps, {"temperature": 0.0, "max_tokens": 64})
    q = load_questions(run_dir, questions, None)[0]
    transcript = asyncio.run(student.play(q))
    assert transcript.answer == ANSWER and [s.ok for s in transcript.steps] == [True, True]
    assert transcript.steps[0].action == SEARCH and transcript.steps[0].observation.startswith("['")
    first, second = policy.requests
    assert first.stage == "eval" and first.params == {"temperature": 0.0, "max_tokens": 64, "stop": fmt.stop}
    assert first.messages == fmt.messages_for_step([], q.question, [])
    assert second.messages[-2] == {"role": "assistant", "content": render_action(SEARCH, "BM25")}
    assert student.tokens == 14
