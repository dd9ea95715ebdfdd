"""A pool of teacher endpoints against two local OpenAI-compatible servers: the load is shared, one server dying
mid-run loses nothing, each endpoint's limit is learned on its own, a failing endpoint is probed back in, and the
ledger keys do not depend on which endpoint answered (the dataset equals a one-endpoint run's)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from distill.errors import ConfigError, RunStopped, TeacherError
from distill.formats.langchain_actions import render_action
from distill.generation.pipeline import generate
from distill.teachers.base import TeacherRequest
from distill.teachers.ledger import Ledger
from distill.teachers.openai_teacher import OpenAITeacher
from distill.teachers.pool import PoolEngine
from tests.fake_openai import FakeOpenAI, FakeRequest, FakeResponse, RpmLimit, chat_completion

FAST = {"provider": "openai", "model": "gpt-4o", "max_retries": 2, "backoff_s": 0.01, "timeout_s": 5}
RUN = {"conversations": 16, "seed": 5, "mix": {"tool": 0.5, "direct": 0.25, "multi_turn": 0.25},
       "max_extra_conversations": 0}


def answer(body: dict[str, Any]) -> FakeResponse:
    """A deterministic teacher: the answer depends on the request body only, whichever server gives it."""
    seed = body.get("seed", 0)
    if body.get("response_format"):
        turns = 2 if "several user messages" in body["messages"][1]["content"] else 1
        content = json.dumps({"questions": [f"What does note {seed} say about BM25, part {i}?" for i in range(turns)]})
    elif body["messages"][-1]["content"].startswith("TOOL RESPONSE"):
        content = render_action("Final Answer", f"BM25 ranks passages (note {seed}).")
    else:
        content = render_action("Vector Search Tool", f"bm25 note {seed} {len(body['messages'])}")
    return FakeResponse(json=chat_completion(content))


def _chat(request: FakeRequest) -> FakeResponse:
    return answer(request.json())


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch):
    started = [FakeOpenAI().start(), FakeOpenAI().start()]
    for server in started:
        server.route("POST", r"/v1/chat/completions", _chat)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    yield started
    for server in started:
        server.stop()


def _chats(server: FakeOpenAI) -> int:
    return len(server.requests_to("/chat/completions"))


def _dataset(run: Path) -> list[str]:
    return [(run / name).read_text() for name in ("train.jsonl", "validation.jsonl")]


def _keys(run: Path) -> set[str]:
    return {e.key for e in Ledger.open(run / "ledger.sqlite").entries()}


def _single_run(make_config, tmp_path: Path, url: str) -> Path:
    run = tmp_path / "single"
    generate(make_config(teacher={**FAST, "base_url": url, "concurrency": 4}, generation=RUN), run, progress=False)
    return run


def test_a_pool_shares_the_load_and_its_dataset_equals_a_one_endpoint_run(servers, make_config, tmp_path) -> None:
    a, b = servers
    config = make_config(teacher={**FAST, "base_url": [a.base_url, b.base_url], "concurrency": 4}, generation=RUN)
    run = tmp_path / "pool"
    result = generate(config, run, progress=False)
    at_a, at_b = _chats(a), _chats(b)
    assert at_a > 0 and at_b > 0  # both endpoints answered part of the run
    manifest = json.loads(result.manifest.read_text())
    assert manifest["conversations"]["failed"] == 0
    lanes = manifest["teacher_usage"]["limits"]["endpoints"]
    assert [lane["requests"] for lane in lanes] == [at_a, at_b]

    single = _single_run(make_config, tmp_path, a.base_url)
    assert _chats(a) - at_a == at_a + at_b  # the one endpoint alone got as many requests as the pool in all
    assert _dataset(run) == _dataset(single)
    assert _keys(run) == _keys(single)  # ledger keys come from the request, not from the endpoint

    # the pool's ledger answers a one-endpoint rerun of every conversation: not one request is sent again
    sent = _chats(a) + _chats(b)
    one = make_config(teacher={**FAST, "base_url": b.base_url, "concurrency": 4}, generation=RUN)
    generate(one, run, progress=False, fresh=True)
    assert _chats(a) + _chats(b) == sent and _dataset(run) == _dataset(single)


def test_a_pool_survives_one_endpoint_dying_mid_run(servers, make_config, tmp_path) -> None:
    a, b = servers
    dead = threading.Event()
    served_by_b = 0
    lock = threading.Lock()

    def dying(request: FakeRequest) -> FakeResponse:
        nonlocal served_by_b
        if dead.is_set():
            return FakeResponse(drop=True)  # connections kept alive from before its death are cut
        with lock:
            served_by_b += 1
            if served_by_b == 12:
                dead.set()  # from now on it refuses connections and drops the ones it had
                threading.Thread(target=b.stop, daemon=True).start()
        return answer(request.json())

    b.route("POST", r"/v1/chat/completions", dying)
    config = make_config(teacher={**FAST, "endpoints": [{"base_url": a.base_url}, {"base_url": b.base_url}],
                                  "concurrency": 4, "max_retries": 0}, generation=RUN)
    run = tmp_path / "pool"
    result = generate(config, run, progress=False)

    assert dead.is_set() and served_by_b == 12  # B died during the run, after answering part of it
    manifest = json.loads(result.manifest.read_text())
    c = manifest["conversations"]
    assert c["failed"] == 0 and c["requested"] == c["accepted"] + c["rejected"]
    assert list(Ledger.open(run / "ledger.sqlite").entries(ok=False)) == []  # no request given up
    lanes = manifest["teacher_usage"]["limits"]["endpoints"]
    assert lanes[1]["outages"] >= 1 and lanes[1]["up"] is False and lanes[0]["up"] is True

    fresh = FakeOpenAI().start()
    try:
        fresh.route("POST", r"/v1/chat/completions", _chat)
        single = _single_run(make_config, tmp_path, fresh.base_url)
    finally:
        fresh.stop()
    assert _dataset(run) == _dataset(single)  # nothing lost, nothing changed by the failover
    assert _keys(run) == _keys(single)


def _requests(n: int, offset: int = 0) -> list[TeacherRequest]:
    return [TeacherRequest(stage="rollout", messages=[{"role": "user", "content": f"q{i}"}], params={"seed": i})
            for i in range(offset, offset + n)]


def _complete(teacher: OpenAITeacher, requests: list[TeacherRequest], close: bool = True) -> list[Any]:
    async def run() -> list[Any]:
        try:
            return await asyncio.gather(*(teacher.complete(r) for r in requests), return_exceptions=True)
        finally:
            if close:
                await teacher.aclose()

    return asyncio.run(run())


def test_each_endpoint_learns_its_own_limit(servers, make_config) -> None:
    a, b = servers
    limit_a, limit_b = RpmLimit(_chat, rpm=6000, burst=2), RpmLimit(_chat, rpm=1500, burst=1)
    a.route("POST", r"/v1/chat/completions", limit_a)
    b.route("POST", r"/v1/chat/completions", limit_b)
    teacher = OpenAITeacher(make_config(teacher={**FAST, "base_url": [a.base_url, b.base_url], "concurrency": 8}))
    replies = _complete(teacher, _requests(60))
    assert not any(isinstance(r, Exception) for r in replies)
    assert isinstance(teacher.engine, PoolEngine)
    lane_a, lane_b = teacher.engine.lanes
    assert lane_a.limiter.header_rpm == 6000 and lane_b.limiter.header_rpm == 1500  # each from its own server
    assert lane_a.limiter.throttled == limit_a.counts.get(429, 0)  # each limiter saw only its own server's 429s
    assert lane_b.limiter.throttled == limit_b.counts.get(429, 0)
    limits = teacher.limits()
    assert [e["rpm_from_headers"] for e in limits["endpoints"]] == [6000, 1500]
    assert limits["rpm_in_force"] == sum(e["rpm_in_force"] for e in limits["endpoints"])


def test_each_endpoint_learns_from_its_own_429s(servers, make_config) -> None:
    a, b = servers
    refused = FakeResponse(status=429, json={"error": {"message": "Rate limit reached"}})
    calls = 0

    def every_other(request: FakeRequest) -> FakeResponse:  # B refuses half its requests, sends no limit headers
        nonlocal calls
        calls += 1
        return refused if calls % 2 else answer(request.json())

    b.route("POST", r"/v1/chat/completions", every_other)
    teacher = OpenAITeacher(make_config(teacher={**FAST, "base_url": [a.base_url, b.base_url], "concurrency": 16}))
    replies = _complete(teacher, _requests(160))
    assert not any(isinstance(r, Exception) for r in replies)
    lane_a, lane_b = teacher.engine.lanes  # type: ignore[attr-defined]
    assert lane_a.limiter.throttled == 0 and lane_a.limiter.learned_rps is None  # A never refused: no limit
    assert lane_b.limiter.throttled > 0 and lane_b.limiter.learned_rps is not None  # B's refusals taught B alone


def test_a_failing_endpoint_is_taken_out_and_probed_back_in(servers, make_config) -> None:
    a, b = servers
    broken = threading.Event()
    broken.set()

    def flaky(request: FakeRequest) -> FakeResponse:
        if broken.is_set():
            return FakeResponse(status=503, json={"error": {"message": "overloaded"}})
        return answer(request.json())

    b.route("POST", r"/v1/chat/completions", flaky)
    teacher = OpenAITeacher(make_config(teacher={**FAST, "base_url": [a.base_url, b.base_url], "concurrency": 4}))
    engine = teacher.engine
    assert isinstance(engine, PoolEngine)
    engine._cool_s = 0.0  # no cool-down: every request may probe the endpoint that is out
    lane_b = engine.lanes[1]

    async def run() -> tuple[list[Any], list[Any], int]:
        try:
            first = await asyncio.gather(*(teacher.complete(r) for r in _requests(30)), return_exceptions=True)
            down, before = lane_b.down_until, _chats(b)
            assert down is not None and lane_b.outages == 1  # out after 3 failures in a row, probes kept failing
            broken.clear()
            second = await asyncio.gather(*(teacher.complete(r) for r in _requests(30, 30)), return_exceptions=True)
            return first, second, before
        finally:
            await teacher.aclose()

    first, second, before = asyncio.run(run())
    assert not any(isinstance(r, Exception) for r in first + second)  # B's 503s went to A at once
    assert lane_b.down_until is None and lane_b.outages == 1  # the probe brought it back in ...
    assert _chats(b) > before + 1  # ... and it got work again
    assert engine.lanes[0].picked + lane_b.picked == 60 + (lane_b.picked - lane_b.answered)  # each 503 went on


def test_pool_config_is_checked_and_keys_come_from_each_endpoint(servers, make_config, monkeypatch) -> None:
    a, b = servers
    with pytest.raises(ConfigError, match="not both"):
        make_config(teacher={**FAST, "base_url": [a.base_url], "endpoints": [{"base_url": b.base_url}]})
    with pytest.raises(ConfigError, match="batch"):
        make_config(teacher={**FAST, "mode": "batch", "base_url": [a.base_url, b.base_url]})
    with pytest.raises(ConfigError, match="twice"):
        make_config(teacher={**FAST, "base_url": [a.base_url, a.base_url]})
    endpoints = [{"base_url": a.base_url, "api_key_env": "KEY_A", "rpm": 6000},
                 {"base_url": b.base_url, "api_key_env": "KEY_B", "concurrency": 2}]
    config = make_config(teacher={**FAST, "endpoints": endpoints})
    with pytest.raises(TeacherError, match="KEY_A is not set"):
        OpenAITeacher(config)
    monkeypatch.setenv("KEY_A", "sk-a")
    monkeypatch.setenv("KEY_B", "sk-b")
    teacher = OpenAITeacher(config)
    lane_a, lane_b = teacher.engine.lanes  # type: ignore[attr-defined]
    assert lane_a.limiter.configured_rpm == 6000 and lane_b.limiter.configured_rpm is None
    assert lane_b.concurrency == 2
    _complete(teacher, _requests(12))
    keys = {s: {r.headers.get("Authorization") or r.headers.get("authorization")
                for r in s.requests_to("/chat/completions")} for s in (a, b)}
    assert keys == {a: {"Bearer sk-a"}, b: {"Bearer sk-b"}}


def test_a_pool_that_no_endpoint_answers_stops_as_unreachable(make_config, monkeypatch) -> None:
    gone = [FakeOpenAI().start(), FakeOpenAI().start()]
    urls = [server.base_url for server in gone]
    for server in gone:
        server.stop()  # nothing listens there any more: connections are refused
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    teacher = OpenAITeacher(make_config(teacher={**FAST, "base_url": urls, "concurrency": 2}))
    replies = _complete(teacher, _requests(4))
    assert all(isinstance(r, RunStopped) for r in replies)
    assert "cannot reach any endpoint of the pool" in str(replies[0]) and all(u in str(replies[0]) for u in urls)
