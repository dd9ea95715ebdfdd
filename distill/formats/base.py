"""What every agent format is: the `Format` protocol, the strict reading of a reply (`Reading`), `NotRenderable`.

A format is what one agent runtime sends its model and how it reads the answers. It renders the messages of each
step (`messages_for_step`: every step canonical, as the fine-tuning lines hold them; `messages_as_written`: this
turn's steps as the model itself wrote them, as a runtime echoes them back), says what goes with the messages
(`stop`, `tools`, `parallel_tool_calls`), reads a reply strictly into steps (`read`), names the actions a rejected
reply chose when its structure could still be read (`named_actions`) and renders accepted trajectories as
fine-tuning lines (`render`). Formats are registered by name (`distill.formats.register_format`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from distill.errors import Rejection

if TYPE_CHECKING:
    from distill.trajectory import Step, Trajectory, Turn

__all__ = ["STRUCTURE_READ", "Format", "NotRenderable", "Reading"]

# Reject reasons given after the reply's structure was read: the action (or function names) it chose are known.
STRUCTURE_READ = frozenset({"unknown_action", "action_input_not_string", "action_input_schema", "empty_answer",
                            "invalid_arguments", "arguments_schema"})


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


class Format(Protocol):
    """An agent runtime's way of talking to its model (see the module doc)."""

    name: str
    stop: list[str] | None  # stop sequences sent with every request (text formats)
    tools: list[dict[str, Any]] | None  # native tool calling: the `tools` sent with every request
    parallel_tool_calls: bool | None  # native tool calling: whether one message may hold several calls

    def messages_for_step(self, earlier: Sequence[Turn], question: str, steps: Sequence[Step]) -> list[dict[str, Any]]:
        """The chat messages for the next step of a turn, every step rendered canonically (OpenAI dicts)."""
        ...

    def messages_as_written(
        self, earlier: Sequence[Turn], question: str, steps: Sequence[Step]
    ) -> list[dict[str, Any]]:
        """`messages_for_step` with this turn's steps as the model wrote them (its raw text, its own call ids and
        argument text): what the runtime sends a model that plays the agent live."""
        ...

    def read(self, reply: Any) -> Reading:
        """A reply (`TeacherReply`) checked strictly: its steps, or why it is rejected."""
        ...

    def named_actions(self, reply: Any, reason: str) -> list[str | None] | None:
        """The action(s) a reply rejected for `reason` chose (FINAL_ANSWER for an answer), when its structure could
        be read; None when it could not (the choice of tool cannot be judged)."""
        ...

    def render(self, trajectory: Trajectory) -> list[dict[str, Any]]:
        """Every turn of an accepted trajectory as its own fine-tuning line; NotRenderable when it cannot be."""
        ...
