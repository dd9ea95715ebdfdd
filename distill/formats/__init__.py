"""Agent formats: renderers of canonical trajectories into what a given agent runtime sends its model."""

from __future__ import annotations

__all__ = ["get_format"]


def get_format(config):  # noqa: ANN001, ANN201 - returns the format object for config.agent.format
    """The renderer for `config.agent.format`."""
    name = config.agent.format
    if name == "langchain-chat":
        from distill.formats.langchain_chat import LangChainChatFormat

        return LangChainChatFormat(config)
    raise ValueError(f"unknown agent format {name!r}")
