"""The OpenAI teacher in its simple form: the official async client, a bound on requests in flight, SDK retries.

Works against OpenAI or any OpenAI-compatible endpoint: `teacher.base_url`, else `OPENAI_BASE_URL`. The key is read
from `OPENAI_API_KEY` only and never written anywhere.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from distill.config import Config
from distill.errors import TeacherError
from distill.teachers.base import TeacherCallError, TeacherReply, TeacherRequest

__all__ = ["OpenAITeacher"]


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
            from openai import AsyncOpenAI

            client = AsyncOpenAI(
                api_key=key,
                base_url=config.teacher.base_url or os.environ.get("OPENAI_BASE_URL") or None,
                max_retries=config.teacher.max_retries,
                timeout=config.teacher.timeout_s,
            )
        self._client = client
        self._slots = asyncio.Semaphore(config.teacher.concurrency)

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        """One chat completion; HTTP failures after the SDK's retries become TeacherCallError."""
        import openai

        kwargs: dict[str, Any] = {"model": self.model, "messages": request.messages, **request.params}
        if request.response_format is not None:
            kwargs["response_format"] = request.response_format
        async with self._slots:
            try:
                response = await self._client.chat.completions.create(**kwargs)
            except openai.APIStatusError as exc:
                raise TeacherCallError(f"http_{exc.status_code}", str(exc)[:500]) from None
            except openai.APITimeoutError as exc:
                raise TeacherCallError("timeout", str(exc)[:500]) from None
            except openai.APIConnectionError as exc:
                raise TeacherCallError("connection_error", str(exc)[:500]) from None
        if not response.choices:
            raise TeacherCallError("no_choices", "the endpoint returned no choices")
        choice = response.choices[0]
        usage = response.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return TeacherReply(
            text=choice.message.content,
            finish_reason=choice.finish_reason,
            usage={
                "input": getattr(usage, "prompt_tokens", 0) or 0,
                "cached_input": (getattr(details, "cached_tokens", 0) or 0) if details else 0,
                "output": getattr(usage, "completion_tokens", 0) or 0,
            },
            model=response.model or self.model,
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()
