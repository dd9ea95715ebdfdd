"""Teachers: the models that play the agent, behind one engine (limits, back-off, breaker, ledger, meter).

`make_teacher` picks one from the config through a small registry (`distill.registry.TEACHERS`, which the config
validates `teacher.provider` against); the built-ins (`offline`, `openai`) are registered the way a third party
registers its own: `register_teacher("name", factory)`, where the factory takes the `Config` and returns a `Teacher`
(or is a lazy "module:attr" string). The ledger-only `replay` teacher of `--from-ledger` is built by the resume code.

Modules, lowest first: `base` (the protocol and request/reply records), `costs` (the meter and budget), `ledger`
(the content-addressed store of every response), `limits` (rate limits learned from headers and 429s), `engine`
(concurrency, back-off, breaker over the OpenAI SDK), `sampler` (JSON-Schema instances for the offline teacher),
`offline`, `openai_teacher` (also the students of `distill eval`), `replay`, `batch_files` and `batch` (the Batch
API: request files, waves of batches, answers into the ledger).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from distill.registry import TEACHERS
from distill.teachers.base import (
    PacedTeacher,
    RunTeacher,
    Teacher,
    TeacherCallError,
    TeacherReply,
    TeacherRequest,
)

if TYPE_CHECKING:
    from distill.config import Config

__all__ = [
    "PacedTeacher",
    "RunTeacher",
    "Teacher",
    "TeacherCallError",
    "TeacherReply",
    "TeacherRequest",
    "make_teacher",
    "register_teacher",
]

TeacherFactory = Callable[["Config"], Teacher]


def register_teacher(provider: str, factory: TeacherFactory | str) -> None:
    """Make `teacher.provider: <provider>` build its teacher with `factory(config)` ("module:attr" is imported
    lazily); a provider registered before the config is loaded passes config validation."""
    TEACHERS.register(provider, factory)


register_teacher("offline", "distill.teachers.offline:OfflineTeacher")
register_teacher("openai", "distill.teachers.openai_teacher:OpenAITeacher")


def make_teacher(config: Config) -> Teacher:
    """The teacher the config asks for (`auto`: openai when OPENAI_API_KEY is set, else offline)."""
    provider = config.teacher.resolved_provider()
    try:
        factory = TEACHERS.factory(provider)
    except KeyError:
        known = ", ".join(TEACHERS.names())
        raise ValueError(f"teacher.provider {provider!r} is not registered (known: {known})") from None
    return cast(Teacher, factory(config))
