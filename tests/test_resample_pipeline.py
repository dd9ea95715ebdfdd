"""Step resampling end to end: a local OpenAI-compatible endpoint (tests/fake_openai.py) that answers 30% of the
agent steps malformed, decided by a seeded hash of each request (so a re-ask, with its new `seed`, is a fresh
draw, and every run of the test sees the same answers).

Shown: acceptance and dollars per accepted conversation with `generation.step_retries` 0 and 2 (exact figures of
this seeded fake, also in docs/judge.md), every re-ask a distinct request in the ledger under stage `resample`, the
accounting closing against what the server sent, the attempts kept in the records, and preference pairs whose
non-preferred answer is the malformed reply the server sent and whose input is the training step's prompt.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from distill.formats.langchain_actions import render_action
from distill.generation.pipeline import generate, load_trajectories
from distill.teachers.ledger import Ledger
from tests.fake_openai import FakeRequest, FakeResponse, chat_completion
from tests.test_preferences import _expected, _read, check_openai_preference

MALFORMED = 0.3
USAGE = {"prompt_tokens": 400, "completion_tokens": 30, "total_tokens": 430}  # gpt-4o: $0.0013 a request


def _draw(body: dict[str, Any]) -> float:
    blob = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return int(hashlib.sha256(blob).hexdigest()[:8], 16) / 16**8


class MalformedSteps:
    """Answers questions, tool calls and final answers; 30% of the agent steps as prose around the action."""

    def __init__(self) -> None:
        self.served: list[bytes] = []
        self.malformed: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: FakeRequest) -> FakeResponse:
        body = request.json()
        seed = body["seed"]
        if body.get("response_format"):
            turns = 2 if "several user messages" in body["messages"][1]["content"] else 1
            text = json.dumps({"questions": [f"How does BM25 rank passages, case {seed} part {i}?" for i in range(turns)]})
        elif body["messages"][-1]["content"].startswith("TOOL RESPONSE"):
            text = render_action("Final Answer", f"BM25 ranks passages by term statistics ({seed}).")
        else:
            text = render_action("Vector Search Tool", f"bm25 ranking {seed} {len(body['messages'])}")
        if not body.get("response_format") and _draw(body) < MALFORMED:
            text = f"Sure, here is my next step ({seed}): " + text  # text outside the block: the reader rejects it
            with self.lock:
                self.malformed.append(text)
        payload = json.dumps(chat_completion(text, usage=USAGE)).encode()
        with self.lock:
            self.served.append(payload)
        return FakeResponse(body=payload)


def _config(make_config, step_retries: int) -> Any:
    return make_config(
        teacher={"provider": "openai", "model": "gpt-4o", "concurrency": 4, "max_retries": 4, "backoff_s": 0.01},
        generation={"conversations": 60, "seed": 13, "mix": {"tool": 0.6, "direct": 0.0, "multi_turn": 0.4},
                    "max_extra_conversations": 0, "step_retries": step_retries},
        export={"validation_fraction": 0.3, "dedup": {"enabled": False}, "preferences": True},
    )


def _run(fake_openai, make_config, tmp_path: Path, step_retries: int) -> tuple[dict[str, Any], Path, MalformedSteps]:
    server = MalformedSteps()
    fake_openai.route("POST", r"/v1/chat/completions", server)
    run = tmp_path / f"retries-{step_retries}"
    generate(_config(make_config, step_retries), run, progress=False)
    return json.loads((run / "manifest.json").read_text(encoding="utf-8")), run, server


def _closes(manifest: dict[str, Any], run: Path, server: MalformedSteps) -> None:
    """Every answer the server sent is in the ledger once; requests and dollars add up per stage."""
    with Ledger.open(run / "ledger.sqlite") as ledger:
        assert sorted(e.response.encode() for e in ledger.entries(ok=True)) == sorted(server.served)
        total = ledger.total_usd()
    usage = manifest["teacher_usage"]
    by_stage = usage["run_folder"]["by_stage"]
    assert sum(s["responses"] for s in by_stage.values()) == len(server.served) == usage["this_invocation"]["requests"]
    assert sum(s["usd"] for s in by_stage.values()) == pytest.approx(total) == pytest.approx(usage["run_folder"]["usd"])
    assert total == pytest.approx(len(server.served) * 0.0013)


@pytest.mark.parametrize("step_retries", [0, 2])
def test_resampling_recovers_malformed_steps_and_the_accounting_closes(fake_openai, make_config, tmp_path,
                                                                       step_retries) -> None:
    manifest, run, server = _run(fake_openai, make_config, tmp_path, step_retries)
    _closes(manifest, run, server)
    c, resampled = manifest["conversations"], manifest["resampling"]
    trajectories = load_trajectories(run)
    recovered = [s for t in trajectories for turn in t.turns for s in turn.steps if s.attempts]
    by_stage = manifest["teacher_usage"]["run_folder"]["by_stage"]
    # the exact figures of this seeded fake (docs/judge.md, "Step resampling", quotes them)
    if step_retries == 0:
        assert (c["accepted"], c["rejected"], c["failed"]) == (25, 35, 0)
        assert manifest["rejects_by_reason"] == {"text_outside_block": 35}
        assert "resample" not in by_stage and not recovered
        assert resampled["steps_recovered"] == resampled["steps_given_up"] == resampled["rejected_attempts"] == 0
        assert resampled["usd_per_accepted_conversation"] == pytest.approx(0.009568, abs=1e-6)
        assert all(t.raw in server.malformed for t in trajectories if t.outcome == "rejected")
        return
    assert (c["accepted"], c["rejected"], c["failed"]) == (54, 6, 0)
    assert manifest["rejects_by_reason"] == {"text_outside_block": 6}
    assert resampled["steps_recovered"] == len(recovered) == 39 and resampled["conversations_recovered"] == 29
    assert resampled["steps_given_up"] == 6 and resampled["rejected_attempts"] == 65
    # re-asks: every rejected answer but each step's first ask (stage rollout), plus the accepted re-asks
    assert resampled["resample_requests"] == by_stage["resample"]["responses"] == 65 - (39 + 6) + 39 == 59
    assert resampled["resample_usd"] == pytest.approx(59 * 0.0013)
    assert resampled["usd_per_accepted_conversation"] == pytest.approx(0.006741, abs=1e-6)
    # every rejected answer kept is one the server sent malformed, with the seed of its request
    kept = [a for s in recovered for a in s.attempts] + [a for t in trajectories for a in t.meta.get("attempts", [])]
    raws = [a.raw if hasattr(a, "raw") else a["raw"] for a in kept]
    assert sorted(raws) == sorted(server.malformed) and len(set(raws)) == len(raws)
    assert all(f"({a.seed})" in str(a.raw) for s in recovered for a in s.attempts)
    # the attempts at one step were asked with distinct seeds: distinct requests, distinct ledger entries
    assert all(len({a.seed for a in s.attempts}) == len(s.attempts) for s in recovered)
    rejected = [t for t in trajectories if t.outcome == "rejected"]
    assert all(len(t.meta["attempts"]) == 3 and t.raw == t.meta["attempts"][-1]["raw"] for t in rejected)
    rows = [json.loads(x) for x in (run / "rejected.jsonl").read_text().splitlines()]
    assert all(len(r["attempts"]) == 3 for r in rows)


def test_preference_pairs_hold_the_malformed_answers_at_the_training_steps_prompt(fake_openai, make_config,
                                                                                   tmp_path) -> None:
    manifest, run, server = _run(fake_openai, make_config, tmp_path, 2)
    config = _config(make_config, 2)
    trajectories = load_trajectories(run)
    expected, validation_docs = _expected(config, run, trajectories)  # asserts the prompt is the training prefix
    lines = {split: _read(run / f"preferences.{split}.jsonl") for split in ("train", "validation")}
    assert validation_docs and lines["train"] and lines["validation"]
    accepted_attempts = [a for t in trajectories if t.outcome == "accepted"
                         for turn in t.turns for s in turn.steps for a in s.attempts]
    assert manifest["preferences"]["train"] + manifest["preferences"]["validation"] == len(accepted_attempts)
    assert manifest["preferences"]["non_preferred_by_reason"] == {"text_outside_block": len(accepted_attempts)}
    for split in ("train", "validation"):
        assert len(lines[split]) == len(expected[split])
        for line, (messages, preferred, _tools) in zip(lines[split], expected[split], strict=True):
            assert check_openai_preference(line) == []
            assert json.dumps(line["input"]["messages"]) == json.dumps(messages)  # byte for byte
            assert line["preferred_output"] == [preferred]
            rejected = line["non_preferred_output"][0]["content"]
            assert rejected in server.malformed and rejected != preferred["content"]
    assert Counter(a.reason for a in accepted_attempts) == Counter({"text_outside_block": len(accepted_attempts)})
