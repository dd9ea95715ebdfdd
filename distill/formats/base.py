"""What every agent format shares: the strict reading of a reply (`Reading`) and `NotRenderable`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distill.errors import Rejection

__all__ = ["NotRenderable", "Reading"]


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


class NotRenderable(Rejection):
    """A trajectory this format cannot express (e.g. parallel tool calls in a one-action-per-message format)."""
