"""Hardening (issue 16): huge tool outputs, Ctrl-C, an unreachable endpoint, and the small things a new user hits.

Each test is the issue's repro turned into an assertion of what the user should see instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main
from distill.generation.pipeline import generate
from distill.tokens import PIECE_CHARS, count_example, count_text, encoding_for
from tests.conftest import CORPUS

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
