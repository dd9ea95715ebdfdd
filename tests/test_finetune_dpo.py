"""`distill finetune --method dpo`: a preference job on the run's preference pairs, against the fake service."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from distill.cli import main
from distill.errors import FinetuneError, RunFolderError
from distill.finetuning.finetune import finetune
from distill.finetuning.jobs import LEDGER
from distill.generation.pipeline import generate, reexport
from tests.fake_finetune import FakeFineTuning
from tests.test_preferences import _add_attempts

FAST = {"poll_interval": 0.0, "max_retries": 0, "timeout_s": 10.0}


@pytest.fixture(scope="module")
def preference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.config import config_from_dict
    from tests.conftest import BASE_CONFIG

    base = tmp_path_factory.mktemp("dpo-run")
    data = {**BASE_CONFIG, "export": {"validation_fraction": 0.2, "dedup": {"enabled": False}, "preferences": True}}
    config = config_from_dict(data, file=str(base / "cfg.yaml"), base_dir=base)
    run = generate(config, base / "run", progress=False).run_dir
    _add_attempts(run, native=False)
    reexport(config, run)
    return run


@pytest.fixture
def run_dir(preference_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(preference_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def service(fake_openai: Any) -> FakeFineTuning:
    return FakeFineTuning(fake_openai).install()


def test_dpo_uploads_the_preference_files_and_sends_the_method(run_dir: Path, service: FakeFineTuning) -> None:
    result = finetune(run_dir, method="dpo", beta=0.2, epochs=2, **FAST)
    assert result.created
    assert [(n, p) for n, p, _ in service.uploaded()] == [("preferences.train.jsonl", "fine-tune"),
                                                          ("preferences.validation.jsonl", "fine-tune")]
    assert service.uploaded()[0][2] == (run_dir / "preferences.train.jsonl").read_bytes()
    job = next(iter(service.jobs.values()))
    assert job.body["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "beta": 0.2}}}
    ledger = json.loads((run_dir / LEDGER).read_text())
    assert ledger["method"] == "dpo" and ledger["job"]["id"] == job.id
    lines = (run_dir / "preferences.train.jsonl").read_text().splitlines()
    assert result.estimate is not None and result.estimate.examples == len(lines)
    # a re-attach keeps the recorded method; asking for another one is refused
    again = finetune(run_dir, **FAST)
    assert not again.created and service.created_jobs() == 1
    with pytest.raises(FinetuneError, match="method='dpo'"):
        finetune(run_dir, method="supervised", **FAST)


def test_cli_method_dpo_without_hyperparameters(run_dir: Path, service: FakeFineTuning) -> None:
    assert main(["finetune", str(run_dir), "--method", "dpo"]) == 0
    job = next(iter(service.jobs.values()))
    assert job.body["method"] == {"type": "dpo", "dpo": {"hyperparameters": {}}}


def test_supervised_stays_as_it_was(run_dir: Path, service: FakeFineTuning) -> None:
    finetune(run_dir, **FAST)
    job = next(iter(service.jobs.values()))
    assert "method" not in job.body and service.uploaded()[0][0] == "train.jsonl"


def test_dpo_needs_preference_pairs_and_beta_needs_dpo(run_dir: Path, service: FakeFineTuning) -> None:
    (run_dir / "preferences.train.jsonl").unlink()
    with pytest.raises(RunFolderError, match="preferences.train.jsonl"):
        finetune(run_dir, method="dpo", **FAST)
    with pytest.raises(FinetuneError, match="beta"):
        finetune(run_dir, beta=0.1, **FAST)
    assert service.created_jobs() == 0
