"""Formats and teachers are registries: a name registered at run time passes config validation and is built.

The built-ins are registered the same way (lazy "module:attr" factories), so the config validates `agent.format` and
`teacher.provider` against what is registered, not against a closed list.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from distill.config import Config
from distill.errors import ConfigError
from distill.formats import get_format, register_format
from distill.formats.openai_tools import OpenAIToolsFormat
from distill.registry import FORMATS, TEACHERS, Registry
from distill.teachers import make_teacher, register_teacher
from distill.teachers.base import TeacherReply, TeacherRequest


class _ShoutingFormat(OpenAIToolsFormat):
    """A third party's format: openai-tools with another system prompt."""

    name = "shouting-tools"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.system_prompt = "ANSWER LOUDLY."


class _EchoTeacher:
    provider = "echo"

    def __init__(self, config: Config) -> None:
        self.model = config.teacher.model

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        return TeacherReply(text=request.messages[-1]["content"])

    async def aclose(self) -> None:
        pass


@pytest.fixture
def third_party() -> Iterator[None]:
    register_format("shouting-tools", _ShoutingFormat)
    register_format("lazy-tools", "tests.test_registry:_ShoutingFormat")
    register_teacher("echo", _EchoTeacher)
    yield
    for name in ("shouting-tools", "lazy-tools"):
        FORMATS.unregister(name)
    TEACHERS.unregister("echo")


def test_a_registered_format_passes_config_validation_and_is_built(third_party, make_config) -> None:
    for name in ("shouting-tools", "lazy-tools"):
        config = make_config(agent={"format": name, "max_steps": 3})
        fmt = get_format(config)
        assert isinstance(fmt, _ShoutingFormat)
        assert fmt.messages_for_step([], "hi", [])[0] == {"role": "system", "content": "ANSWER LOUDLY."}
    assert {"langchain-chat", "openai-tools", "shouting-tools", "lazy-tools"} <= set(FORMATS.names())


def test_a_registered_teacher_passes_config_validation_and_is_made(third_party, make_config) -> None:
    teacher = make_teacher(make_config(teacher={"provider": "echo", "model": "m"}))
    assert isinstance(teacher, _EchoTeacher) and teacher.model == "m"


def test_unregistered_names_fail_validation_naming_the_key_and_the_fix(make_config) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(agent={"format": "shouting-tools"})
    message = str(caught.value)
    assert "agent.format" in message and "'shouting-tools' is not a registered agent.format" in message
    assert "langchain-chat, openai-tools" in message and "register_format" in message
    with pytest.raises(ConfigError, match=r"teacher.provider: 'echo' is not a registered .*known: auto, offline, "
                                          r"openai.*register_teacher"):
        make_config(teacher={"provider": "echo"})


def test_built_ins_resolve_lazily_and_bad_registrations_are_refused() -> None:
    registry = Registry("thing", home="distill.formats", register_with="register_thing")
    registry.register("json", "json:dumps")
    calls: list[Any] = []
    registry.register("list", calls.append)
    assert registry.names() == ["json", "list"]  # the home package was imported; it fills FORMATS, not this one
    assert registry.factory("json")({"a": 1}) == '{"a": 1}'
    with pytest.raises(KeyError):
        registry.factory("nope")
    with pytest.raises(ValueError, match="module:attr"):
        registry.register("bad", "no_colon")
    with pytest.raises(TypeError):
        registry.register("bad", 42)  # type: ignore[arg-type]
