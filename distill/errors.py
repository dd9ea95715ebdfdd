"""The one error tree of distill: every expected failure is a `DistillError` carrying its context.

The CLI turns a `DistillError` into one line (plus a hint) and exit code 2; anything else is a bug and keeps its
traceback. A `Rejection` is not a user-facing error but a verdict on one item (a question, a teacher call, a simulated
observation, a trajectory an agent format cannot express, a student's call in an evaluation): every stage raises it
(or a subclass named for the stage) with a machine-readable `reason`, a `detail` and the `raw` text it concerns, and
the stage records it on the item instead of stopping the run.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DistillError",
    "FinetuneError",
    "PublishError",
    "Rejection",
    "RunFolderError",
    "RunStopped",
    "SourceError",
    "TeacherError",
]


class DistillError(Exception):
    """Base class: a message a user can act on, optionally with a hint naming the fix."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(DistillError):
    """A config file that cannot be read or does not validate; names the file and the YAML key."""

    def __init__(self, file: str, key: str | None, message: str, *, hint: str | None = None) -> None:
        self.file = file
        self.key = key
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {message}", hint=hint)


class SourceError(DistillError):
    """A source that cannot be loaded at all (a missing dataset library, an unreachable dataset)."""


class TeacherError(DistillError):
    """A teacher that cannot be used (no API key, an endpoint that refuses every request)."""


class RunFolderError(DistillError):
    """A run folder that is missing the artifact a command needs."""


class RunStopped(DistillError):
    """A run that stopped on its own, resumably (endpoint down, budget reached); `reason` is machine-readable."""

    def __init__(self, reason: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class PublishError(DistillError):
    """A dataset that cannot be published (no Hugging Face token, a bad repo id, the Hub refusing the upload)."""


class FinetuneError(DistillError):
    """A fine-tuning job that cannot be started or watched, or that failed; `job_id` names it when there is one."""

    def __init__(self, message: str, *, hint: str | None = None, job_id: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.job_id = job_id


class Rejection(Exception):
    """One item that cannot be used: `reason` (a `Reason` value or another machine-readable word), `detail` (for a
    person) and `raw` (the text concerned, when there is one). Not a DistillError: the stage records it and goes on."""

    def __init__(self, reason: str, detail: str, raw: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = str(reason)
        self.detail = detail
        self.raw = raw
