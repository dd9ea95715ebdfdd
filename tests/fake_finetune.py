"""Fine-tuning routes for the fake OpenAI server: files, jobs, job events and cancel, with scripted job lives.

`FakeFineTuning(server).install()` registers `/v1/files`, `/v1/fine_tuning/jobs`, `/v1/fine_tuning/jobs/{id}`,
`/v1/fine_tuning/jobs/{id}/events` and `/v1/fine_tuning/jobs/{id}/cancel` on a `tests.fake_openai.FakeOpenAI`.
Each created job follows `script`: a list of steps, one taken per `GET /jobs/{id}`; a step is a status, or a
(status, event message) pair, or a dict with `status`, `message`, `error`, `metrics`. Uploaded files are parsed from
the multipart body and kept, so a test can check what the service received.
"""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.fake_openai import FakeOpenAI, FakeRequest, FakeResponse

__all__ = ["SUCCESS_SCRIPT", "VALIDATION_FAILURE_SCRIPT", "FakeFineTuning", "FakeJob"]

SUCCESS_SCRIPT: list[Any] = [
    ("validating_files", "Validating training file"),
    ("queued", "Job queued"),
    ("running", "Fine-tuning job started"),
    {
        "status": "running",
        "message": "Step 1/2: training loss=1.20",
        "metrics": {"step": 1, "train_loss": 1.2},
    },
    {
        "status": "running",
        "message": "Step 2/2: training loss=0.40",
        "metrics": {"step": 2, "train_loss": 0.4},
    },
    ("succeeded", "The job has successfully completed"),
]

VALIDATION_FAILURE_SCRIPT: list[Any] = [
    ("validating_files", "Validating training file"),
    {
        "status": "failed",
        "message": "Training file validation failed",
        "level": "error",
        "error": {
            "code": "invalid_training_file",
            "message": "The job failed due to an invalid training file. Invalid file format. Example 3, message 2: "
            "Assistant message has unrecognized key 'foo'.",
            "param": "training_file",
        },
    },
]


@dataclass
class FakeJob:
    """One job and where it is in its script."""

    id: str
    body: dict[str, Any]
    script: list[Any]
    created_at: int
    step: int = -1
    status: str = "validating_files"
    error: dict[str, Any] | None = None
    fine_tuned_model: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first


def _multipart(request: FakeRequest) -> dict[str, tuple[str | None, bytes]]:
    content_type = request.headers.get("content-type") or request.headers.get("Content-Type") or ""
    boundary = re.search(r"boundary=\"?([^\";]+)\"?", content_type)
    assert boundary, f"not multipart: {content_type}"
    parts: dict[str, tuple[str | None, bytes]] = {}
    for chunk in request.body.split(b"--" + boundary.group(1).encode()):
        if b"\r\n\r\n" not in chunk:
            continue
        head, _, data = chunk.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        filename = re.search(rb'filename="([^"]*)"', head)
        if name:
            parts[name.group(1).decode()] = (
                filename.group(1).decode() if filename else None,
                data[:-2] if data.endswith(b"\r\n") else data,
            )
    return parts


class FakeFineTuning:
    """The fine-tuning part of the fake service."""

    def __init__(self, server: FakeOpenAI, script: list[Any] | None = None, owner: str = "org-test") -> None:
        self.server = server
        self.script = list(script if script is not None else SUCCESS_SCRIPT)
        self.owner = owner
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.create_error: FakeResponse | None = None  # answer the next job creation with this instead
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def install(self) -> FakeFineTuning:
        """Register the routes on the server."""
        route = self.server.route
        route("POST", r"/v1/files", self._upload)
        route("POST", r"/v1/fine_tuning/jobs", self._create)
        route("GET", r"/v1/fine_tuning/jobs/(?P<id>[^/]+)", self._retrieve)
        route("GET", r"/v1/fine_tuning/jobs/[^/]+/events", self._events)
        route("POST", r"/v1/fine_tuning/jobs/[^/]+/cancel", self._cancel)
        return self

    # -- helpers ----------------------------------------------------------------------------------------------------
    def _job_json(self, job: FakeJob) -> dict[str, Any]:
        method = job.body.get("method") or {"type": "supervised", "supervised": {"hyperparameters": {}}}
        epochs = method.get(method["type"], {}).get("hyperparameters", {}).get("n_epochs")
        return {
            "id": job.id,
            "object": "fine_tuning.job",
            "created_at": job.created_at,
            "error": job.error,
            "fine_tuned_model": job.fine_tuned_model,
            "finished_at": job.created_at + 60
            if job.status in ("succeeded", "failed", "cancelled")
            else None,
            "hyperparameters": {
                "n_epochs": epochs or "auto",
                "batch_size": "auto",
                "learning_rate_multiplier": "auto",
            },
            "method": method,
            "model": job.body["model"],
            "organization_id": self.owner,
            "result_files": [],
            "seed": 42,
            "status": job.status,
            "trained_tokens": 1234 if job.status == "succeeded" else None,
            "training_file": job.body["training_file"],
            "validation_file": job.body.get("validation_file"),
        }

    def _event(
        self, job: FakeJob, message: str, level: str = "info", metrics: dict[str, Any] | None = None
    ) -> None:
        n = len(job.events) + 1
        job.events.append(
            {
                "id": f"ftevent-{job.id}-{n:03d}",
                "object": "fine_tuning.job.event",
                "created_at": job.created_at + n,
                "level": level,
                "message": message,
                "data": metrics or {},
                "type": "metrics" if metrics else "message",
            }
        )

    def _job(self, request: FakeRequest) -> FakeJob | None:
        job_id = request.path.split("/fine_tuning/jobs/")[1].split("/")[0]
        return self.jobs.get(job_id)

    @staticmethod
    def _missing() -> FakeResponse:
        return FakeResponse(
            404, {"error": {"message": "No such fine-tuning job", "type": "invalid_request_error"}}
        )

    # -- routes -----------------------------------------------------------------------------------------------------
    def _upload(self, request: FakeRequest) -> FakeResponse:
        parts = _multipart(request)
        filename, content = parts["file"]
        purpose = parts["purpose"][1].decode()
        with self._lock:
            file_id = f"file-{next(self._ids)}"
            self.files[file_id] = {"filename": filename, "purpose": purpose, "content": content}
        body = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": 1_700_000_000,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        return FakeResponse(json=body)

    def _create(self, request: FakeRequest) -> FakeResponse:
        if self.create_error is not None:
            answer, self.create_error = self.create_error, None
            return answer
        body = request.json()
        for key in ("training_file", "validation_file"):
            if body.get(key) and body[key] not in self.files:
                message = f"invalid {key}: {body[key]} does not exist"
                return FakeResponse(
                    400, {"error": {"message": message, "param": key, "code": "invalid_file"}}
                )
        with self._lock:
            job = FakeJob(f"ftjob-{next(self._ids)}", body, list(self.script), 1_700_000_000)
            self.jobs[job.id] = job
        self._event(job, f"Created fine-tuning job: {job.id}")
        return FakeResponse(json=self._job_json(job))

    def _retrieve(self, request: FakeRequest) -> FakeResponse:
        job = self._job(request)
        if job is None:
            return self._missing()
        with self._lock:
            if job.status not in ("succeeded", "failed", "cancelled") and job.step + 1 < len(job.script):
                job.step += 1
                step = job.script[job.step]
                if isinstance(step, str):
                    step = {"status": step}
                elif isinstance(step, tuple):
                    step = {"status": step[0], "message": step[1]}
                job.status = step["status"]
                job.error = step.get("error")
                if step.get("message"):
                    self._event(job, step["message"], step.get("level", "info"), step.get("metrics"))
                if job.status == "succeeded":
                    suffix = job.body.get("suffix") or ""
                    job.fine_tuned_model = f"ft:{job.body['model']}:{self.owner}:{suffix}:{job.id[-4:]}"
        return FakeResponse(json=self._job_json(job))

    def _events(self, request: FakeRequest) -> FakeResponse:
        job = self._job(request)
        if job is None:
            return self._missing()
        query = dict(p.split("=", 1) for p in (request.query or "").split("&") if "=" in p)
        limit = int(query.get("limit", 20))
        newest_first = job.events[::-1]
        if "after" in query:
            ids = [e["id"] for e in newest_first]
            newest_first = newest_first[ids.index(query["after"]) + 1 :] if query["after"] in ids else []
        page = newest_first[:limit]
        return FakeResponse(json={"object": "list", "data": page, "has_more": len(newest_first) > limit})

    def _cancel(self, request: FakeRequest) -> FakeResponse:
        job = self._job(request)
        if job is None:
            return self._missing()
        if job.status in ("succeeded", "failed", "cancelled"):
            message = f"Job {job.id} has already completed; it cannot be cancelled"
            return FakeResponse(400, {"error": {"message": message}})
        job.status = "cancelled"
        self._event(job, "Fine-tuning job cancelled")
        return FakeResponse(json=self._job_json(job))

    # -- what tests look at -----------------------------------------------------------------------------------------
    def created_jobs(self) -> int:
        """How many jobs were created (POST /v1/fine_tuning/jobs answered 200)."""
        return len(self.jobs)

    def uploaded(self) -> list[tuple[str, str, bytes]]:
        """(filename, purpose, content) of every uploaded file, in order."""
        return [(f["filename"], f["purpose"], f["content"]) for f in self.files.values()]
