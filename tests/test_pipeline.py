"""The spine end to end on the offline teacher: run folder, accounting, split, skipped sources, tool errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill.cli import main
from distill.generation.pipeline import generate, load_trajectories, reexport
from distill.validation.lint import lint_file

from .conftest import BASE_CONFIG, CORPUS


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_run_folder_manifest_and_split(make_config, tmp_path: Path) -> None:
    config = make_config(generation={"conversations": 50, "seed": 7, "mix": {"tool": 0.6, "direct": 0.2, "multi_turn": 0.2}})
    result = generate(config, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("train.jsonl", "validation.jsonl", "rejected.jsonl", "manifest.json", "plans.jsonl",
                 "trajectories.jsonl", "index/chunks.jsonl"):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    c = manifest["conversations"]
    assert c["requested"] == 50 == c["accepted"] + c["rejected"] + c["failed"]
    assert manifest["examples"] == {"train": len(_lines(result.train)), "validation": len(_lines(result.validation))}
    # one line per turn (10 multi-turn conversations have two turns each), less the lines already written once
    lines = manifest["duplicates"]["lines"]
    assert manifest["examples"]["train"] + manifest["examples"]["validation"] + lines["dropped"] == c["accepted"] + 10
    assert lines["dropped"] == sum(lines["by_split"].values())
    written = [json.dumps(x, sort_keys=True) for x in _lines(result.train) + _lines(result.validation)]
    assert len(written) == len(set(written))
    assert manifest["accepted_by_kind"] == {"tool": 30, "direct": 10, "multi_turn": 10}
    assert "offline deterministic teacher" in manifest["teacher"]["note"]
    assert manifest["config_hash"] == config.config_hash()
    assert manifest["fine_tuning_estimate"]["epochs"] == 3
    assert manifest["fine_tuning_estimate"]["training_tokens"] == manifest["tokens"]["train"]["total"]

    val_docs = set(manifest["split"]["validation_documents"])
    assert val_docs
    trajectories = {t.id: t for t in load_trajectories(run)}
    assert len(trajectories) == 50
    train_docs = {t.doc_id for t in trajectories.values()} - val_docs
    assert train_docs and not (train_docs & val_docs)
    # every exported line sits in the split of its conversation's document
    val_questions = {t.turns[0].question for t in trajectories.values() if t.doc_id in val_docs and t.outcome == "accepted"}
    first_inputs = [ex["messages"][1]["content"] for ex in _lines(result.validation)]
    assert val_questions and all(any(q in text for q in val_questions) for text in first_inputs)

    for split in (result.train, result.validation):
        report = lint_file(split, config)
        assert report.ok, report.by_reason()


def test_same_seed_same_dataset_and_reexport_is_identical(make_config, tmp_path: Path) -> None:
    config = make_config()
    a = generate(config, tmp_path / "a", progress=False)
    b = generate(config, tmp_path / "b", progress=False)
    for name in ("train.jsonl", "validation.jsonl", "trajectories.jsonl", "plans.jsonl"):
        assert (a.run_dir / name).read_bytes() == (b.run_dir / name).read_bytes(), name
    before = a.train.read_bytes()
    reexport(config, a.run_dir)
    assert a.train.read_bytes() == before


def test_empty_binary_and_non_utf8_documents_are_skipped_and_named(make_config, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(CORPUS, docs)
    (docs / "empty.md").write_text("   \n")
    (docs / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    (docs / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    config = make_config(sources=[{"path": "docs"}])
    result = generate(config, tmp_path / "run", progress=False)
    manifest = json.loads(result.manifest.read_text())
    skipped = {s["path"]: s["reason"] for s in manifest["skipped_sources"]}
    assert skipped == {"docs/blob.txt": "binary", "docs/empty.md": "empty", "docs/latin1.txt": "not utf-8"}
    assert result.conversations["accepted"] == 40


def test_a_python_tool_that_raises_is_an_error_observation(make_config, tmp_path: Path) -> None:
    (tmp_path / "flaky_tools.py").write_text(
        "def lookup(text):\n    raise RuntimeError('inventory service unavailable')\n"
    )
    config = make_config(
        tools=[
            {
                "name": "Inventory",
                "description": "Looks up stock.",
                "kind": "python",
                "function": "flaky_tools:lookup",
                "examples": [{"question": "How many widgets are in stock?", "input": "widgets"}],
            }
        ],
        generation={"conversations": 5, "seed": 0, "mix": {"tool": 1.0, "direct": 0.0, "multi_turn": 0.0}},
    )
    result = generate(config, tmp_path / "run", progress=False)
    assert result.conversations["accepted"] == 5
    steps = [s for t in load_trajectories(result.run_dir) for turn in t.turns for s in turn.steps]
    errors = [s for s in steps if s.tool_error]
    assert len(errors) == 5
    assert errors[0].observation == "Error: RuntimeError: inventory service unavailable"


def test_over_token_limit_examples_are_rejected_at_export(make_config, tmp_path: Path) -> None:
    config = make_config(
        export={"validation_fraction": 0.0, "max_example_tokens": 900, "dedup": {"enabled": False}},
        generation={**BASE_CONFIG["generation"], "max_extra_conversations": 0},  # no mix top-up
    )
    result = generate(config, tmp_path / "run", progress=False)
    manifest = json.loads(result.manifest.read_text())
    over = manifest["rejects_by_reason"].get("over_token_limit", 0)
    assert over > 0
    assert manifest["conversations"]["accepted"] + over == 40
    assert manifest["tokens"]["train"]["max"] <= 900


def test_cli_generate_then_validate(make_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    config_path = tmp_path / "agent.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "name": "cli-agent",
                "tools": [{"name": "Vector Search Tool", "description": "Searches.", "kind": "retriever"}],
                "sources": [{"path": str(CORPUS)}],
                "teacher": {"provider": "offline"},
                "generation": {"conversations": 12},
            }
        )
    )
    assert main(["generate", str(config_path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "12/12 conversations accepted" in out and str(tmp_path / "run") in out
    assert main(["validate", str(tmp_path / "run" / "train.jsonl"), "--config", str(config_path)]) == 0
    bad = tmp_path / "bad.jsonl"
    line = json.loads((tmp_path / "run" / "train.jsonl").read_text().splitlines()[0])
    line["messages"][-1]["content"] = "Sure! " + line["messages"][-1]["content"]
    bad.write_text(json.dumps(line) + "\n")
    assert main(["validate", str(bad), "--config", str(config_path)]) == 1
    assert "bad.jsonl:1: text_outside_block" in capsys.readouterr().out


def test_manifest_never_holds_endpoint_credentials(make_config, tmp_path: Path) -> None:
    config = make_config(teacher={"provider": "offline", "base_url": "https://user:s3cr3t-pass@llm.example/v1"})
    result = generate(config, tmp_path / "run", progress=False)
    text = result.manifest.read_text()
    assert "s3cr3t-pass" not in text
    assert "https://<redacted>@llm.example/v1" in text


def test_offline_teacher_varies_the_numbers_of_a_tool_example_consistently(
    make_config, calculator_tool, configs_on_path, tmp_path: Path
) -> None:
    import re

    calculator_tool["examples"] = [{"question": "What is 17 times 23?", "input": "17 * 23"}]
    config = make_config(
        tools=[calculator_tool],
        generation={"conversations": 12, "seed": 0, "mix": {"tool": 1.0, "direct": 0.0, "multi_turn": 0.0}},
    )
    result = generate(config, tmp_path / "run", progress=False)
    turns = [t.turns[0] for t in load_trajectories(result.run_dir)]
    assert len({turn.question for turn in turns}) >= 10  # not one question twelve times
    for turn in turns:
        a, b = map(int, re.fullmatch(r"What is (\d+) times (\d+)\?", turn.question).groups())
        call = turn.steps[0]
        assert (call.action, call.action_input, call.observation) == ("Calculator", f"{a} * {b}", str(a * b))
    assert result.conversations["accepted"] >= 10
