"""Launch, watch, resume and cancel an OpenAI fine-tuning job for a run folder; its ledger is `RUN/finetune.json`.

`finetune(run)` lints `train.jsonl` / `validation.jsonl` (the validator; nothing is uploaded when a line fails),
counts the training tokens and estimates the cost (tokens x epochs x price per token; OpenAI's default-epoch rule when
no epoch count is given), uploads both files with `purpose="fine-tune"`, creates the job and records file ids and the
job id in `finetune.json` at once. A second call re-attaches to the recorded job instead of creating another (`new=True`
starts another and keeps the old record under `previous_jobs`). `wait=True` streams the job's events until it ends and
records `fine_tuned_model`; Ctrl-C (KeyboardInterrupt) stops watching, saves the ledger and never cancels the job;
`cancel=True` cancels it. A failed job raises `FinetuneError` carrying the service's error message verbatim.

Works against any OpenAI-compatible endpoint (`base_url`, else OPENAI_BASE_URL); the key is read from OPENAI_API_KEY
only and never written. The client, `sleep` and `clock` are injectable so tests run against a local fake quickly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.endpoint import resolve_base_url
from distill.errors import FinetuneError, RunFolderError
from distill.finetuning.cost import CostEstimate, estimate_cost
from distill.finetuning.jobs import (
    OPENAI_BASE_URL,
    TERMINAL,
    deferred_interrupt,
    event_line,
    failure,
    job_record,
    make_client,
    new_events,
    public_url,
    read_ledger,
    service_error,
    sha256_of,
    write_ledger,
)
from distill.run_folder import GENERATE_FIRST, MANIFEST, SPLITS, RunFolder, config_of, read_manifest

__all__ = ["DEFAULT_POLL_S", "FinetuneResult", "finetune"]

DEFAULT_POLL_S = 15.0
MIN_EXAMPLES = 10  # the fine-tuning service refuses smaller training files
MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # the Files API's limit


@dataclass
class FinetuneResult:
    """Where a run's fine-tuning job stands after a call."""

    run_dir: Path
    ledger: Path
    job_id: str | None
    status: str | None
    fine_tuned_model: str | None = None
    created: bool = False
    estimate: CostEstimate | None = None
    error: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


def _run_config(run_dir: Path) -> Config | None:
    """The config recorded in the run's manifest; None without a manifest (a folder of hand-made files). A manifest
    that cannot be read, or whose config no longer validates, is an error that names the fix."""
    if not RunFolder(run_dir).manifest.is_file():
        return None
    return config_of(read_manifest(run_dir), run_dir)


def _target(model: str | None, recorded: str | None, config: Config | None, run_dir: Path) -> str:
    """The model to fine-tune: `--model`, else the recorded job's, else the run's `export.model`."""
    target = model or recorded or (config.export.model if config is not None else None)
    if target is None:
        raise RunFolderError(
            f"{run_dir} records no config to take the fine-tuning target from (no {MANIFEST} with a config)",
            hint="pass --model MODEL, e.g. --model gpt-4o-mini-2024-07-18",
        )
    return target


def _file(run_dir: Path, name: str, method: str) -> Path:
    """train/validation file of a method: `dpo` trains on the preference pairs (export.preferences)."""
    folder = RunFolder(run_dir)
    return folder.preference_split(name) if method == "dpo" else folder.split(name)


def _lint(run_dir: Path, config: Any, model: str, method: str = "supervised") -> dict[str, list[int]]:
    from distill.validation.lint import lint_file

    counts: dict[str, list[int]] = {}
    problems: list[str] = []
    for name in SPLITS:
        path = _file(run_dir, name, method)
        if not path.is_file() or not path.read_bytes().strip():
            continue
        report = lint_file(path, config, model=model)
        counts[name] = report.token_counts
        problems += [f"{path}:{p.line}: {p.reason}: {p.detail}" for p in report.problems]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise FinetuneError(
            f"the fine-tuning files have {len(problems)} problem(s), nothing was uploaded: {shown}",
            hint=f"see them all with `distill validate {_file(run_dir, 'train', method)}`",
        )
    n = len(counts.get("train", []))
    if n < MIN_EXAMPLES:
        raise FinetuneError(
            f"{_file(run_dir, 'train', method)} has {n} examples; the fine-tuning service needs at least {MIN_EXAMPLES}",
            hint="generate more conversations (generation.conversations) or lower export.validation_fraction",
        )
    return counts


def _upload(
    client: Any, path: Path, record: dict[str, Any] | None, echo: Callable[[str], None]
) -> dict[str, Any]:
    digest, size = sha256_of(path), path.stat().st_size
    if record and record.get("sha256") == digest and record.get("id"):
        echo(f"{path.name}: already uploaded as {record['id']}")
        return record
    if size > MAX_UPLOAD_BYTES:
        raise FinetuneError(f"{path} is {size:,} bytes, over the Files API's 512 MB limit")
    try:
        with path.open("rb") as fh:
            uploaded = client.files.create(file=(path.name, fh, "application/jsonl"), purpose="fine-tune")
    except Exception as exc:  # noqa: BLE001 - service_error re-raises what it does not know
        raise service_error(exc, f"uploading {path.name}") from None
    echo(f"{path.name}: uploaded as {uploaded.id} ({size:,} bytes)")
    return {"id": uploaded.id, "sha256": digest, "bytes": size}


def finetune(
    run: str | os.PathLike[str],
    *,
    model: str | None = None,
    suffix: str | None = None,
    epochs: int | None = None,
    wait: bool = False,
    cancel: bool = False,
    new: bool = False,
    estimate_only: bool = False,
    method: str | None = None,
    beta: float | None = None,
    base_url: str | None = None,
    price: float | None = None,
    poll_interval: float = DEFAULT_POLL_S,
    max_retries: int = 2,
    timeout_s: float = 120.0,
    client: Any = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
    echo: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Start (or re-attach to) the fine-tuning job of a run folder; see the module docstring.

    `model` defaults to the run's `export.model`; `epochs=None` leaves the epoch count to the service (the estimate
    uses its default rule); `price` overrides the USD per 1M training tokens of the price table; `estimate_only`
    lints and estimates without a key or any upload; `sleep` (between polls) and `clock` (the ledger's timestamps)
    default to time.sleep and time.time. `method="dpo"` (default: the recorded job's, else supervised) trains on the run's preference pairs
    (`preferences.train.jsonl`, `export.preferences: true`) with `method: {"type": "dpo", ...}`, `beta` its DPO beta.
    Raises FinetuneError for refused requests and failed jobs.
    """
    say = echo or (lambda line: None)
    sleep = sleep or time.sleep
    clock = clock or time.time
    run_dir = Path(run)
    folder = RunFolder(run_dir)
    ledger_path = folder.finetune
    asked_method, ledger = method, read_ledger(ledger_path)
    recorded = ledger.get("method") if (ledger.get("job") or {}).get("id") and not new else None
    method = method or recorded or "supervised"  # a re-attach keeps the recorded job's method
    if method not in ("supervised", "dpo"):
        raise FinetuneError(f"method must be supervised or dpo, got {method!r}")
    hint = "set export.preferences: true and run `distill export CONFIG`" if method == "dpo" else GENERATE_FIRST
    folder.require(_file(run_dir, "train", method), hint)
    if beta is not None and (method != "dpo" or beta <= 0):
        raise FinetuneError("beta is a DPO hyperparameter: give a positive beta with method dpo")
    if epochs is not None and epochs < 1:
        raise FinetuneError(f"epochs must be at least 1, got {epochs}")
    config = _run_config(run_dir)
    job = ledger.get("job") or {}

    if estimate_only:
        target = _target(model, ledger.get("model"), config, run_dir)
        counts = _lint(run_dir, config, target, method)
        estimate = estimate_cost(counts["train"], target, epochs=epochs, usd_per_1m=price)
        say(f"estimate for {target}: {estimate.describe()}")
        return FinetuneResult(run_dir, ledger_path, job.get("id"), job.get("status"), estimate=estimate)

    requested_url = resolve_base_url(base_url)
    reattach = bool(job.get("id")) and not new
    if reattach:
        _check_same_job(ledger, run_dir, model=model, suffix=suffix, epochs=epochs, base_url=requested_url,
                        method=asked_method)
        requested_url = requested_url or ledger.get("base_url")
    if cancel and not reattach:
        raise FinetuneError(
            f"{ledger_path} records no job to cancel", hint=f"start one with `distill finetune {run_dir}`"
        )
    client = client or make_client(requested_url, max_retries, timeout_s)
    service = public_url(str(getattr(client, "base_url", requested_url or OPENAI_BASE_URL)))

    result = FinetuneResult(run_dir, ledger_path, job.get("id"), job.get("status"))
    if reattach:
        say(f"re-attached to job {job['id']} (recorded in {ledger_path})")
        uploaded = (ledger.get("files") or {}).get("train") or {}
        if uploaded.get("sha256") and uploaded["sha256"] != sha256_of(_file(run_dir, "train", ledger.get("method", ""))):
            say(
                "note: train.jsonl changed since this job's upload; `--new` starts a job on the current files"
            )
        if cancel:
            return _cancel(client, ledger, ledger_path, result, clock, say)
    else:
        if new and job.get("id"):
            ledger.setdefault("previous_jobs", []).append(job)
            ledger.pop("job", None)
            ledger.pop("last_event_id", None)
        if ledger.get("base_url") not in (None, service):
            ledger.pop("files", None)  # file ids of another service mean nothing here
        target = _target(model, None, config, run_dir)
        counts = _lint(run_dir, config, target, method)
        estimate = estimate_cost(counts["train"], target, epochs=epochs, usd_per_1m=price)
        say(f"{target} ({method}): {estimate.describe()}")
        result.estimate = estimate
        ledger.update(
            {
                "base_url": service,
                "model": target,
                "suffix": suffix,
                "epochs": epochs,
                "method": method,
                "beta": beta,
                "estimate": asdict(estimate),
            }
        )
        _create(client, run_dir, ledger, ledger_path, counts, clock, say)
        result.created = True

    job = ledger["job"]
    result.job_id, result.status = job["id"], job["status"]
    try:
        _refresh(client, ledger, ledger_path, result, clock, say, stream=wait)
        while wait and result.status not in TERMINAL:
            sleep(poll_interval)
            _refresh(client, ledger, ledger_path, result, clock, say, stream=True)
    finally:
        write_ledger(ledger_path, ledger, clock)
    job = ledger["job"]
    if result.status == "failed":
        raise failure(job)
    if result.status == "succeeded":
        say(f"job {job['id']} succeeded: fine-tuned model {job['fine_tuned_model']}")
    elif result.status == "cancelled":
        say(f"job {job['id']} was cancelled; `distill finetune {run_dir} --new` starts another")
    elif not wait:
        say(f"job {job['id']} is {result.status}; `distill finetune {run_dir} --wait` watches it")
    return result


def _check_same_job(
    ledger: dict[str, Any],
    run_dir: Path,
    *,
    model: str | None,
    suffix: str | None,
    epochs: int | None,
    base_url: str | None,
    method: str | None = None,
) -> None:
    asked = {"model": model, "suffix": suffix, "epochs": epochs, "method": method}
    for key, value in asked.items():
        if value is not None and value != ledger.get(key, "supervised" if key == "method" else None):
            raise FinetuneError(
                f"{RunFolder(run_dir).finetune} records job {ledger['job']['id']} with {key}={ledger.get(key)!r}, "
                f"not {value!r}",
                hint="drop the option to re-attach to that job, or pass --new to start another job",
            )
    if base_url and ledger.get("base_url") and public_url(base_url) != ledger["base_url"]:
        raise FinetuneError(
            f"{RunFolder(run_dir).finetune} records job {ledger['job']['id']} on {ledger['base_url']}, not on "
            f"{public_url(base_url)}",
            hint="point --base-url / OPENAI_BASE_URL at the service that runs it, or pass --new",
        )


def _create(
    client: Any,
    run_dir: Path,
    ledger: dict[str, Any],
    ledger_path: Path,
    counts: dict[str, list[int]],
    clock: Callable[[], float],
    say: Callable[[str], None],
) -> None:
    files = ledger.setdefault("files", {})
    for name in SPLITS:
        if name in counts:
            with deferred_interrupt():
                files[name] = _upload(client, _file(run_dir, name, ledger.get("method", "")), files.get(name), say)
                write_ledger(ledger_path, ledger, clock)
        else:
            files.pop(name, None)
    kwargs: dict[str, Any] = {"model": ledger["model"], "training_file": files["train"]["id"]}
    if "validation" in files:
        kwargs["validation_file"] = files["validation"]["id"]
    if ledger.get("suffix"):
        kwargs["suffix"] = ledger["suffix"]
    hyper = {k: v for k, v in (("n_epochs", ledger.get("epochs")), ("beta", ledger.get("beta"))) if v}
    if ledger.get("method") == "dpo":  # preference fine-tuning always names its method
        kwargs["method"] = {"type": "dpo", "dpo": {"hyperparameters": hyper}}
    elif hyper:
        kwargs["method"] = {"type": "supervised", "supervised": {"hyperparameters": hyper}}
    with deferred_interrupt():
        try:  # no SDK retry: a retried create after a timeout could start a second job
            job = client.with_options(max_retries=0).fine_tuning.jobs.create(**kwargs)
        except Exception as exc:  # noqa: BLE001 - service_error re-raises what it does not know
            raise service_error(exc, "creating the fine-tuning job") from None
        ledger["job"] = job_record(job)
        write_ledger(ledger_path, ledger, clock)
    say(f"created job {job.id} ({job.status}); recorded in {ledger_path}")


def _refresh(
    client: Any,
    ledger: dict[str, Any],
    ledger_path: Path,
    result: FinetuneResult,
    clock: Callable[[], float],
    say: Callable[[str], None],
    *,
    stream: bool,
) -> None:
    job_id = ledger["job"]["id"]
    try:
        record = job_record(client.fine_tuning.jobs.retrieve(job_id))
        changed = record["status"] != ledger["job"].get("status")
        ledger["job"] = record
        result.status, result.fine_tuned_model, result.error = (
            record["status"],
            record["fine_tuned_model"],
            record["error"],
        )
        if changed and stream:
            say(f"job {job_id}: {record['status']}")
        if stream:  # after the status, so that the events of a job that just ended are shown too
            for event in new_events(client, job_id, ledger.get("last_event_id")):
                say(event_line(event))
                result.events.append({"id": event.id, "level": event.level, "message": event.message})
                ledger["last_event_id"] = event.id
    except Exception as exc:  # noqa: BLE001 - service_error re-raises what it does not know
        raise service_error(exc, f"reading job {job_id}", job_id) from None
    finally:
        write_ledger(ledger_path, ledger, clock)


def _cancel(
    client: Any,
    ledger: dict[str, Any],
    ledger_path: Path,
    result: FinetuneResult,
    clock: Callable[[], float],
    say: Callable[[str], None],
) -> FinetuneResult:
    job_id = ledger["job"]["id"]
    if ledger["job"].get("status") in TERMINAL:
        say(f"job {job_id} already ended ({ledger['job']['status']}); nothing to cancel")
        return result
    try:
        job = client.fine_tuning.jobs.cancel(job_id)
    except Exception as exc:  # noqa: BLE001 - service_error re-raises what it does not know
        raise service_error(exc, f"cancelling job {job_id}", job_id) from None
    ledger["job"] = job_record(job)
    write_ledger(ledger_path, ledger, clock)
    result.status = ledger["job"]["status"]
    say(f"job {job_id}: {result.status}")
    return result
