"""The simple OpenAI teacher against a local OpenAI-compatible server: what it sends, what it records."""

from __future__ import annotations

import json
from pathlib import Path

from distill.formats.langchain_actions import render_action
from distill.generation.pipeline import generate, load_trajectories
from tests.fake_openai import FakeResponse, chat_completion


def _agent(body: dict) -> FakeResponse | str:
    """A scripted teacher: questions as structured output, then search once, then answer."""
    if body.get("response_format"):
        n = 2 if "several user messages" in body["messages"][1]["content"] else 1
        return json.dumps({"questions": [f"What does the corpus say about BM25 number {i}?" for i in range(n)]})
    last = body["messages"][-1]["content"]
    if last.startswith("TOOL RESPONSE"):
        return render_action("Final Answer", "BM25 scores passages by query terms.")
    if "small talk" in json.dumps(body):  # never: direct questions are answered below by their text
        return "unreachable"
    return render_action("Vector Search Tool", "BM25 ranking")


def test_generate_with_openai_teacher_sends_runtime_messages_and_structured_outputs(
    fake_openai, make_config, tmp_path: Path
) -> None:
    fake_openai.chat_script = _agent
    config = make_config(
        teacher={"provider": "openai", "model": "gpt-4o", "max_retries": 0},
        generation={"conversations": 6, "seed": 0, "mix": {"tool": 0.5, "direct": 0.0, "multi_turn": 0.5}},
    )
    result = generate(config, tmp_path / "run", progress=False)
    assert result.conversations == {"requested": 6, "accepted": 6, "rejected": 0, "failed": 0}
    bodies = [r.json() for r in fake_openai.requests_to("/chat/completions")]
    question_calls = [b for b in bodies if b.get("response_format")]
    step_calls = [b for b in bodies if not b.get("response_format")]
    assert len(question_calls) == 6
    assert question_calls[0]["response_format"]["type"] == "json_schema"
    assert all(b["model"] == "gpt-4o" for b in bodies)
    assert all(b["stop"] == ["\nObservation:", "\n\tObservation:"] for b in step_calls)
    # 3 single-turn conversations x 2 steps + 3 two-turn conversations x 2 turns x 2 steps
    assert len(step_calls) == 3 * 2 + 3 * 4
    manifest = json.loads(result.manifest.read_text())
    assert manifest["teacher"] == {"provider": "openai", "model": "gpt-4o"}
    assert "sk-test" not in (tmp_path / "run" / "manifest.json").read_text()


def test_malformed_answers_are_rejected_and_truncated_ones_failed_with_raw_text(
    fake_openai, make_config, tmp_path: Path
) -> None:
    answers = iter(
        [
            "Sure! " + render_action("Vector Search Tool", "x"),  # prose around the block
            FakeResponse(json=chat_completion('```json\n{"action": "Final Answer", "action_input": "The', finish_reason="length")),
            render_action("Web Search", "x"),  # unknown tool
        ]
    )

    def script(body: dict) -> FakeResponse | str:
        if body.get("response_format"):
            return json.dumps({"questions": ["What is BM25?"]})
        return next(answers)

    fake_openai.chat_script = script
    config = make_config(
        teacher={"provider": "openai", "model": "gpt-4o", "max_retries": 0, "concurrency": 1},
        # step_retries: 0: one scripted answer per conversation, in order; with resampling (the default, 2) the
        # first conversation's re-ask would take the next conversation's answer (tests/test_resample_pipeline.py
        # covers resampling against the fake endpoint)
        generation={"conversations": 3, "seed": 0, "mix": {"tool": 1.0, "direct": 0.0, "multi_turn": 0.0},
                    "step_retries": 0},
    )
    result = generate(config, tmp_path / "run", progress=False)
    assert result.conversations == {"requested": 3, "accepted": 0, "rejected": 2, "failed": 1}
    rejected = [json.loads(line) for line in result.rejected.read_text().splitlines()]
    assert sorted((r["outcome"], r["reason"]) for r in rejected) == [
        ("failed", "truncated"), ("rejected", "text_outside_block"), ("rejected", "unknown_action")
    ]
    assert all(r["raw"] for r in rejected)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["rejects_by_reason"] == {"text_outside_block": 1, "unknown_action": 1}
    assert manifest["failures_by_reason"] == {"truncated": 1}
    assert len(load_trajectories(tmp_path / "run")) == 3


def test_http_errors_after_retries_are_failed_conversations(fake_openai, make_config, tmp_path: Path) -> None:
    fake_openai.chat_script = lambda body: FakeResponse(status=500, json={"error": {"message": "boom"}})
    config = make_config(
        teacher={"provider": "openai", "model": "gpt-4o", "max_retries": 0},
        generation={"conversations": 2, "seed": 0, "mix": {"tool": 1.0, "direct": 0.0, "multi_turn": 0.0}},
    )
    result = generate(config, tmp_path / "run", progress=False)
    assert result.conversations == {"requested": 2, "accepted": 0, "rejected": 0, "failed": 2}
    manifest = json.loads(result.manifest.read_text())
    assert manifest["failures_by_reason"] == {"http_500": 2}
