"""What every teacher is: an async `complete(request) -> reply`, plus the factory that picks one from the config.

A `TeacherRequest` holds exactly what is sent to the model (messages, parameters, response_format, and for native
tool calling `tools` / `tool_choice` / `parallel_tool_calls`) and a `context` that is never sent: the plan behind the
request (its chunk, the intended tool), which only the offline teacher reads. A `TeacherReply` keeps the raw text,
tool calls, finish reason and usage, whatever they are; parsing happens elsewhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from distill.errors import Rejection

__all__ = ["Teacher", "TeacherCallError", "TeacherReply", "TeacherRequest"]


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


class Teacher(Protocol):
    """The interface the pipeline uses."""

    provider: str
    model: str

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        """Answer one request; raise TeacherCallError when no answer could be had."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
