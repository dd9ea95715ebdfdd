"""Agent formats: renderers of canonical trajectories into what a given agent runtime sends its model.

A format (the `Format` protocol of `distill.formats.base`) renders the messages of each step (`messages_for_step`,
and `messages_as_written` with the model's own output echoed), adds what the request needs besides them (`stop`,
`tools`, `parallel_tool_calls`), reads a teacher reply strictly into steps (`read`, returning a `Reading`) and renders
accepted trajectories as fine-tuning lines (`render`); a trajectory it cannot express raises `NotRenderable`.

`get_format(config)` builds the one `agent.format` names, from a registry (`distill.registry.FORMATS`); the
built-ins are registered here the way a third party registers its own: `register_format("name", factory)`, where the
factory is a callable `factory(config) -> Format` or a lazy "module:attr" string. A name registered before the config
is loaded passes config validation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from distill.formats.base import Format, NotRenderable, Reading
from distill.registry import FORMATS

if TYPE_CHECKING:
    from distill.config import Config

__all__ = ["Format", "NotRenderable", "Reading", "get_format", "register_format"]

FormatFactory = Callable[["Config"], Format]


def register_format(name: str, factory: FormatFactory | str) -> None:
    """Make `agent.format: <name>` build its format with `factory(config)` ("module:attr" is imported lazily)."""
    FORMATS.register(name, factory)


register_format("langchain-chat", "distill.formats.langchain_chat:LangChainChatFormat")
register_format("openai-tools", "distill.formats.openai_tools:OpenAIToolsFormat")


def get_format(config: Config) -> Format:
    """The format `config.agent.format` names."""
    name = config.agent.format
    try:
        factory = FORMATS.factory(name)
    except KeyError:
        raise ValueError(f"unknown agent format {name!r} (registered: {', '.join(FORMATS.names())})") from None
    return cast(Format, factory(config))
