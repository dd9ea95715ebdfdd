"""Where a command's OpenAI-compatible service is and which key it uses: one resolution, one error text.

Every command that calls a service (`generate` with an openai teacher, `eval`, `chat`, `finetune`) resolves it here.
The base URL is the one given (a `--base-url` flag, `teacher.base_url`, `MODEL@URL`), else `OPENAI_BASE_URL`, else
OpenAI's API (`None`: the SDK's default). The key is read from `OPENAI_API_KEY` (or the variable a pool's endpoint names) and is never written anywhere.
Without a key, an explicitly local endpoint (a base URL given or in `OPENAI_BASE_URL`) is used with a placeholder
key, since llama.cpp, vLLM and Ollama ignore it, unless the caller needs a real key (`key_required`: the teacher,
fine-tuning); otherwise the error says what to set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from distill.errors import DistillError

__all__ = ["OPENAI_URL", "Endpoint", "resolve_base_url", "resolve_endpoint"]

OPENAI_URL = "https://api.openai.com/v1"
NO_KEY = "unused"  # what a local server that ignores keys is sent


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A resolved service: its base URL (None: OpenAI's) and the key (kept out of repr)."""

    base_url: str | None
    api_key: str = field(repr=False)

    @property
    def url(self) -> str:
        """The URL requests go to (OpenAI's when none was set)."""
        return self.base_url or OPENAI_URL

    @property
    def has_key(self) -> bool:
        """False when the placeholder key of a local server is used."""
        return self.api_key != NO_KEY


def resolve_base_url(base_url: str | None = None) -> str | None:
    """`base_url`, else OPENAI_BASE_URL, else None (OpenAI)."""
    return base_url or os.environ.get("OPENAI_BASE_URL") or None


def resolve_endpoint(
    base_url: str | None = None,
    *,
    key_required: bool = False,
    url_option: str = "--base-url",
    needed_by: str | None = None,
    alternative: str | None = None,
    error: type[DistillError] = DistillError,
    key_env: str = "OPENAI_API_KEY",
) -> Endpoint:
    """The endpoint and key to use (see the module doc); raises `error` (a DistillError) when there is no key.

    `url_option` names where a base URL is given (for the message), `needed_by` what needs the key, `alternative`
    another way out for the hint (e.g. "or set teacher.provider: offline"), `key_env` the variable holding the key
    (an endpoint of a pool may name its own: `teacher.endpoints[].api_key_env`).
    """
    url = resolve_base_url(base_url)
    key = os.environ.get(key_env)
    if key:
        return Endpoint(url, key)
    if url and not key_required:
        return Endpoint(url, NO_KEY)
    message = f"{key_env} is not set" + ("" if key_required else f" and no {url_option} was given")
    if needed_by:
        message = f"{needed_by}: {message}"
    if key_env != "OPENAI_API_KEY":
        raise error(f"{needed_by or url_option}: {key_env} is not set (the api_key_env of {url_option})",
                    hint=f"export {key_env}=... with this endpoint's key, or remove api_key_env to use OPENAI_API_KEY")
    hint = "export OPENAI_API_KEY=... for OpenAI; for another OpenAI-compatible endpoint also set OPENAI_BASE_URL"
    hint += f" or {url_option}" + ("" if key_required else " (a local server needs no key)")
    raise error(message, hint=hint + (f"; {alternative}" if alternative else ""))
