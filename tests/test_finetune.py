"""`distill finetune` against a local OpenAI-compatible server: lint, estimate, upload, create, record, watch, resume,
cancel, failures shown verbatim, and no secret in any file."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from distill.cli import main
from distill.config import config_from_dict
from distill.errors import FinetuneError
from distill.finetuning.cost import estimate_cost, price_per_1m
from distill.finetuning.finetune import finetune
from distill.finetuning.jobs import LEDGER
from distill.generation.pipeline import generate
from distill.tokens import count_example, default_epochs
from tests.conftest import BASE_CONFIG
from tests.fake_finetune import VALIDATION_FAILURE_SCRIPT, FakeFineTuning
from tests.fake_openai import FakeResponse

FAST = {"poll_interval": 0.0, "max_retries": 0, "timeout_s": 10.0}


@pytest.fixture(scope="module")
def generated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = copy.deepcopy(BASE_CONFIG)
    data["generation"] = {
        "conversations": 20,
        "seed": 2,
        "mix": {"tool": 0.6, "direct": 0.2, "multi_turn": 0.2},
    }
    base = tmp_path_factory.mktemp("finetune-run")
    config = config_from_dict(data, file=str(base / "cfg.yaml"), base_dir=base)
    return generate(config, base / "run", progress=False).run_dir


@pytest.fixture
def run_dir(generated_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(generated_run, run)
    return run


@pytest.fixture
def service(fake_openai: Any) -> FakeFineTuning:
    return FakeFineTuning(fake_openai).install()


def _ledger(run: Path) -> dict[str, Any]:
    return json.loads((run / LEDGER).read_text())


def _auth(request: Any) -> str | None:
    return next((v for k, v in request.headers.items() if k.lower() == "authorization"), None)


def _posts(service: FakeFineTuning, suffix: str) -> int:
    return sum(1 for r in service.server.requests if r.method == "POST" and r.path.endswith(suffix))


def test_lints_estimates_uploads_creates_and_records_the_job_at_once(
    run_dir: Path, service: FakeFineTuning
) -> None:
    lines: list[str] = []
    result = finetune(run_dir, suffix="agent", echo=lines.append, **FAST)

    train = [json.loads(x) for x in (run_dir / "train.jsonl").read_text().splitlines()]
    tokens = sum(count_example(e, "gpt-4o-mini-2024-07-18") for e in train)
    epochs = default_epochs(len(train))
    assert result.created and result.estimate is not None
    assert (result.estimate.training_tokens, result.estimate.epochs) == (tokens, epochs)
    assert result.estimate.cost_usd == pytest.approx(tokens * epochs * 3.00 / 1_000_000, abs=1e-4)
    assert any(f"{tokens:,} tokens x {epochs} epochs" in line and "$3.00 / 1M" in line for line in lines)

    assert [(name, purpose) for name, purpose, _ in service.uploaded()] == [
        ("train.jsonl", "fine-tune"),
        ("validation.jsonl", "fine-tune"),
    ]
    assert service.uploaded()[0][2] == (run_dir / "train.jsonl").read_bytes()
    assert service.created_jobs() == 1
    job = next(iter(service.jobs.values()))
    ledger = _ledger(run_dir)
    assert job.body == {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": ledger["files"]["train"]["id"],
        "validation_file": ledger["files"]["validation"]["id"],
        "suffix": "agent",
    }
    assert ledger["job"]["id"] == job.id == result.job_id
    assert ledger["job"]["status"] == "validating_files"
    assert ledger["base_url"] == service.server.base_url


def test_a_second_call_reattaches_and_wait_streams_events_and_records_the_model(
    run_dir: Path, service: FakeFineTuning
) -> None:
    finetune(run_dir, **FAST)
    lines: list[str] = []
    result = finetune(run_dir, wait=True, echo=lines.append, sleep=lambda s: None, **FAST)
    assert service.created_jobs() == 1 and _posts(service, "/files") == 2  # nothing created or uploaded again
    assert result.status == "succeeded" and not result.created
    messages = [e["message"] for e in result.events]
    assert (
        messages[0].startswith("Created fine-tuning job")
        and messages[-1] == "The job has successfully completed"
    )
    assert "Step 2/2: training loss=0.40" in messages
    assert any("Step 1/2: training loss=1.20" in line for line in lines)
    ledger = _ledger(run_dir)
    assert ledger["job"]["status"] == "succeeded"
    assert ledger["job"]["fine_tuned_model"] == result.fine_tuned_model
    assert result.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18")


def test_an_interrupted_watch_resumes_with_exactly_one_job_and_never_cancels(
    run_dir: Path, service: FakeFineTuning
) -> None:
    polls = {"n": 0}

    def sleep_then_ctrl_c(seconds: float) -> None:
        polls["n"] += 1
        if polls["n"] == 2:
            raise KeyboardInterrupt

    first: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        finetune(run_dir, wait=True, echo=first.append, sleep=sleep_then_ctrl_c, **FAST)
    ledger = _ledger(run_dir)
    assert ledger["job"]["status"] not in ("succeeded", "failed", "cancelled")
    assert ledger["last_event_id"]
    assert _posts(service, "/cancel") == 0
    assert next(iter(service.jobs.values())).status != "cancelled"

    second: list[str] = []
    result = finetune(run_dir, wait=True, echo=second.append, sleep=lambda s: None, **FAST)
    assert result.status == "succeeded"
    assert service.created_jobs() == 1 and _posts(service, "/fine_tuning/jobs") == 1
    assert _posts(service, "/cancel") == 0
    events = [line for line in first + second if line.startswith("[")]
    assert len(events) == len(set(events)) == len(next(iter(service.jobs.values())).events)  # each shown once
    assert _ledger(run_dir)["job"]["fine_tuned_model"] == result.fine_tuned_model


def test_a_job_that_fails_validation_shows_the_service_error_verbatim(
    run_dir: Path, service: FakeFineTuning, capsys: pytest.CaptureFixture[str]
) -> None:
    service.script = VALIDATION_FAILURE_SCRIPT
    verbatim = VALIDATION_FAILURE_SCRIPT[1]["error"]["message"]
    with pytest.raises(FinetuneError) as info:
        finetune(run_dir, wait=True, sleep=lambda s: None, **FAST)
    assert verbatim in str(info.value) and "invalid_training_file" in str(info.value)
    assert info.value.job_id == _ledger(run_dir)["job"]["id"]
    assert _ledger(run_dir)["job"]["error"] == VALIDATION_FAILURE_SCRIPT[1]["error"]

    assert main(["finetune", str(run_dir)]) == 2  # re-attaching to the failed job reports it again
    err = capsys.readouterr().err
    assert verbatim in err and "--new" in err
    assert service.created_jobs() == 1


def test_a_refused_create_keeps_the_uploads_and_a_rerun_reuses_them(
    run_dir: Path, service: FakeFineTuning
) -> None:
    message = "Model gpt-4o-mini-2024-07-18 is not available for fine-tuning or does not exist."
    service.create_error = FakeResponse(400, {"error": {"message": message, "type": "invalid_request_error"}})
    with pytest.raises(FinetuneError) as info:
        finetune(run_dir, **FAST)
    assert message in str(info.value) and "HTTP 400" in str(info.value)
    ledger = _ledger(run_dir)
    assert "job" not in ledger and set(ledger["files"]) == {"train", "validation"}

    result = finetune(run_dir, **FAST)
    assert result.created and service.created_jobs() == 1
    assert _posts(service, "/files") == 2  # the recorded uploads were reused


def test_lint_problems_upload_nothing(run_dir: Path, service: FakeFineTuning) -> None:
    lines = (run_dir / "train.jsonl").read_text().splitlines()
    bad = json.loads(lines[2])
    bad["messages"][-1]["content"] = "Sure! " + bad["messages"][-1]["content"]
    lines[2] = json.dumps(bad)
    (run_dir / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(FinetuneError) as info:
        finetune(run_dir, **FAST)
    assert "train.jsonl:3: text_outside_block" in str(info.value) and "nothing was uploaded" in str(
        info.value
    )
    assert service.server.requests == [] and not (run_dir / LEDGER).exists()


def test_cancel_is_explicit(run_dir: Path, service: FakeFineTuning) -> None:
    with pytest.raises(FinetuneError, match="no job to cancel"):
        finetune(run_dir, cancel=True, **FAST)
    finetune(run_dir, **FAST)
    result = finetune(run_dir, cancel=True, **FAST)
    assert result.status == "cancelled" and _posts(service, "/cancel") == 1
    assert _ledger(run_dir)["job"]["status"] == "cancelled"
    assert next(iter(service.jobs.values())).status == "cancelled"


def test_reattach_refuses_other_options_and_new_starts_another_job(
    run_dir: Path, service: FakeFineTuning
) -> None:
    first = finetune(run_dir, epochs=2, **FAST)
    assert next(iter(service.jobs.values())).body["method"] == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 2}},
    }
    assert first.estimate is not None and first.estimate.epochs == 2
    with pytest.raises(FinetuneError, match="--new"):
        finetune(run_dir, model="gpt-4.1-mini-2025-04-14", **FAST)
    second = finetune(run_dir, model="gpt-4.1-mini-2025-04-14", new=True, **FAST)
    assert second.created and second.job_id != first.job_id and service.created_jobs() == 2
    ledger = _ledger(run_dir)
    assert ledger["job"]["id"] == second.job_id and ledger["previous_jobs"][0]["id"] == first.job_id
    assert _posts(service, "/files") == 2  # same files: the uploads were reused


def test_any_openai_compatible_base_url_and_the_key_only_from_the_environment(
    run_dir: Path, service: FakeFineTuning, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = service.server.base_url
    monkeypatch.delenv("OPENAI_BASE_URL")
    result = finetune(run_dir, base_url=url, **FAST)
    assert _ledger(run_dir)["base_url"] == url
    assert all(_auth(r) == "Bearer sk-test-not-a-real-key" for r in service.server.requests)
    finetune(run_dir, **FAST)  # re-attaches on the recorded service without --base-url
    with pytest.raises(FinetuneError, match="records job"):
        finetune(run_dir, base_url="http://127.0.0.1:9/v1", **FAST)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(FinetuneError, match="OPENAI_API_KEY is not set"):
        finetune(run_dir, **FAST)
    assert service.created_jobs() == 1 and result.job_id in service.jobs


def test_estimate_needs_no_key_and_prices_come_from_a_table_or_the_caller(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["finetune", str(run_dir), "--estimate"]) == 0
    assert "billed tokens x $3.00 / 1M" in capsys.readouterr().out
    assert not (run_dir / LEDGER).exists()
    assert price_per_1m("gpt-4o-mini-2024-07-18") == 3.00
    assert price_per_1m("gpt-4o-2024-08-06") == 25.00
    assert price_per_1m("gpt-4.1-nano-2025-04-14") == 1.50
    assert price_per_1m("ft:gpt-4o-mini-2024-07-18:org::abc") == 3.00
    assert price_per_1m("llama-3-8b") is None
    assert estimate_cost([100] * 10, "llama-3-8b").cost_usd is None
    own = estimate_cost([1000] * 20, "llama-3-8b", usd_per_1m=2.0)
    assert (own.epochs, own.billed_tokens, own.cost_usd) == (5, 100_000, 0.2)  # 20 examples: 100 // 20 epochs


@pytest.mark.filterwarnings(
    "ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning"
)  # see test_publish
def test_no_secret_in_any_file_of_the_run_folder_or_the_card(
    run_dir: Path, service: FakeFineTuning, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    from distill.publishing.publish import publish
    from tests.fake_hub import FakeHub

    openai_key = "sk-" + "proj-SECRET-openai-key-0123456789"  # built in two parts: no key-shaped literal in the repo
    hub = FakeHub(token="hf_SECRET_hub_token_0123456789")
    monkeypatch.setenv("OPENAI_API_KEY", openai_key)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf-home" / "harnesses.json"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"]["teacher"]["base_url"] = "https://proxy-user:proxy-SECRET-pass@proxy.example/v1"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))

    finetune(run_dir, wait=True, sleep=lambda s: None, **FAST)
    hub.install()
    try:
        publish(run_dir, "tester/secret-check")
        publish(run_dir, "tester/secret-check", dry_run=tmp_path / "dry")
    finally:
        hub.uninstall()
    assert all(_auth(r) == f"Bearer {openai_key}" for r in service.server.requests)

    files = {p: p.read_bytes() for p in [*run_dir.rglob("*"), *(tmp_path / "dry").rglob("*")] if p.is_file()}
    files.update(
        {Path("hub") / path: content for path, content in hub.repos["tester/secret-check"].files.items()}
    )
    assert run_dir / LEDGER in files and Path("hub/README.md") in files
    for secret in (openai_key, hub.token):
        leaks = [str(p) for p, content in files.items() if secret.encode() in content]
        assert leaks == [], f"{secret} written to {leaks}"
    cards = [files[Path("hub/README.md")].decode(), (tmp_path / "dry" / "README.md").read_text()]
    for card in cards:  # credentials in a URL of the config are removed from the card's config
        assert "proxy-SECRET-pass" not in card and "https://<redacted>@proxy.example/v1" in card


def test_cli_watch_interrupted_by_ctrl_c_then_resumed(
    run_dir: Path,
    service: FakeFineTuning,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import time

    def ctrl_c(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", ctrl_c)  # the command's poll wait
    assert main(["finetune", str(run_dir), "--wait", "--suffix", "cli"]) == 130
    captured = capsys.readouterr()
    assert "created job" in captured.out
    assert "keeps running on the service" in captured.err and "--cancel" in captured.err
    assert _posts(service, "/cancel") == 0

    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    assert main(["finetune", str(run_dir), "--wait"]) == 0
    out = capsys.readouterr().out
    assert "re-attached to job" in out and "succeeded: fine-tuned model ft:gpt-4o-mini-2024-07-18" in out
    assert service.created_jobs() == 1 and _posts(service, "/cancel") == 0
