"""A fine-tuning job seen from a run folder: the run's ledger (`finetune.json`) and the calls to the service.

The ledger records the service's base URL (no credentials), the uploaded file ids and hashes, the job id, its last
known status, error and `fine_tuned_model`, and the last event shown; it is written atomically after every change.
The service is any OpenAI-compatible endpoint reached with the official client; the key comes from OPENAI_API_KEY
only. Service failures become `FinetuneError`s that carry the service's own message verbatim.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from distill.atomic_files import sha256_of  # re-exported: finetune.py checks the uploaded file with it
from distill.endpoint import OPENAI_URL, resolve_endpoint
from distill.errors import FinetuneError
from distill.run_folder import FINETUNE, write_json

__all__ = [
    "LEDGER",
    "OPENAI_BASE_URL",
    "TERMINAL",
    "deferred_interrupt",
    "event_line",
    "failure",
    "job_record",
    "make_client",
    "new_events",
    "public_url",
    "read_ledger",
    "service_error",
    "sha256_of",
    "write_ledger",
]

LEDGER = FINETUNE  # in the run folder
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
OPENAI_BASE_URL = OPENAI_URL  # what the ledger records when no base URL was set


def read_ledger(path: Path) -> dict[str, Any]:
    """The run's ledger ({} when there is none yet)."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise FinetuneError(
            f"{path} is not valid JSON: {exc}", hint="restore it, or delete it to start over"
        ) from None


def write_ledger(path: Path, ledger: dict[str, Any], clock: Callable[[], float]) -> None:
    """Write the ledger atomically, stamped with `clock()` as `updated_at`."""
    ledger["updated_at"] = datetime.fromtimestamp(clock(), UTC).isoformat(timespec="seconds")
    write_json(path, ledger)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so a created job is always recorded before the process stops."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


def public_url(url: str) -> str:
    """A base URL as the ledger records it: no credentials, no query, no trailing slash."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def make_client(base_url: str | None, max_retries: int, timeout_s: float) -> Any:
    """The OpenAI client for `base_url` (None: OPENAI_BASE_URL, else OpenAI); the key from OPENAI_API_KEY
    (`distill.endpoint`)."""
    endpoint = resolve_endpoint(base_url, key_required=True, needed_by="fine-tuning",
                                alternative="`--estimate` shows the cost without a key", error=FinetuneError)
    from openai import OpenAI

    return OpenAI(api_key=endpoint.api_key, base_url=endpoint.base_url, max_retries=max_retries, timeout=timeout_s)


def service_error(exc: Exception, doing: str, job_id: str | None = None) -> FinetuneError:
    """A refused or unreachable request as a FinetuneError with the service's message verbatim; re-raises
    anything that is not an OpenAI SDK error."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else None
        message = message or (exc.response.text[:2000] if exc.response is not None else str(exc))
        hint = {
            401: "the service refused the key: check OPENAI_API_KEY",
            404: "the service does not know this id: check --base-url / OPENAI_BASE_URL",
        }.get(exc.status_code)
        return FinetuneError(f"{doing} failed (HTTP {exc.status_code}): {message}", hint=hint, job_id=job_id)
    if isinstance(exc, openai.APIConnectionError):
        return FinetuneError(
            f"{doing} failed: cannot reach the service ({exc})",
            hint="check the network and --base-url / OPENAI_BASE_URL; rerun the same command",
            job_id=job_id,
        )
    raise exc


def job_record(job: Any) -> dict[str, Any]:
    """The part of a job the ledger keeps: id, status, model, fine_tuned_model, tokens, times, error."""
    error = getattr(job, "error", None)
    if error is not None and not getattr(error, "message", None) and not getattr(error, "code", None):
        error = None
    return {
        "id": job.id,
        "status": job.status,
        "model": getattr(job, "model", None),
        "fine_tuned_model": getattr(job, "fine_tuned_model", None),
        "trained_tokens": getattr(job, "trained_tokens", None),
        "created_at": getattr(job, "created_at", None),
        "finished_at": getattr(job, "finished_at", None),
        "error": (
            {"code": error.code, "message": error.message, "param": getattr(error, "param", None)}
            if error
            else None
        ),
    }


def failure(job: dict[str, Any]) -> FinetuneError:
    """The FinetuneError of a failed job: the service's code, message (verbatim) and param."""
    error = job.get("error") or {}
    code = f"{error['code']}: " if error.get("code") else ""
    param = f" (param: {error['param']})" if error.get("param") else ""
    message = error.get("message") or "the service gave no error message"
    return FinetuneError(
        f"fine-tuning job {job['id']} failed: {code}{message}{param}",
        hint="fix the data, then start another job with `distill finetune RUN --new`",
        job_id=job["id"],
    )


def new_events(client: Any, job_id: str, last_seen: str | None, max_pages: int = 20) -> list[Any]:
    """Events after `last_seen`, oldest first (the service lists newest first, paging towards older ones)."""
    found: list[Any] = []
    after: str | None = None
    for _ in range(max_pages):
        kwargs: dict[str, Any] = {"limit": 100}
        if after:
            kwargs["after"] = after
        page = client.fine_tuning.jobs.list_events(job_id, **kwargs)
        for event in page.data:
            if event.id == last_seen:
                return found[::-1]
            found.append(event)
        if not page.data or not page.has_more:
            break
        after = page.data[-1].id
    return found[::-1]


def event_line(event: Any) -> str:
    """One event for people: `[HH:MM:SS] message` (UTC), with the level when it is not info."""
    when = datetime.fromtimestamp(event.created_at, UTC).strftime("%H:%M:%S")
    text = event.message
    data = getattr(event, "data", None)
    if getattr(event, "type", None) == "metrics" and isinstance(data, dict) and not text:
        text = ", ".join(f"{k}={v}" for k, v in data.items())
    level = "" if event.level == "info" else f"{event.level}: "
    return f"[{when}] {level}{text}"
