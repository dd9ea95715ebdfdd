"""`distill generate --focus EVAL_REPORT`: a second round aimed at exactly what the student failed.

A scripted student (behind the local OpenAI-compatible server) plays the run's held-out questions: it answers the
retriever questions correctly and fails every question whose reference used the Calculator. The focused round must
plan Calculator conversations only, on training documents only, keep the validation split the eval held out, say in
the manifest what it targeted and why, and plan the same conversations again for the same report.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import distill
from distill.cli import main
from distill.config import config_from_dict
from distill.formats.langchain_actions import render_action
from distill.generation.focus import FocusError, plan_focus
from distill.generation.pipeline import generate, load_trajectories
from distill.generation.sources import chunk_documents, load_documents
from tests.conftest import BASE_CONFIG, REPO

SEARCH = "Vector Search Tool"


def _config(calculator_tool: dict[str, Any], dedup: bool = False) -> Any:
    data = copy.deepcopy(BASE_CONFIG)
    data["tools"].append(calculator_tool)
    data["generation"] = {"conversations": 40, "seed": 3, "mix": {"tool": 0.6, "direct": 0.2, "multi_turn": 0.2}}
    data["export"] = {"validation_fraction": 0.3, "dedup": {"enabled": dedup}}
    if dedup:  # no shortfall allowed, so the near-duplicates dedup drops (a loose threshold: some) are topped up
        data["generation"]["mix_tolerance"] = 0.0
        data["export"]["dedup"]["near_threshold"] = 0.5
    return config_from_dict(data, file="cfg.yaml", base_dir=REPO / "configs")


def _first_tool(trajectory: Any) -> str | None:
    return next((s.action for s in trajectory.turns[0].steps if not s.is_final), None)


def _evaluate_a_student(config: Any, fake_openai: Any, run_dir: Path) -> tuple[Path, dict[str, str | None]]:
    """Generate the run, then let a scripted student fail every held-out question whose reference used the
    Calculator; returns the eval report and the reference tool of each held-out question."""
    generate(config, run_dir, progress=False)
    held_out = set(json.loads((run_dir / "manifest.json").read_text())["split"]["validation_documents"])
    reference = {t.turns[0].question: _first_tool(t) for t in load_trajectories(run_dir)
                 if t.outcome == "accepted" and t.doc_id in held_out}
    assert Counter(reference.values())["Calculator"] >= 1 and Counter(reference.values())[SEARCH] >= 1

    def student(body: dict[str, Any]) -> str:
        last = body["messages"][-1]["content"]
        if last.startswith("TOOL RESPONSE"):
            return render_action("Final Answer", "Here is what I found.")
        question = next(q for q in reference if q in last)
        if reference[question] == "Calculator":
            return "Let me think about the arithmetic."  # prose: no JSON block, a failed question
        if reference[question] is None:
            return render_action("Final Answer", "Hello!")
        return render_action(SEARCH, question[:40])

    fake_openai.chat_script = student
    distill.evaluate(config, ["student"], run=run_dir, n=None, out=run_dir / "eval")
    return run_dir / "eval" / "report.json", reference


@pytest.fixture
def evaluated(calculator_tool, fake_openai, tmp_path: Path) -> tuple[Any, Path, Path, dict[str, str | None]]:
    config = _config(calculator_tool)
    report, reference = _evaluate_a_student(config, fake_openai, tmp_path / "run")
    return config, tmp_path / "run", report, reference


def test_focus_plans_only_what_failed_on_training_documents(evaluated) -> None:
    config, run_dir, report, reference = evaluated
    manifest = json.loads((run_dir / "manifest.json").read_text())
    held_out = manifest["split"]["validation_documents"]
    chunks = chunk_documents(load_documents(config)[0], config.chunking)
    trajectories = load_trajectories(run_dir)
    focused = plan_focus(config, chunks, [], trajectories, report, validation_documents=held_out, budget=12)

    failed = sum(tool == "Calculator" for tool in reference.values())
    assert focused.summary["failed_or_over_called"] == failed
    assert focused.summary["reasons"] == {"no_json_block": failed}
    assert len(focused.plans) == 12
    assert {p.tool for p in focused.plans} == {"Calculator"}  # nothing for the retriever or the direct answers
    assert {p.kind for p in focused.plans} <= {"tool", "multi_turn"}
    assert not {p.doc_id for p in focused.plans} & set(held_out)
    assert sum(t["conversations"] for t in focused.summary["targets"]) == 12
    assert all(p.id.startswith("f") for p in focused.plans)
    again = plan_focus(config, chunks, [], trajectories, report, validation_documents=held_out, budget=12)
    assert [p.model_dump() for p in again.plans] == [p.model_dump() for p in focused.plans]


def test_generate_focus_adds_the_round_and_keeps_the_held_out_split(evaluated, capsys) -> None:
    config, run_dir, report, _ = evaluated
    before = json.loads((run_dir / "manifest.json").read_text())
    result = generate(config, run_dir, progress=False, focus=report, focus_budget=8)
    after = json.loads(result.manifest.read_text())
    assert after["split"]["validation_documents"] == before["split"]["validation_documents"]
    assert after["focus"]["conversations"] == 8 and after["focus"]["model"] == "student"
    assert after["focus"]["why"].startswith(f"{after['focus']['failed_or_over_called']} held-out question(s)")
    trajectories = load_trajectories(run_dir)
    focused = [t for t in trajectories if t.id.startswith("f")]
    assert len(focused) == 8 and {t.meta["tool"] for t in focused} == {"Calculator"}
    assert after["conversations"]["requested"] == before["conversations"]["requested"] + 8
    held_out = set(after["split"]["validation_documents"])
    assert not {t.doc_id for t in focused} & held_out


def test_focus_needs_a_report(evaluated, tmp_path: Path) -> None:
    config, run_dir, _, _ = evaluated
    with pytest.raises(FocusError, match="no eval report"):
        generate(config, run_dir, progress=False, focus=tmp_path / "nowhere")
    code = main(["generate", str(REPO / "configs" / "retrieval_agent.yaml"), "--out", str(tmp_path / "fresh"),
                 "--no-progress", "--focus", str(tmp_path / "nowhere")])
    assert code == 2


def test_focus_keeps_the_conversations_of_an_earlier_top_up(calculator_tool, fake_openai, tmp_path: Path) -> None:
    """With a loose near-duplicate threshold dedup drops some questions that share much wording (the calculator's
    "What is N times M?"), so the first run tops their kinds up; the focused run must keep those extra conversations
    (and number its own after them), not plan the top-up anew."""
    config = _config(calculator_tool, dedup=True)
    run_dir = tmp_path / "run"
    report, _ = _evaluate_a_student(config, fake_openai, run_dir)
    before = json.loads((run_dir / "manifest.json").read_text())
    assert before["top_up"]["extra_conversations"] > 0
    earlier = {t.id for t in load_trajectories(run_dir)}
    generate(config, run_dir, progress=False, focus=report, focus_budget=6)
    after = {t.id: t for t in load_trajectories(run_dir)}
    assert earlier <= set(after)  # every earlier conversation, the top-up's included, is still in the run
    focused = [t for t in after.values() if t.id.startswith("f")]
    assert len(focused) == 6
    extra_index = max(int(i[1:]) for i in earlier)
    assert min(int(t.id[1:]) for t in focused) > extra_index  # numbered after the earlier extra plans
