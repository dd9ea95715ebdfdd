"""`--from-ledger` after a resume with faults rebuilds the run exactly (issue 16 item 7).

A top-up plans its extra conversations from the outcomes so far. When the first invocation had failures that the
resume turns into successes, the resume plans other extra conversations under the same ids; a finished conversation
is kept only for the plan it was made for, so plans.jsonl and trajectories.jsonl agree and every answer of the final
run is in the ledger.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from distill.config import config_from_dict
from distill.formats.langchain_actions import render_action
from distill.generation.pipeline import generate
from tests.conftest import CORPUS
from tests.fake_openai import FakeRequest, FakeResponse, chat_completion


class FlakyTeacher:
    """Answers by content; while `flaky`, the rollout requests of every fourth seed fail with HTTP 500."""

    def __init__(self) -> None:
        self.flaky = True
        self.answered = 0

    def __call__(self, request: FakeRequest) -> FakeResponse:
        body = request.json()
        seed = body["seed"]
        if body.get("response_format"):
            turns = 2 if "several user messages" in body["messages"][1]["content"] else 1
            text = json.dumps({"questions": [f"What does item {seed} say about BM25, part {i}?" for i in range(turns)]})
        elif self.flaky and seed % 4 == 1:
            return FakeResponse(status=500, json={"error": {"message": "down for now"}})
        elif seed % 7 == 3:
            text = "Sure. " + render_action("Vector Search Tool", f"bm25 {seed}")  # rejected: prose outside
        elif body["messages"][-1]["content"].startswith("TOOL RESPONSE"):
            text = render_action("Final Answer", f"BM25 ranks passages by term statistics ({seed}).")
        else:
            text = render_action("Vector Search Tool", f"bm25 item {seed} {len(body['messages'])}")
        self.answered += 1
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        return FakeResponse(body=json.dumps(chat_completion(text, usage=usage)).encode())


def _kinds(path: Path) -> dict[str, str]:
    return {row["id"]: row["kind"] for row in map(json.loads, path.read_text().splitlines())}


def test_from_ledger_rebuilds_a_resumed_run_with_faults_exactly(fake_openai, tmp_path: Path) -> None:
    teacher = FlakyTeacher()
    fake_openai.route("POST", r"/v1/chat/completions", teacher)
    config = config_from_dict({
        "name": "rebuild",
        "tools": [{"name": "Vector Search Tool", "description": "Searches the documents.", "kind": "retriever"}],
        "sources": [{"path": str(CORPUS)}],
        "teacher": {"provider": "openai", "model": "gpt-4o", "concurrency": 4, "max_retries": 0, "backoff_s": 0.01,
                    "breaker_s": 1000},
        "generation": {"conversations": 30, "seed": 5, "mix": {"tool": 0.5, "direct": 0.2, "multi_turn": 0.3}},
        "export": {"validation_fraction": 0.2, "dedup": {"enabled": False}},
    }, file=str(tmp_path / "rebuild.yaml"), base_dir=tmp_path)
    run = tmp_path / "run"
    first = generate(config, run, progress=False)
    assert first.conversations["failed"] > 0
    first_top_up = json.loads(first.manifest.read_text())["top_up"]

    teacher.flaky = False  # the resume retries the failures, which now succeed: the top-up plans other kinds
    second = generate(config, run, progress=False)
    manifest = json.loads(second.manifest.read_text())
    assert second.conversations["failed"] == 0
    assert manifest["top_up"]["rounds"] != first_top_up["rounds"]
    assert _kinds(run / "trajectories.jsonl") == _kinds(run / "plans.jsonl")  # each conversation is its plan's

    shutil.copytree(run, tmp_path / "copy")
    sent = teacher.answered
    rebuilt = generate(config, tmp_path / "copy", progress=False, from_ledger=True)
    assert teacher.answered == sent  # zero calls
    assert json.loads(rebuilt.manifest.read_text())["failures_by_reason"] == {}
    assert rebuilt.conversations == second.conversations and rebuilt.examples == second.examples
    for name in ("plans.jsonl", "trajectories.jsonl", "train.jsonl", "validation.jsonl", "rejected.jsonl"):
        assert (run / name).read_bytes() == (tmp_path / "copy" / name).read_bytes(), name
