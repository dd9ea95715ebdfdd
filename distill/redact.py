"""Secrets out of everything distill writes: secret-looking config keys, known secret values, URL credentials.

Used by the manifest (the run's config), the dataset card and every report that shows a config or an endpoint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["REDACTED", "redact", "scrub_text", "secret_values"]

_SECRET_KEY = re.compile(
    r"(?:^|[_-])(api[_-]?key|key|token|secret|password|passwd|authorization|credentials?)$", re.IGNORECASE
)
REDACTED = "<redacted>"
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")  # scheme://user:password@


def secret_values(extra: Sequence[str | None]) -> list[str]:
    """The secret values to scrub: OPENAI_API_KEY, HF_TOKEN and `extra` (values under 6 characters are ignored)."""
    values = [os.environ.get("OPENAI_API_KEY"), os.environ.get("HF_TOKEN"), *extra]
    return sorted({v for v in values if v and len(v) >= 6}, key=len, reverse=True)


def scrub_text(text: str, secrets: list[str]) -> str:
    """`text` with every secret value and any credentials in a URL replaced by <redacted>."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _URL_CREDENTIALS.sub(rf"\1{REDACTED}@", text)


def redact(value: Any, secrets: list[str]) -> Any:
    """A copy of `value` with secret-looking keys, secret values and URL credentials replaced by <redacted>."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v, secrets))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        return scrub_text(value, secrets)
    return value
