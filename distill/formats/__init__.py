"""Agent formats: renderers of canonical trajectories into what a given agent runtime sends its model.

A format renders the messages of each step (`messages_for_step`), adds what the request needs besides them (`stop`,
`tools`, `parallel_tool_calls`), reads a teacher reply strictly into steps (`read`, returning a `Reading`) and renders
accepted trajectories as fine-tuning lines (`render`); a trajectory it cannot express raises `NotRenderable`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["NotRenderable", "Reading", "get_format"]


@dataclass(slots=True)
class Reading:
    """A teacher reply read by a format: the steps it holds (calls, or one final answer) or why it was rejected."""

    ok: bool
    steps: list[Any] = field(default_factory=list)  # distill.trajectory.Step, observations not yet filled in
    reason: str | None = None
    detail: str = ""
    raw: str | None = None  # the reply as text (for tool calls: their JSON), kept with a reject

    @property
    def final(self) -> bool:
        """True when the reply is the turn's final answer."""
        return bool(self.steps) and self.steps[-1].is_final


class NotRenderable(Exception):
    """A trajectory this format cannot express (e.g. parallel tool calls in a one-action-per-message format)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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
