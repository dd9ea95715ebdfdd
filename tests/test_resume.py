"""Resume: kill -9 mid-run, budget and breaker stops, replays from the ledger; nothing paid twice, nothing duplicated.

The fake teacher answers by content (the same request body always gets the same answer), so an interrupted and
resumed run must produce exactly the dataset of an uninterrupted one, and the server can count repeated requests.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from distill.cli import main
from distill.config import load_config
from distill.errors import RunStopped
from distill.formats.langchain_actions import render_action
from distill.generation.pipeline import generate
from distill.generation.resume import RunSession
from distill.trajectory import Trajectory
from tests.conftest import CORPUS
from tests.fake_openai import FakeRequest, FakeResponse, chat_completion

DATASET = ("train.jsonl", "validation.jsonl", "rejected.jsonl", "trajectories.jsonl")


class Teacher:
    """A deterministic scripted teacher with a request log; optionally kills a client or fails on cue."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.lock = threading.Lock()
        self.answered: Counter[bytes] = Counter()  # request bodies answered 200
        self.down = False  # answer 503 to everything
        self.kill_at: int | None = None  # kill `process` when this many answers were given...
        self.process: subprocess.Popen | None = None
        self.ledger: Path | None = None  # ... once the client has stored all of them

    def __call__(self, request: FakeRequest) -> FakeResponse:
        time.sleep(self.latency)
        with self.lock:
            if self.process is not None and self.process.returncode is not None:
                return FakeResponse(drop=True)  # the client is dead: requests still arriving find no one
            if self.kill_at is not None and self.process is not None and sum(self.answered.values()) >= self.kill_at:
                self._kill()
                return FakeResponse(drop=True)
            if self.down:
                return FakeResponse(status=503, json={"error": {"message": "maintenance"}})
            self.answered[request.body] += 1
            return FakeResponse(body=json.dumps(self.answer(request.json())).encode())

    def _kill(self) -> None:
        """SIGKILL the client, but only once every answer it was sent is in its ledger (see the module doc)."""
        given = sum(self.answered.values())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with sqlite3.connect(self.ledger) as db:
                    stored = db.execute("SELECT COUNT(*) FROM responses WHERE ok = 1").fetchone()[0]
            except sqlite3.Error:
                stored = -1
            if stored >= given:
                break
            time.sleep(0.005)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kill_at = None

    @staticmethod
    def answer(body: dict) -> dict:
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
        usage = {"prompt_tokens": 400 + seed % 100, "completion_tokens": 30, "total_tokens": 430 + seed % 100}
        return chat_completion(text, usage=usage)

    def repeated(self) -> list[bytes]:
        return [body for body, n in self.answered.items() if n > 1]


def _config_file(tmp_path: Path, **changes) -> Path:
    data = {
        "name": "resume-test",
        "tools": [{"name": "Vector Search Tool", "description": "Searches the documents.", "kind": "retriever"}],
        "sources": [{"path": str(CORPUS)}],
        # retries absorb the odd connection reset of a loaded test machine: the runs compared must not fail
        "teacher": {"provider": "openai", "model": "gpt-4o", "concurrency": 4, "max_retries": 6, "backoff_s": 0.05},
        "generation": {"conversations": 30, "seed": 5, "mix": {"tool": 0.6, "direct": 0.0, "multi_turn": 0.4},
                       "max_extra_conversations": 0},
        "export": {"validation_fraction": 0.2, "dedup": {"enabled": False}},
    }
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value}
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _same_dataset(a: Path, b: Path) -> None:
    for name in DATASET:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    for key in ("conversations", "examples", "rejects_by_reason", "failures_by_reason"):
        assert ma[key] == mb[key], key


@pytest.fixture
def teacher(fake_openai) -> Teacher:
    script = Teacher()
    fake_openai.route("POST", r"/v1/chat/completions", script)
    return script


def test_kill_9_mid_run_then_resume(teacher, tmp_path) -> None:
    config_path = _config_file(tmp_path)
    config = load_config(config_path)
    assert generate(config, tmp_path / "whole", progress=False).conversations["failed"] == 0
    total = sum(teacher.answered.values())
    teacher.answered.clear()

    run = tmp_path / "run"
    teacher.latency, teacher.kill_at, teacher.ledger = 0.01, total // 2, run / "ledger.sqlite"
    with teacher.lock:  # the killer needs the process handle before the first request can reach it
        teacher.process = subprocess.Popen(
            [sys.executable, "-m", "distill.cli", "generate", str(config_path), "--out", str(run), "--no-progress"],
            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    assert teacher.process.wait(timeout=120) == -signal.SIGKILL
    time.sleep(0.5)  # requests the dead client left in the server's queue are dropped, not answered to no one
    teacher.process = None
    killed = dict(teacher.answered)
    assert total // 2 == sum(killed.values())

    lines = (run / "trajectories.jsonl").read_text().splitlines()
    ids = [Trajectory.model_validate_json(line).id for line in lines if line.endswith("}")]
    assert 0 < len(ids) < 30 and len(ids) == len(set(ids))  # finished conversations, each once
    assert not (run / "manifest.json").exists()

    teacher.latency = 0.0
    result = generate(load_config(config_path), run, progress=False)
    assert teacher.repeated() == []  # no answered request was sent again
    assert sum(teacher.answered.values()) == total  # and every request of the run was answered exactly once
    manifest = json.loads(result.manifest.read_text())
    assert manifest["resume"]["resumed_conversations"] >= len(ids)
    assert manifest["teacher_usage"]["run_folder"]["usd"] == pytest.approx(
        json.loads((tmp_path / "whole" / "manifest.json").read_text())["teacher_usage"]["run_folder"]["usd"]
    )
    _same_dataset(tmp_path / "whole", run)


def test_budget_stops_before_passing_it_and_resumes(teacher, tmp_path) -> None:
    price = {"price": {"input": 100.0, "output": 100.0}}
    generate(load_config(_config_file(tmp_path, teacher=price)), tmp_path / "whole", progress=False)
    whole = json.loads((tmp_path / "whole" / "manifest.json").read_text())["teacher_usage"]["run_folder"]["usd"]
    teacher.answered.clear()

    budget = round(whole / 3, 4)
    tight = load_config(_config_file(tmp_path, teacher=price, generation={"max_cost_usd": budget}))
    with pytest.raises(RunStopped) as stop:
        generate(tight, tmp_path / "run", progress=False)
    assert stop.value.reason == "budget" and "max_cost_usd" in stop.value.message
    assert "distill generate" in stop.value.hint and "raise generation.max_cost_usd" in stop.value.hint
    with sqlite3.connect(tmp_path / "run" / "ledger.sqlite") as db:
        spent = db.execute("SELECT SUM(cost_usd) FROM responses WHERE ok = 1").fetchone()[0]
    assert 0 < spent <= budget

    roomy = load_config(_config_file(tmp_path, teacher=price, generation={"max_cost_usd": whole * 2}))
    result = generate(roomy, tmp_path / "run", progress=False)
    assert teacher.repeated() == []
    assert json.loads(result.manifest.read_text())["teacher_usage"]["run_folder"]["usd"] == pytest.approx(whole)
    _same_dataset(tmp_path / "whole", tmp_path / "run")


def test_breaker_stop_says_what_happened_and_resumes(teacher, tmp_path) -> None:
    config = load_config(_config_file(tmp_path, teacher={"max_retries": 50, "breaker_s": 0.3}))
    generate(config, tmp_path / "whole", progress=False)
    total = sum(teacher.answered.values())
    teacher.answered.clear()

    real = teacher.answer

    def flaky(body: dict) -> dict:
        if sum(teacher.answered.values()) >= total // 3:
            teacher.down = True
        return real(body)

    teacher.answer = flaky
    with pytest.raises(RunStopped) as stop:
        generate(config, tmp_path / "run", progress=False)
    assert stop.value.reason == "endpoint"
    assert "HTTP 503" in stop.value.message and "maintenance" in stop.value.message
    assert "saved" in stop.value.message and f"--out {tmp_path / 'run'}" in stop.value.hint

    teacher.down, teacher.answer = False, real
    generate(config, tmp_path / "run", progress=False)
    assert teacher.repeated() == []
    _same_dataset(tmp_path / "whole", tmp_path / "run")


def test_rebuild_from_the_ledger_makes_no_call(teacher, tmp_path, monkeypatch) -> None:
    config_path = _config_file(tmp_path)
    generate(load_config(config_path), tmp_path / "run", progress=False)
    (tmp_path / "first").mkdir()
    for name in DATASET:
        (tmp_path / "first" / name).write_bytes((tmp_path / "run" / name).read_bytes())
    (tmp_path / "first" / "manifest.json").write_bytes((tmp_path / "run" / "manifest.json").read_bytes())
    sent = len(teacher.answered)
    monkeypatch.delenv("OPENAI_API_KEY")  # no key needed: nothing is sent

    assert main(["generate", str(config_path), "--out", str(tmp_path / "run"), "--from-ledger", "--no-progress"]) == 0
    assert len(teacher.answered) == sent
    _same_dataset(tmp_path / "first", tmp_path / "run")

    # a changed system prompt changes every rollout request: none is in the ledger, and none is sent
    changed = load_config(_config_file(tmp_path, agent={"system_prompt": "You are a terse assistant."}))
    result = generate(changed, tmp_path / "run", progress=False, from_ledger=True)
    assert result.conversations["failed"] == 30 and len(teacher.answered) == sent
    assert json.loads(result.manifest.read_text())["failures_by_reason"] == {"not_in_ledger": 30}


def test_config_changes_keep_paid_answers(teacher, tmp_path) -> None:
    generate(load_config(_config_file(tmp_path)), tmp_path / "run", progress=False)
    sent = sum(teacher.answered.values())
    # speed and budget keys: the finished conversations are kept as they are
    faster = load_config(_config_file(tmp_path, teacher={"concurrency": 16, "rpm": 10_000},
                                      generation={"max_extra_conversations": 5, "mix_tolerance": 0.5}))
    result = generate(faster, tmp_path / "run", progress=False)
    assert json.loads(result.manifest.read_text())["resume"] == {"resumed_conversations": 30, "new_conversations": 0}
    # a key that changes the run but not its requests: every conversation runs again, every answer from the ledger
    other = load_config(_config_file(tmp_path, agent={"max_steps": 4}))
    result = generate(other, tmp_path / "run", progress=False)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["resume"] == {"resumed_conversations": 0, "new_conversations": 30}
    assert manifest["teacher_usage"]["this_invocation"]["ledger_hits"] == sent
    assert sum(teacher.answered.values()) == sent


class _LedgerUser:
    """A teacher that takes a run folder's ledger (as a real one does), so its runs resume."""

    provider, model = "openai", "gpt-4o"

    def use_run(self, ledger, meter) -> None:
        self.ledger = ledger


def test_offline_runs_are_always_recomputed(make_config, tmp_path) -> None:
    config = make_config(generation={"conversations": 6, "seed": 0, "mix": {"tool": 1.0, "direct": 0.0, "multi_turn": 0.0}})
    generate(config, tmp_path / "run", progress=False)
    result = generate(config, tmp_path / "run", progress=False)
    assert json.loads(result.manifest.read_text())["resume"] == {"resumed_conversations": 0, "new_conversations": 6}
    assert not (tmp_path / "run" / "ledger.sqlite").exists()


def test_resume_drops_cut_lines_and_failed_conversations(make_config, tmp_path) -> None:
    config = make_config(generation={"conversations": 4, "seed": 0, "mix": {"tool": 1.0, "direct": 0.0, "multi_turn": 0.0}})
    result = generate(config, tmp_path / "run", progress=False)
    path = tmp_path / "run" / "trajectories.jsonl"
    lines = path.read_text().splitlines()
    failed = Trajectory.model_validate_json(lines[1]).fail("rollout", "http_500", "boom").model_dump_json()
    path.write_text("\n".join([lines[0], failed, lines[2], lines[0], lines[3][:40]]) + "\n")  # a dup and a cut line
    from distill.generation.questions import plan_conversations
    from distill.generation.sources import chunk_documents, load_documents

    chunks = chunk_documents(load_documents(config)[0], config.chunking)
    plans = plan_conversations(config, chunks)
    session = RunSession.open(config, result.run_dir, plans, [c.text for c in chunks], teacher=_LedgerUser())
    assert sorted(session.finished) == sorted(Trajectory.model_validate_json(x).id for x in (lines[0], lines[2]))
    assert path.read_text().splitlines() == [lines[0], lines[2]]  # compacted: what remains is whole and unique
    session.close()


def test_estimate_runs_a_pilot_that_the_full_run_resumes(teacher, tmp_path, capsys) -> None:
    config_path = _config_file(tmp_path)
    assert main(["estimate", str(config_path), "--pilot", "5", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "pilot: 5 conversation(s) with gpt-4o" in out
    assert "projected for 30 conversations" in out and "$" in out and "acceptance" in out
    pilot_requests = sum(teacher.answered.values())
    assert main(["estimate", str(config_path), "--pilot", "5", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert sum(teacher.answered.values()) == pilot_requests  # the second estimate replays the pilot for free
    result = generate(load_config(config_path), tmp_path / "run", progress=False)
    assert json.loads(result.manifest.read_text())["resume"]["resumed_conversations"] == 5
    assert teacher.repeated() == []
