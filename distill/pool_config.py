"""The config of a pool of teacher endpoints: `teacher.endpoints` entries and the checks on `teacher.base_url`.

`teacher.base_url` may be one URL or a list of them (a pool sharing `teacher.rpm` / `tpm` / `concurrency` and the
key in `OPENAI_API_KEY`); `teacher.endpoints` gives each endpoint its own limits and key variable. The engine of a
pool is distill/teachers/pool.py. A pool sends online requests only (`teacher.mode: batch` takes one endpoint).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from distill.tool_config import StrictModel

__all__ = ["EndpointConfig", "PoolFields", "check_pool", "pool_entries"]


class EndpointConfig(StrictModel):
    """One endpoint of a pool: its URL, its own limits (null: the teacher's) and the variable holding its key."""

    base_url: str = Field(min_length=1, description="the endpoint's OpenAI-compatible base URL (…/v1)")
    rpm: int | None = Field(default=None, ge=1, description="requests per minute here; null = teacher.rpm")
    tpm: int | None = Field(default=None, ge=1, description="tokens per minute here; null = teacher.tpm")
    concurrency: int | None = Field(default=None, ge=1, le=1024, description="in flight here; null = teacher's")
    api_key_env: str | None = Field(default=None, min_length=1, description="the key's variable; null = OPENAI_API_KEY")


def pool_entries(base_url: str | list[str] | None, endpoints: list[EndpointConfig]) -> list[EndpointConfig] | None:
    """The endpoints of a pool, or None when the teacher has one endpoint (`teacher.base_url` a string or unset)."""
    if endpoints:
        return list(endpoints)
    if isinstance(base_url, list):
        return [EndpointConfig(base_url=url) for url in base_url]
    return None


def check_pool(teacher: Any) -> Any:
    """A TeacherConfig validator: a list of URLs or `endpoints`, not both; no empty list; no pool in batch mode."""
    urls = teacher.base_url
    if isinstance(urls, list) and teacher.endpoints:
        raise ValueError("give teacher.base_url as a list or teacher.endpoints, not both (put the URLs in endpoints)")
    if isinstance(urls, list) and not urls:
        raise ValueError("teacher.base_url is an empty list: give one URL, a list of URLs, or null")
    pool = pool_entries(urls, teacher.endpoints)
    if pool is not None and teacher.mode == "batch":
        raise ValueError("teacher.mode: batch sends to one endpoint: give a single teacher.base_url (no pool)")
    if pool is not None and len({e.base_url for e in pool}) < len(pool):
        raise ValueError("an endpoint URL appears twice in the pool: give each endpoint once")
    return teacher


class PoolFields(StrictModel):
    """`teacher.endpoints` and the pool checks, inherited by TeacherConfig (distill/config.py)."""

    endpoints: list[EndpointConfig] = Field(
        default_factory=list, description="a pool: each endpoint with its own limits and key (docs/engine.md)"
    )
    _pool = model_validator(mode="after")(check_pool)
