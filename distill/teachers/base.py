"""What every teacher is: an async `complete(request) -> reply` (`Teacher`), and its two optional parts.

A teacher is any policy that plays the agent: the teacher model during generation, a student behind the same
engine during `distill eval`, a local in-process model. Two optional parts, so `distill.generation.resume` needs no
look inside a teacher: `RunTeacher` (answers cost something: `use_run` gives it the run folder's ledger and meter)
and `PacedTeacher` (`limits`: the rate limits it worked under, for the manifest).

A `TeacherRequest` holds exactly what is sent to the model (messages, parameters, response_format, and for native
tool calling `tools` / `tool_choice` / `parallel_tool_calls`) and a `context` that is never sent: the plan behind the
request (its chunk, the intended tool), which only the offline teacher reads. A `TeacherReply` keeps the raw text,
tool calls, finish reason and usage, whatever they are; parsing happens elsewhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from distill.errors import Rejection

if TYPE_CHECKING:
    from distill.teachers.costs import Meter
    from distill.teachers.ledger import Ledger

__all__ = ["PacedTeacher", "RunTeacher", "Teacher", "TeacherCallError", "TeacherReply", "TeacherRequest"]


@dataclass(slots=True)
class TeacherRequest:
    """One model call: what is sent, and (in `context`) why, for teachers that cannot read."""

    stage: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    response_format: dict[str, Any] | None = None
    context: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None  # native tool calling: [{"type": "function", "function": {...}}]
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    def key(self, model: str) -> str:
        """A content hash of everything that determines the request (for caching and the ledger)."""
        payload = {
            "model": model,
            "messages": self.messages,
            "params": self.params,
            "response_format": self.response_format,
        }
        for name in ("tools", "tool_choice", "parallel_tool_calls"):  # only when set: other keys stay as they were
            value = getattr(self, name)
            if value is not None:
                payload[name] = value
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(slots=True)
class TeacherReply:
    """What the model answered, unparsed."""

    text: str | None
    finish_reason: str | None = "stop"
    usage: dict[str, int] = field(default_factory=dict)
    model: str = ""
    tool_calls: list[dict[str, Any]] | None = None  # [{"id", "type": "function", "function": {"name", "arguments"}}]


class TeacherCallError(Rejection):
    """A call that produced no answer after the retries (HTTP error, timeout); `reason` is machine-readable."""


@runtime_checkable
class Teacher(Protocol):
    """The interface the agent loop uses: a policy that answers requests."""

    provider: str
    model: str

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        """Answer one request; raise TeacherCallError when no answer could be had."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class RunTeacher(Protocol):
    """The optional part of a teacher whose answers are paid for: it keeps them in the run folder's ledger."""

    def use_run(self, ledger: Ledger | None, meter: Meter | None) -> None:
        """Answer from (and record into) `ledger`; count requests, tokens and dollars in `meter`."""
        ...


@runtime_checkable
class PacedTeacher(Protocol):
    """The optional part of a teacher behind a rate-limited endpoint."""

    def limits(self) -> dict[str, Any]:
        """The rate limits in force and where they came from (the manifest's `teacher_usage.limits`)."""
        ...
