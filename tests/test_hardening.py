"""Hardening (issue 16): huge tool outputs, Ctrl-C, an unreachable endpoint, and the small things a new user hits.

Each test is the issue's repro turned into an assertion of what the user should see instead.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from distill.cli import main
from distill.config import load_config
from distill.finetuning.finetune import finetune
from distill.formats.langchain_actions import render_action
from distill.generation.pipeline import generate
from distill.tokens import PIECE_CHARS, count_example, count_text, encoding_for
from tests.conftest import CORPUS
from tests.fake_openai import FakeRequest, FakeResponse
from tests.test_finetune import FAST, generated_run, run_dir, service  # noqa: F401 (fixtures)
from tests.test_resume import Teacher, _config_file, _same_dataset

TOOL_ONLY = {"tool": 1.0, "direct": 0.0, "multi_turn": 0.0}


# -- 1. a huge tool output is counted, rejected as over_token_limit, never a crash ---------------------------------


def test_token_counting_never_raises_and_stays_exact() -> None:
    text = (CORPUS / "03-retrieval.md").read_text(encoding="utf-8")
    long = (text * (3 * PIECE_CHARS // len(text) + 1))[: 3 * PIECE_CHARS]  # counted in pieces, under bpe's limit
    for model in ("gpt-4o", "gpt-3.5-turbo"):
        assert count_text(long, model) == len(encoding_for(model).encode_ordinary(long))
    assert count_text("x " * 7_500_000, "gpt-4o") > 7_000_000  # 15 MB: bpe-openai alone raises on it
    assert count_text("a document that mentions <|endoftext|> as text", "gpt-4o") > 5  # not refused


def test_a_huge_tool_output_is_rejected_as_over_token_limit(make_config, tmp_path) -> None:
    (tmp_path / "huge_tools.py").write_text('def huge(query):\n    return "x " * 600_000\n', encoding="utf-8")
    tool = {"name": "Calculator", "description": "Evaluates arithmetic.", "kind": "python",
            "function": "huge_tools:huge", "examples": [{"question": "What is 17 times 23?", "input": "17 * 23"}]}
    config = make_config(tools=[tool], generation={"conversations": 3, "seed": 0, "mix": TOOL_ONLY})
    result = generate(config, tmp_path / "run", progress=False)  # the top-up counts these examples: no crash
    manifest = json.loads(result.manifest.read_text())
    assert manifest["rejects_by_reason"] == {"over_token_limit": 3}
    rejected = [json.loads(line) for line in result.rejected.read_text().splitlines()]
    assert all("tokens >" in r["detail"] for r in rejected)


def test_validate_reports_a_15_mb_line(tmp_path, capsys) -> None:
    path = tmp_path / "big.jsonl"
    ok = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    big = {"messages": [{"role": "user", "content": "x " * 7_500_000}, {"role": "assistant", "content": "hello"}]}
    path.write_text(json.dumps(ok) + "\n" + json.dumps(big) + "\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: over_token_limit" in out and f"{path}:1:" not in out
    assert count_example(big, "gpt-4o") > 7_500_000


# -- 3. Ctrl-C: the first drains the requests in flight into the ledger, the second aborts at once ------------------


class _SigintTeacher(Teacher):
    """tests/test_resume.py's teacher, which sends SIGINT to the client while a request of its is in flight."""

    def __init__(self, latency: float) -> None:
        super().__init__(latency)
        self.sigint_at: int | None = None
        self.received = 0
        self.in_flight_at_sigint = 0

    def __call__(self, request: FakeRequest) -> FakeResponse:
        with self.lock:
            self.received += 1
            if self.sigint_at is not None and self.process is not None and sum(self.answered.values()) >= self.sigint_at:
                self.process.send_signal(signal.SIGINT)  # this request (and the others in flight) is answered after it
                self.sigint_at = None
                self.in_flight_at_sigint = self.received - sum(self.answered.values())
        return super().__call__(request)


def _cli(config_path: Path, run: Path, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "distill.cli", "generate", str(config_path), "--out", str(run), "--no-progress"]
    return subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.DEVNULL, text=True, **kwargs)


def test_ctrl_c_stores_the_answers_in_flight_and_the_resume_pays_nothing_twice(fake_openai, tmp_path) -> None:
    teacher = _SigintTeacher(latency=0.0)
    fake_openai.route("POST", r"/v1/chat/completions", teacher)
    config_path = _config_file(tmp_path)
    generate(load_config(config_path), tmp_path / "whole", progress=False)
    total = sum(teacher.answered.values())
    teacher.answered.clear()

    run = tmp_path / "run"
    teacher.latency, teacher.sigint_at = 0.2, total // 3
    with teacher.lock:
        teacher.process = _cli(config_path, run, stderr=subprocess.PIPE)
    _, err = teacher.process.communicate(timeout=120)
    assert teacher.process.returncode == 130, err
    teacher.process = None
    assert teacher.in_flight_at_sigint >= 1
    answered = sum(teacher.answered.values())
    assert total // 3 <= answered < total
    with sqlite3.connect(run / "ledger.sqlite") as db:  # every answer the server gave is stored, those in flight too
        assert db.execute("SELECT COUNT(*) FROM responses WHERE ok = 1").fetchone()[0] == answered
    assert "interrupted: starting no new request; waiting for the" in err and "Ctrl-C again aborts" in err
    assert "interrupted (Ctrl-C)" in err and f"distill generate {config_path} --out {run}" in err
    assert "Traceback" not in err

    teacher.latency = 0.0
    generate(load_config(config_path), run, progress=False)
    assert teacher.repeated() == []  # zero repeated requests, counted at the server
    assert sum(teacher.answered.values()) == total
    _same_dataset(tmp_path / "whole", run)


def test_a_second_ctrl_c_aborts_at_once(fake_openai, tmp_path) -> None:
    release = threading.Event()
    hanging: list[FakeRequest] = []

    def hang(request: FakeRequest) -> FakeResponse:
        hanging.append(request)
        release.wait(120)  # an endpoint that never answers: the first Ctrl-C alone would wait for teacher.timeout_s
        return FakeResponse(status=503, json={"error": {"message": "gone"}})

    fake_openai.route("POST", r"/v1/chat/completions", hang)
    config_path = _config_file(tmp_path, teacher={"timeout_s": 100})
    process = _cli(config_path, tmp_path / "run", stderr=subprocess.PIPE)
    try:
        while len(hanging) < 4:  # concurrency 4: every slot holds a request
            assert process.poll() is None
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        first = ""
        while "interrupted: starting no new request" not in first:
            first = process.stderr.readline()
            assert first, "the first Ctrl-C printed nothing"
        assert "waiting for the 4 request(s) in flight (at most 100 s)" in first
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        assert process.wait(timeout=60) == 130
    finally:
        release.set()
        process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()
    assert "aborted" in rest and "Traceback" not in rest


# -- 4. an endpoint that cannot be reached stops the run early; a run that made nothing never exits 0 -------------


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_endpoint_stops_early_and_says_where(tmp_path, monkeypatch, capsys) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    config_path = _config_file(tmp_path, teacher={"max_retries": 2, "backoff_s": 0.01})
    assert main(["generate", str(config_path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the endpoint at {url}" in err and "ConnectError" in err
    assert "OPENAI_BASE_URL" in err  # the hint names what to fix
    with sqlite3.connect(tmp_path / "run" / "ledger.sqlite") as db:  # stopped after a few attempts, not 30 failures
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] <= 4


def test_a_run_where_every_conversation_failed_exits_non_zero(fake_openai, tmp_path, capsys) -> None:
    fake_openai.chat_script = lambda body: FakeResponse(status=400, json={"error": {"message": "bad request"}})
    config_path = _config_file(tmp_path)
    assert main(["generate", str(config_path), "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no example was exported: all 30 conversations failed (http_400 30)" in err
    assert "rejected.jsonl" in err


def test_a_run_with_no_example_exits_non_zero(tmp_path, capsys) -> None:
    path = tmp_path / "cfg.yaml"
    data = {"name": "t", "tools": [{"name": "Vector Search Tool", "description": "Searches.", "kind": "retriever"}],
            "sources": [{"path": str(CORPUS)}], "teacher": {"provider": "offline"},
            "generation": {"conversations": 4, "seed": 0, "mix": TOOL_ONLY}, "export": {"max_example_tokens": 10}}
    path.write_text(json.dumps(data), encoding="utf-8")
    assert main(["generate", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no example was exported: 4 conversation(s) rejected (over_token_limit 4)" in err


# -- 5. chat against an endpoint that is down: one line, no traceback ----------------------------------------------


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("chat")
    data = {"name": "t", "agent": {"format": "langchain-chat", "max_steps": 3},
            "tools": [{"name": "Vector Search Tool", "description": "Searches the documents.", "kind": "retriever"}],
            "sources": [{"path": str(CORPUS)}], "teacher": {"provider": "offline", "max_retries": 0},
            "generation": {"conversations": 3, "seed": 0, "mix": TOOL_ONLY}}
    path = folder / "cfg.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")
    generate(load_config(path), folder / "run", progress=False)
    return path, folder / "run"


def test_chat_against_a_closed_port_prints_one_line(chat_run, capsys) -> None:
    path, run = chat_run
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    code = main(["chat", str(path), "--model", "m", "--run", str(run), "--question", "Hi?", "--base-url", url])
    captured = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in captured.err + captured.out
    assert captured.err.splitlines()[0].startswith(f"distill: error: cannot reach the model endpoint at {url}")
    assert len(captured.err.splitlines()) <= 2  # the error and its hint


def test_chat_prints_the_strict_validators_note_after_the_action(chat_run, fake_openai, capsys) -> None:
    path, run = chat_run

    def student(body: dict) -> str:
        if body["messages"][-1]["content"].startswith("TOOL RESPONSE"):
            return render_action("Final Answer", "BM25 ranks passages.")
        return "Sure. " + render_action("Vector Search Tool", "BM25")  # prose outside: LangChain accepts it

    fake_openai.chat_script = student
    assert main(["chat", str(path), "--model", "m", "--run", str(run), "--question", "What is BM25?"]) == 0
    out = capsys.readouterr().out.splitlines()
    action = next(i for i, line in enumerate(out) if line.startswith("> Action: Vector Search Tool"))
    note = next(i for i, line in enumerate(out) if "(strict validator:" in line)
    assert action < note < next(i for i, line in enumerate(out) if "Observation:" in line)


# -- 10. the smaller ones -------------------------------------------------------------------------------------------


def test_finetune_estimate_of_a_run_whose_job_was_cancelled(run_dir, service, capsys) -> None:  # noqa: F811
    finetune(run_dir, **FAST)
    finetune(run_dir, cancel=True, **FAST)
    lines: list[str] = []
    finetune(run_dir, echo=lines.append, **FAST)
    assert any(f"`distill finetune {run_dir} --new` starts another" in line for line in lines), lines
    assert main(["finetune", str(run_dir), "--estimate"]) == 0  # an estimate does not fail for the job's status
    assert "estimate for" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["finetune", "RUN", "--estimate", "--price-per-1m", "-3"],
        ["finetune", "RUN", "--price-per-1m", "nan"],
        ["report", "RUN", "--examples", "-1"],
        ["estimate", "CFG", "--pilot", "0"],
        ["validate", "FILE", "--max-lines", "-5"],
        ["eval", "CFG", "--model", "m", "--concurrency", "0"],
        ["chat", "CFG", "--model", "m", "--temperature", "-1"],
    ],
)
def test_negative_numbers_are_refused_on_the_command_line(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least" in err and "Traceback" not in err


def test_a_direct_conversation_that_called_a_tool_does_not_meet_the_direct_quota(fake_openai, make_config,
                                                                                tmp_path) -> None:
    def teacher(body: dict) -> str:
        if body.get("response_format"):
            direct = "without any tool" in body["messages"][1]["content"]
            return json.dumps({"questions": [f"{'Hello' if direct else 'Where is'} item {body['seed']}?"]})
        if body["messages"][-1]["content"].startswith("TOOL RESPONSE"):
            return render_action("Final Answer", "Found it in the documents.")
        return render_action("Vector Search Tool", "item")  # every question, small talk too, gets a search

    fake_openai.chat_script = teacher
    config = make_config(teacher={"provider": "openai", "model": "gpt-4o", "max_retries": 0},
                         generation={"conversations": 10, "seed": 1, "max_extra_conversations": 0,
                                     "mix": {"tool": 0.5, "direct": 0.5, "multi_turn": 0.0}})
    manifest = json.loads(generate(config, tmp_path / "run", progress=False).manifest.read_text())
    direct = manifest["coverage"]["by_kind"]["direct"]
    assert (direct["accepted"], direct["off_plan"], direct["met"]) == (0, 5, False)
    assert manifest["coverage"]["by_kind"]["tool"]["accepted"] == 5
    assert manifest["coverage"]["mix_met"] is False and manifest["top_up"]["mix_met"] is False


def test_the_bar_says_what_it_counts_and_grows_with_the_top_up(fake_openai, make_config, tmp_path, capsys) -> None:
    from tests.test_coverage import _skewed_teacher

    fake_openai.chat_script = _skewed_teacher()
    config = make_config(teacher={"provider": "openai", "model": "gpt-4o", "max_retries": 0, "concurrency": 4},
                         generation={"conversations": 20, "seed": 3,
                                     "mix": {"tool": 0.5, "direct": 0.3, "multi_turn": 0.2}})
    result = generate(config, tmp_path / "run", progress=True)
    extra = json.loads(result.manifest.read_text())["top_up"]["extra_conversations"]
    assert extra > 0
    err = capsys.readouterr().err  # one bar to the end of the run: the top-up joins it while it runs
    assert f"conversations (top-up +{extra}): 100%" in err and f" {20 + extra}/{20 + extra} " in err
    assert "validated=" in err and "accepted=" not in err  # counted before export's dedup: not called "accepted"


def test_estimate_after_a_full_run_refuses_to_shrink_its_dataset(fake_openai, tmp_path, capsys) -> None:
    fake_openai.route("POST", r"/v1/chat/completions", Teacher())
    config_path, run = _config_file(tmp_path), tmp_path / "run"
    generate(load_config(config_path), run, progress=False)
    train = (run / "train.jsonl").read_bytes()
    assert main(["estimate", str(config_path), "--pilot", "3", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{run} holds a full run (30 conversations" in err and "--force" in err
    assert (run / "train.jsonl").read_bytes() == train  # untouched
    assert main(["estimate", str(config_path), "--pilot", "3", "--out", str(run), "--no-progress", "--force"]) == 0
    assert len((run / "train.jsonl").read_bytes()) < len(train)  # what --force was warned about
    # and a pilot's run folder can be estimated again without --force
    assert main(["estimate", str(config_path), "--pilot", "3", "--out", str(run), "--no-progress"]) == 0


def test_an_unknown_model_says_which_token_limit_it_assumes(tmp_path, caplog, capsys) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="distill.tokens"):
        assert main(["validate", str(path), "--model", "my-new-model-2031"]) == 0
    assert "'my-new-model-2031' is not in distill's table" in caplog.text
    assert "assuming 16,385 tokens: set export.max_example_tokens" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="distill.tokens"):
        assert main(["validate", str(path), "--model", "gpt-4o-mini-2024-07-18"]) == 0
    assert caplog.text == ""


def test_the_terminal_names_skipped_sources_says_what_it_is_reading_and_warns_of_no_validation(
    make_config, tmp_path, caplog, capsys
) -> None:
    sources = tmp_path / "docs"
    sources.mkdir()
    (sources / "retrieval.md").write_text((CORPUS / "03-retrieval.md").read_text(encoding="utf-8"), encoding="utf-8")
    (sources / "scan.pdf").write_bytes(b"not a pdf at all \x00\x01\x02")
    config = make_config(sources=[{"path": str(sources)}], generation={"conversations": 4, "seed": 0, "mix": TOOL_ONLY})
    with caplog.at_level(logging.WARNING):
        result = generate(config, tmp_path / "run", progress=True)
    assert result.examples["train"] > 0 and result.examples["validation"] == 0
    warnings = [r.getMessage() for r in caplog.records]
    assert any(w.startswith("skipped source docs/scan.pdf: pdf unreadable") for w in warnings), warnings
    assert any("validation.jsonl is empty" in w and "from 1 document(s)" in w for w in warnings), warnings
    err = capsys.readouterr().err
    assert err.index("reading the sources ...") < err.index("1 document(s), ") < err.index("conversations:")
    assert "building the search index ..." in err


def test_no_warning_when_no_validation_split_is_wanted(make_config, tmp_path, caplog) -> None:
    config = make_config(sources=[{"path": str(CORPUS / "03-retrieval.md")}], export={"validation_fraction": 0.0},
                         generation={"conversations": 4, "seed": 0, "mix": TOOL_ONLY})
    with caplog.at_level(logging.WARNING):
        generate(config, tmp_path / "run", progress=False)
    assert "validation.jsonl is empty" not in caplog.text


def test_a_full_disk_under_the_ledger_is_one_line(fake_openai, tmp_path, monkeypatch, capsys) -> None:
    """Item 8 with a real teacher: SQLite's "database or disk is full" is not an OSError; it still ends in one line."""
    from distill.teachers.ledger import Ledger

    fake_openai.route("POST", r"/v1/chat/completions", Teacher())

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Ledger, "record", full)
    code = main(["generate", str(_config_file(tmp_path)), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot write the run folder's ledger (ledger.sqlite): database or disk is full" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2  # the error and its hint
