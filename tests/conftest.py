"""Shared fixtures: no real keys in the environment, configs over the project's corpus, generated runs."""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from distill.config import Config, config_from_dict

# A datasets cache of this test session's own: `load_dataset` on a folder caches by the folder's path, and pytest's
# tmp paths are reused across sessions, so a shared cache can answer with an earlier session's rows.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="distill-tests-datasets-")

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus"
ANSWER = "BM25 ranks passages by query terms."  # the reference answer of the eval tests' questions file

BASE_CONFIG: dict[str, Any] = {
    "name": "test-agent",
    "agent": {"format": "langchain-chat", "max_steps": 3, "memory_window": 5},
    "tools": [
        {"name": "Vector Search Tool", "description": "Searches the documents.", "kind": "retriever", "top_k": 3}
    ],
    "sources": [{"path": str(CORPUS)}],
    "teacher": {"provider": "offline"},
    "generation": {"conversations": 40, "seed": 0, "mix": {"tool": 0.5, "direct": 0.2, "multi_turn": 0.3}},
    # The offline teacher repeats its small-talk questions; these tests count exact numbers, so dedup is off here
    # (tests/test_dedup.py turns it on).
    "export": {"validation_fraction": 0.2, "dedup": {"enabled": False}},
}


@pytest.fixture(autouse=True)
def _no_real_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see a real key or endpoint."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_config(tmp_path: Path):
    """Build a validated Config from BASE_CONFIG with overrides (top-level keys replaced)."""

    def _make(**overrides: Any) -> Config:
        data = copy.deepcopy(BASE_CONFIG)
        data.update(copy.deepcopy(overrides))
        return config_from_dict(data, file=str(tmp_path / "cfg.yaml"), base_dir=tmp_path)

    return _make


@pytest.fixture
def calculator_tool() -> dict[str, Any]:
    """The example configs' python calculator tool (configs/agent_tools.py)."""
    return {
        "name": "Calculator",
        "description": "Evaluates arithmetic.",
        "kind": "python",
        "function": "agent_tools:calculate",
        "input_schema": {"type": "string", "pattern": "^[0-9+*/(). -]+$"},
        "examples": [
            {"question": "What is 17 times 23?", "input": "17 * 23"},
            {"question": "What is (120 + 45) * 3?", "input": "(120 + 45) * 3"},
        ],
    }


@pytest.fixture
def configs_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make configs/agent_tools.py importable for configs built outside configs/."""
    monkeypatch.syspath_prepend(str(REPO / "configs"))


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch):
    """A started FakeOpenAI server, with OPENAI_API_KEY / OPENAI_BASE_URL pointing the SDK at it."""
    from tests.fake_openai import FakeOpenAI

    server = FakeOpenAI().start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    yield server
    server.stop()


@pytest.fixture
def questions(tmp_path: Path) -> Path:
    """A questions file for `distill eval` (three needing the search tool, one small talk)."""
    path = tmp_path / "questions.jsonl"
    rows = [
        {"question": "What is BM25?", "reference": ANSWER, "used_tool": True},
        {"question": "How does retrieval rank?", "reference": "BM25 ranks passages", "used_tool": True},
        {"question": "What scores the passages?", "reference": ANSWER, "used_tool": True},
        {"question": "Hello there!", "reference": ANSWER, "used_tool": False},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
