"""A model behind an OpenAI-compatible endpoint (`OpenAIModel`) and the OpenAI teacher (`OpenAITeacher`).

Builds the chat-completions body of a request, asks the ledger, else sends it via the engine. The teacher works
against `teacher.base_url`, else `OPENAI_BASE_URL`, else OpenAI, with the key from `OPENAI_API_KEY`
(`distill.endpoint`), or against a pool of endpoints (`teacher.endpoints`: distill/teachers/pool.py); `distill eval` plays each student through an `OpenAIModel` without a ledger. Rate limits,
retries, the circuit breaker and the budget are the engine's (distill/teachers/engine.py); a run folder's ledger and
meter are attached with `use_run`. Replies are read from the raw response body (`reply_from_body`), the same way for
a fresh answer and for one from the ledger. `chat_body` builds the body (with `teacher.service_tier` when set); the
batch path (distill/teachers/batch.py) writes the same body into its batch files.
"""

from __future__ import annotations

from typing import Any

from distill.config import Config, TeacherConfig
from distill.endpoint import Endpoint, resolve_endpoint
from distill.errors import TeacherError
from distill.teachers.base import TeacherCallError, TeacherReply, TeacherRequest
from distill.teachers.costs import Meter
from distill.teachers.engine import Engine, build_clients, usage_of
from distill.teachers.ledger import Ledger
from distill.teachers.pool import build_pool

__all__ = ["OpenAIModel", "OpenAITeacher", "chat_body", "reply_from_body"]


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


class OpenAIModel:
    """A model behind an OpenAI-compatible endpoint, through the engine: the policy of a teacher or of a student.

    `settings` are the engine's (concurrency, retries, timeouts, limits, breaker); `stop_on_refusal` False makes a
    401 / 403 / 404 a failed call (`TeacherCallError("http_404")`) instead of a stopped run (see `Engine`).
    """

    provider = "openai"

    def __init__(
        self, settings: TeacherConfig, model: str, clients: list[Any], *, base_url: str | None = None,
        stop_on_refusal: bool = True, engine: Engine | None = None,
    ) -> None:
        self.model, self.base_url = model, base_url
        self.service_tier = settings.service_tier
        self.ledger: Ledger | None = None
        self.meter: Meter | None = None
        self.engine = engine or Engine(settings, clients, model=model, stop_on_refusal=stop_on_refusal)

    @classmethod
    def at(
        cls, settings: TeacherConfig, model: str, endpoint: Endpoint, *, stop_on_refusal: bool = True
    ) -> OpenAIModel:
        """`model` at a resolved endpoint (`distill.endpoint.resolve_endpoint`), with the engine's own clients."""
        clients = build_clients(settings, endpoint.api_key, endpoint.base_url)
        return cls(settings, model, clients, base_url=endpoint.base_url, stop_on_refusal=stop_on_refusal)

    def use_run(self, ledger: Ledger | None, meter: Meter | None) -> None:
        """Answer from (and record into) a run folder's ledger; count requests, tokens and dollars in `meter`."""
        self.ledger = self.engine.ledger = ledger
        self.meter = self.engine.meter = meter

    def limits(self) -> dict[str, Any]:
        """The rate limits in force and where they came from (configured, headers, learned from 429s)."""
        return self.engine.limits()

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        """One chat completion, from the ledger when it was answered before; failures become TeacherCallError."""
        key = request.key(self.model)
        if self.ledger is not None:
            stored = self.ledger.lookup(key)
            if stored is not None:
                if self.meter is not None:
                    self.meter.record(request.stage, stored.usage, hit=True)
                return reply_from_body(stored.body(), self.model)
        kwargs = chat_body(self.model, request, self.service_tier)
        body = await self.engine.send(kwargs, key=key, stage=request.stage)
        return reply_from_body(body, self.model)

    async def aclose(self) -> None:
        """Close the HTTP clients."""
        await self.engine.aclose()


class OpenAITeacher(OpenAIModel):
    """The teacher of `teacher.provider: openai`: `teacher.model` at `teacher.base_url` (else OPENAI_BASE_URL)."""

    def __init__(self, config: Config, *, client: Any = None) -> None:
        pool = build_pool(config.teacher, model=config.teacher.model) if client is None else None
        if pool is not None:  # teacher.endpoints, or teacher.base_url as a list (distill/teachers/pool.py)
            super().__init__(config.teacher, config.teacher.model, pool._clients, engine=pool)
            return
        if client is None:
            url = config.teacher.base_url
            endpoint = resolve_endpoint(
                url if isinstance(url, str) else None, key_required=True, url_option="teacher.base_url",
                needed_by="teacher.provider is openai", alternative="or set teacher.provider: offline",
                error=TeacherError,
            )
            clients, base_url = build_clients(config.teacher, endpoint.api_key, endpoint.base_url), endpoint.base_url
        else:
            clients, base_url = [client], None
        super().__init__(config.teacher, config.teacher.model, clients, base_url=base_url)
