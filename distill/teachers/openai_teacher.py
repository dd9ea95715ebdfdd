"""The OpenAI teacher: builds the chat-completions body of a request, asks the ledger, else sends it via the engine.

Works against OpenAI or any OpenAI-compatible endpoint: `teacher.base_url`, else `OPENAI_BASE_URL`. The key is read
from `OPENAI_API_KEY` only and never written anywhere. Rate limits, retries, the circuit breaker and the budget are
the engine's (distill/teachers/engine.py); a run folder's ledger and meter are attached with `use_run`. Replies are
read from the raw response body (`reply_from_body`), the same way for a fresh answer and for one from the ledger.
`chat_body` builds the body (with `teacher.service_tier` when set); the batch path (distill/teachers/batch.py) writes
the same body into its batch files.
"""

from __future__ import annotations

import os
from typing import Any

from distill.config import Config
from distill.errors import TeacherError
from distill.teachers.base import TeacherCallError, TeacherReply, TeacherRequest
from distill.teachers.costs import Meter
from distill.teachers.engine import Engine, build_clients, usage_of
from distill.teachers.ledger import Ledger

__all__ = ["OpenAITeacher", "chat_body", "reply_from_body"]


def reply_from_body(body: Any, model: str) -> TeacherReply:
    """A TeacherReply from a chat.completion JSON body (content, tool calls, finish reason, usage)."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise TeacherCallError("no_choices", "the endpoint returned no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    calls = [
        {"id": c.get("id"), "type": "function", "function": {"name": f.get("name"), "arguments": f.get("arguments")}}
        for c in message.get("tool_calls") or ()
        if isinstance(c, dict) and isinstance(f := c.get("function"), dict)
    ]
    return TeacherReply(
        text=message.get("content"),
        finish_reason=choice.get("finish_reason"),
        usage=usage_of(body),
        model=body.get("model") or model,
        tool_calls=calls or None,
    )


def chat_body(model: str, request: TeacherRequest, service_tier: str | None = None) -> dict[str, Any]:
    """The chat-completions body of a request, as the online path sends it and the batch path writes it."""
    body: dict[str, Any] = {"model": model, "messages": request.messages, **request.params}
    if request.response_format is not None:
        body["response_format"] = request.response_format
    for name in ("tools", "tool_choice", "parallel_tool_calls"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if service_tier is not None:  # flex (half price, slower) or any tier the API takes; not part of the ledger key
        body["service_tier"] = service_tier
    return body


class OpenAITeacher:
    """Calls chat completions with the request's messages and parameters."""

    provider = "openai"

    def __init__(self, config: Config, *, client: Any = None) -> None:
        self.model = config.teacher.model
        self._config = config.teacher
        if client is None:
            key = os.environ.get("OPENAI_API_KEY")
            if not key:
                raise TeacherError(
                    "teacher.provider is openai but OPENAI_API_KEY is not set",
                    hint="export OPENAI_API_KEY=... (and OPENAI_BASE_URL for another endpoint), "
                    "or set teacher.provider: offline",
                )
            base_url = config.teacher.base_url or os.environ.get("OPENAI_BASE_URL") or None
            clients = build_clients(config.teacher, key, base_url)
        else:
            clients = [client]
        self.ledger: Ledger | None = None
        self.meter: Meter | None = None
        self.engine = Engine(config.teacher, clients, model=self.model)

    def use_run(self, ledger: Ledger | None, meter: Meter | None) -> None:
        """Answer from (and record into) a run folder's ledger; count requests, tokens and dollars in `meter`."""
        self.ledger = self.engine.ledger = ledger
        self.meter = self.engine.meter = meter

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        """One chat completion, from the ledger when it was answered before; failures become TeacherCallError."""
        key = request.key(self.model)
        if self.ledger is not None:
            stored = self.ledger.lookup(key)
            if stored is not None:
                if self.meter is not None:
                    self.meter.record(request.stage, stored.usage, hit=True)
                return reply_from_body(stored.body(), self.model)
        kwargs = chat_body(self.model, request, self._config.service_tier)
        body = await self.engine.send(kwargs, key=key, stage=request.stage)
        return reply_from_body(body, self.model)

    async def aclose(self) -> None:
        """Close the HTTP clients."""
        await self.engine.aclose()
