"""Batch mode (the Batch API in waves) and flex processing, against the fake server's batch endpoint.

The fake answers by content (the same body always gets the same answer), online and in batches alike, so a batch run
must export exactly the online run's dataset; the fake counts every row it answered (paid), so nothing may be paid
twice, whatever expired, failed, was killed or cancelled on the way.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.cli import main
from distill.config import load_config
from distill.errors import ConfigError, RunStopped
from distill.formats.langchain_actions import render_action
from distill.generation.pipeline import generate
from distill.generation.waves import BATCHES_PENDING_EXIT
from distill.teachers import batch_files
from tests.conftest import CORPUS
from tests.fake_openai import FakeBatchAPI, FakeRequest, FakeResponse, chat_completion
from tests.test_resume import _same_dataset

BROKEN = 4  # rollout requests with seed % 13 == BROKEN answer HTTP 500, online and in batches, every time
ERROR_500 = {"error": {"message": "scripted HTTP 500", "type": "server_error"}}


def answer(body: dict[str, Any]) -> dict[str, Any]:
    """The teacher: a deterministic answer per body (questions, a tool call, a final answer, some rejects)."""
    seed = body["seed"]
    if body.get("response_format"):
        turns = 2 if "several user messages" in body["messages"][1]["content"] else 1
        text = json.dumps({"questions": [f"What does item {seed} say about BM25, part {i}?" for i in range(turns)]})
    elif seed % 7 == 3:
        text = "Sure. " + render_action("Vector Search Tool", f"bm25 {seed}")  # rejected: prose outside
    elif body["messages"][-1]["content"].startswith("TOOL RESPONSE"):
        text = render_action("Final Answer", f"BM25 ranks passages by term statistics ({seed}).")
    else:
        text = render_action("Vector Search Tool", f"bm25 item {seed} {len(body['messages'])}")
    finish = "length" if seed % 11 == 6 and not body.get("response_format") else "stop"  # cut off: never data
    usage = {"prompt_tokens": 400 + seed % 100, "completion_tokens": 30, "total_tokens": 430 + seed % 100}
    return chat_completion(text, usage=usage, finish_reason=finish)


def broken(body: dict[str, Any]) -> bool:
    return not body.get("response_format") and body["seed"] % 13 == BROKEN


class Online:
    """The online chat-completions route over the same answers; `flex_429` refuses each body's first attempt."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bodies: list[dict[str, Any]] = []
        self.flex_429 = False
        self.refused: set[bytes] = set()

    def __call__(self, request: FakeRequest) -> FakeResponse:
        body = request.json()
        with self.lock:
            self.bodies.append(body)
            if self.flex_429 and request.body not in self.refused:
                self.refused.add(request.body)
                return FakeResponse(429, {"error": {"message": "Resource Unavailable", "type": "resource_unavailable",
                                                    "code": None}}, headers={"retry-after-ms": "1"})
        if broken(body):
            return FakeResponse(500, ERROR_500)
        return FakeResponse(body=json.dumps(answer(body)).encode())


@pytest.fixture
def online(fake_openai) -> Online:
    route = Online()
    fake_openai.route("POST", r"/v1/chat/completions", route)
    return route


@pytest.fixture
def api(fake_openai, monkeypatch) -> FakeBatchAPI:
    monkeypatch.setattr(batch_files, "MAX_BATCH_REQUESTS", 16)  # several batches per wave
    fake = FakeBatchAPI(fake_openai, answer, seed=3)
    fake.row_fault = lambda body, seen: 500 if broken(body) else None
    return fake


def _config_file(tmp_path: Path, **changes: Any) -> Path:
    data: dict[str, Any] = {
        "name": "batch-test",
        "tools": [{"name": "Vector Search Tool", "description": "Searches the documents.", "kind": "retriever"}],
        "sources": [{"path": str(CORPUS)}],
        "teacher": {"provider": "openai", "model": "gpt-4o", "concurrency": 4, "max_retries": 2, "backoff_s": 0.01,
                    "batch_poll_s": 0.001},
        "generation": {"conversations": 30, "seed": 5, "mix": {"tool": 0.6, "direct": 0.0, "multi_turn": 0.4},
                       "max_extra_conversations": 0},
        "export": {"validation_fraction": 0.2, "dedup": {"enabled": False}},
    }
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value}
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _online_run(tmp_path: Path) -> Path:
    generate(load_config(_config_file(tmp_path)), tmp_path / "online", progress=False)
    return tmp_path / "online"


def _ledger(run: Path, sql: str) -> Any:
    with sqlite3.connect(run / "ledger.sqlite") as db:
        return db.execute(sql).fetchone()[0]


def test_batch_run_with_failed_and_expired_rows_equals_the_online_run(online, api, tmp_path, capsys) -> None:
    reference = _online_run(tmp_path)
    api.fate = lambda n: {2: "expired", 4: "failed"}.get(n, "completed")
    run = tmp_path / "batch"
    result = generate(load_config(_config_file(tmp_path, teacher={"mode": "batch"})), run, progress=False)

    _same_dataset(reference, run)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["failures_by_reason"]["http_500"] >= 1  # a row that always fails fails its conversation
    assert manifest["failures_by_reason"]["truncated"] >= 1  # finish_reason=length is read in batch mode too
    c = manifest["conversations"]
    assert c["requested"] == c["accepted"] + c["rejected"] + c["failed"] == 30

    # every answered row paid once, counted at the server; the ledger, the manifest and the server agree
    assert api.repeated() == []
    assert _ledger(run, "SELECT COUNT(*) FROM responses WHERE ok = 1") == len(api.paid_usage)
    paid = sum(u["prompt_tokens"] * 1.25 + u["completion_tokens"] * 5.0 for u in api.paid_usage) / 1e6  # gpt-4o / 2
    section = manifest["batch"]
    assert section["usd"] == pytest.approx(paid, abs=1e-6)  # the manifest rounds to 6 digits
    assert _ledger(run, "SELECT SUM(cost_usd) FROM responses") == pytest.approx(paid)
    assert section["online_usd"] == pytest.approx(2 * paid, abs=1e-6) and section["saving_share"] == 0.5
    rows = section["rows"]
    assert rows["submitted"] == rows["answered"] + rows["failed"] + rows["expired"] + rows["unanswered"]
    assert rows["answered"] == len(api.paid_usage) and rows["expired"] > 0 and rows["failed"] > 0
    statuses = [b["status"] for b in section["batches"]]
    assert "expired" in statuses and "failed" in statuses and len(statuses) > section["waves"] >= 4
    assert _ledger(run, "SELECT COUNT(*) FROM responses WHERE ok = 0") == rows["failed"]
    # a failing row is tried 1 + max_retries times, then its conversation fails; never more
    attempts = [n for body, n in api.seen.items() if broken(json.loads(body))]
    assert attempts and max(attempts) <= 3
    err = capsys.readouterr().err
    assert "[batch] wave 1:" in err and "at batch prices" in err and "finalizing" not in err.split("\n")[-2]
    # every batch line is the exact online body: same keys, and nothing online was sent in batch mode
    online_bodies = {json.dumps(b, sort_keys=True) for b in online.bodies}
    assert {json.dumps(b, sort_keys=True) for b in api.bodies} <= online_bodies


def _kill(holder: dict[str, Any]) -> None:
    process = holder.pop("process")
    process.send_signal(signal.SIGKILL)
    process.wait()


def _spawn(config: Path, run: Path, holder: dict[str, Any], *extra: str) -> subprocess.Popen:
    with holder["lock"]:
        holder["process"] = process = subprocess.Popen(
            [sys.executable, "-m", "distill.cli", "generate", str(config), "--out", str(run), "--no-progress", *extra],
            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    return process


def test_kill_9_with_batches_in_flight_then_rerun(online, api, tmp_path) -> None:
    reference = _online_run(tmp_path)
    config = _config_file(tmp_path, teacher={"mode": "batch"})
    run = tmp_path / "batch"
    holder: dict[str, Any] = {"lock": threading.Lock()}

    # 1: killed right after the provider created batch 3, before the client could store its id (the worst moment)
    def on_create(batch: dict[str, Any]) -> None:
        with holder["lock"]:
            if len(api.created_inputs) == 3 and "process" in holder:
                _kill(holder)

    api.on_create = on_create
    assert _spawn(config, run, holder).wait(timeout=120) == -signal.SIGKILL
    api.on_create = lambda batch: None

    # 2: killed while polling a batch in flight
    polls = {"n": 0}

    def on_retrieve(batch: dict[str, Any]) -> None:
        with holder["lock"]:
            polls["n"] += 1
            if polls["n"] == 4 and "process" in holder:
                _kill(holder)

    api.on_retrieve = on_retrieve
    assert _spawn(config, run, holder).wait(timeout=120) == -signal.SIGKILL
    api.on_retrieve = lambda batch: None
    submitted = len(api.created_inputs)

    generate(load_config(config), run, progress=False)
    assert len(api.created_inputs) > submitted >= 3
    assert len(set(api.created_inputs)) == len(api.created_inputs)  # no batch submitted twice
    assert api.repeated() == []  # no row answered twice
    _same_dataset(reference, run)


def test_no_wait_twice_then_a_final_run(online, api, tmp_path, capsys) -> None:
    reference = _online_run(tmp_path)
    config = _config_file(tmp_path)
    args = ["generate", str(config), "--out", str(tmp_path / "batch"), "--no-progress", "--batch", "--no-wait"]
    assert main(args) == BATCHES_PENDING_EXIT
    assert len(api.batches) == 2 and not (tmp_path / "batch" / "manifest.json").exists()  # 30 questions: 16 + 14
    assert "wait for 2 batch(es) in flight" in capsys.readouterr().err
    assert main(args) == BATCHES_PENDING_EXIT  # the batches moved on, none ended: nothing new submitted
    assert len(api.batches) == 2
    assert main(args[:-1]) == 0  # waits for them, and every wave after
    assert api.repeated() == [] and len(set(api.created_inputs)) == len(api.created_inputs)
    _same_dataset(reference, tmp_path / "batch")


def test_cancel_batches_keeps_answers_and_resubmits_the_rest(online, api, tmp_path) -> None:
    reference = _online_run(tmp_path)
    config = _config_file(tmp_path, teacher={"mode": "batch"})
    base = ["generate", str(config), "--out", str(tmp_path / "batch"), "--no-progress"]
    assert main([*base, "--no-wait"]) == BATCHES_PENDING_EXIT
    assert main([*base, "--cancel-batches"]) == BATCHES_PENDING_EXIT
    assert {b["status"] for b in api.batches.values()} == {"cancelled"} and not api.answered
    assert main(base) == 0
    assert api.repeated() == []
    _same_dataset(reference, tmp_path / "batch")


def test_budget_cuts_waves_and_holds(online, api, tmp_path) -> None:
    reference = _online_run(tmp_path)
    budget = 0.04
    tight = _config_file(tmp_path, teacher={"mode": "batch"}, generation={"max_cost_usd": budget})
    with pytest.raises(RunStopped) as stop:
        generate(load_config(tight), tmp_path / "batch", progress=False)
    assert stop.value.reason == "budget"
    assert 0 < _ledger(tmp_path / "batch", "SELECT SUM(cost_usd) FROM responses WHERE ok = 1") <= budget
    roomy = _config_file(tmp_path, teacher={"mode": "batch"}, generation={"max_cost_usd": 10.0})
    generate(load_config(roomy), tmp_path / "batch", progress=False)
    assert api.repeated() == []
    _same_dataset(reference, tmp_path / "batch")


def test_flex_is_sent_on_every_request_and_survives_429s(online, tmp_path) -> None:
    reference = _online_run(tmp_path)
    online.bodies.clear()
    online.flex_429 = True
    flex = load_config(_config_file(tmp_path, teacher={"service_tier": "flex"}))
    result = generate(flex, tmp_path / "flex", progress=False)
    assert online.bodies and all(b.get("service_tier") == "flex" for b in online.bodies)
    assert len(online.refused) == len({json.dumps(b, sort_keys=True) for b in online.bodies})  # each refused once
    manifest = json.loads(result.manifest.read_text())
    assert manifest["teacher_usage"]["price_usd_per_1m_tokens"] == {"input": 1.25, "cached_input": 0.625,
                                                                   "output": 5.0}
    _same_dataset(reference, tmp_path / "flex")  # the tier is not part of the ledger key or the data


def test_batch_and_a_service_tier_do_not_mix(fake_openai, tmp_path) -> None:
    config = load_config(_config_file(tmp_path, teacher={"mode": "batch", "service_tier": "flex"}))
    with pytest.raises(ConfigError, match="teacher.service_tier"):
        generate(config, tmp_path / "run", progress=False)


def test_estimate_projects_the_batch_price(online, tmp_path) -> None:
    from distill.generation.estimate import estimate

    config = load_config(_config_file(tmp_path, teacher={"mode": "batch"}))
    result = estimate(config, tmp_path / "run", pilot=4, progress=False)  # the pilot runs online, at once
    projected = result.projected
    assert projected["usd"] > 0 and projected["batch_usd"] == pytest.approx(projected["usd"] / 2, abs=1e-4)  # both rounded to 4 places
    assert "at batch or flex prices" in result.format()


def test_top_up_rounds_go_through_waves(online, api, tmp_path) -> None:
    more = {"max_extra_conversations": 10}
    generate(load_config(_config_file(tmp_path, generation=more)), tmp_path / "online", progress=False)
    config = load_config(_config_file(tmp_path, generation=more, teacher={"mode": "batch"}))
    result = generate(config, tmp_path / "batch", progress=False)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["top_up"]["extra_conversations"] > 0
    assert api.repeated() == []
    _same_dataset(tmp_path / "online", tmp_path / "batch")


def test_the_judge_stage_goes_through_waves(online, api, tmp_path) -> None:
    judge = {"enabled": True}
    generate(load_config(_config_file(tmp_path, judge=judge)), tmp_path / "online", progress=False)
    config = load_config(_config_file(tmp_path, judge=judge, teacher={"mode": "batch"}))
    generate(config, tmp_path / "batch", progress=False)
    assert any(b["messages"][0]["content"] != "" and b["seed"] == 0 and b["temperature"] == 0 for b in api.bodies)
    assert api.repeated() == []
    _same_dataset(tmp_path / "online", tmp_path / "batch")
