"""Agent formats: renderers of canonical trajectories into what a given agent runtime sends its model.

A format renders the messages of each step (`messages_for_step`), adds what the request needs besides them (`stop`,
`tools`, `parallel_tool_calls`), reads a teacher reply strictly into steps (`read`, returning a `Reading`) and renders
accepted trajectories as fine-tuning lines (`render`); a trajectory it cannot express raises `NotRenderable`.
"""

from __future__ import annotations

from distill.formats.base import NotRenderable, Reading

__all__ = ["NotRenderable", "Reading", "get_format"]


def get_format(config):
    """The renderer for `config.agent.format`."""
    name = config.agent.format
    if name == "langchain-chat":
        from distill.formats.langchain_chat import LangChainChatFormat

        return LangChainChatFormat(config)
    if name == "openai-tools":
        from distill.formats.openai_tools import OpenAIToolsFormat

        return OpenAIToolsFormat(config)
    raise ValueError(f"unknown agent format {name!r}")
