"""Teachers: the models that play the agent, behind one engine (limits, back-off, breaker, ledger, meter).

`make_teacher` picks one from the config through a small registry; the built-ins (`offline`, `openai`, and the
ledger-only `replay` used by `--from-ledger`) are registered the way a third party would register its own:
`register_teacher("name", factory)`, where the factory takes the `Config` and returns a `Teacher`.

Modules, lowest first: `base` (the protocol and request/reply records), `costs` (the meter and budget), `ledger`
(the content-addressed store of every response), `limits` (rate limits learned from headers and 429s), `engine`
(concurrency, back-off, breaker over the OpenAI SDK), `sampler` (JSON-Schema instances for the offline teacher),
`offline`, `openai_teacher`, `replay`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from distill.teachers.base import Teacher, TeacherCallError, TeacherReply, TeacherRequest

if TYPE_CHECKING:
    from distill.config import Config

__all__ = ["Teacher", "TeacherCallError", "TeacherReply", "TeacherRequest", "make_teacher", "register_teacher"]

TeacherFactory = Callable[["Config"], Teacher]
_TEACHERS: dict[str, TeacherFactory] = {}


def register_teacher(provider: str, factory: TeacherFactory) -> None:
    """Make `teacher.provider: <provider>` build its teacher with `factory(config)`."""
    _TEACHERS[provider] = factory


def _offline(config: Config) -> Teacher:
    from distill.teachers.offline import OfflineTeacher

    return OfflineTeacher(config)


def _openai(config: Config) -> Teacher:
    from distill.teachers.openai_teacher import OpenAITeacher

    return OpenAITeacher(config)


register_teacher("offline", _offline)
register_teacher("openai", _openai)


def make_teacher(config: Config) -> Teacher:
    """The teacher the config asks for (`auto`: openai when OPENAI_API_KEY is set, else offline)."""
    provider = config.teacher.resolved_provider()
    try:
        factory = _TEACHERS[provider]
    except KeyError:
        known = ", ".join(sorted(_TEACHERS))
        raise ValueError(f"teacher.provider {provider!r} is not registered (known: {known})") from None
    return factory(config)
