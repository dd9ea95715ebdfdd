"""The canonical trajectory record: what the teacher did, independent of how an agent format renders it.

A `Trajectory` is one planned conversation: its kind (tool / direct / multi_turn), where it came from (source
document and chunk), its turns (each a user question and the agent's steps) and its outcome. Agent formats
(`distill.formats`) render trajectories into fine-tuning lines; the validator decides the outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from enum import StrEnum
from typing import Any, Literal, Self, overload

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

__all__ = ["FINAL_ANSWER", "Attempt", "ConversationKind", "Outcome", "Plan", "PlanList", "Reason", "Step", "Trajectory", "Turn", "plan_column"]

ConversationKind = Literal["tool", "direct", "multi_turn"]
Outcome = Literal["accepted", "rejected", "failed"]

FINAL_ANSWER = "Final Answer"  # the action that ends a turn, in every format


class Reason(StrEnum):
    """Why an assistant message, a conversation or an example was rejected."""

    NO_JSON_BLOCK = "no_json_block"
    MULTIPLE_BLOCKS = "multiple_blocks"
    UNCLOSED_BLOCK = "unclosed_block"
    FENCE_NOT_JSON = "fence_not_json"
    TEXT_OUTSIDE_BLOCK = "text_outside_block"
    INVALID_JSON = "invalid_json"
    BAD_KEYS = "bad_keys"
    UNKNOWN_ACTION = "unknown_action"
    ACTION_INPUT_NOT_STRING = "action_input_not_string"
    ACTION_INPUT_SCHEMA = "action_input_schema"
    EMPTY_ANSWER = "empty_answer"
    TRUNCATED = "truncated"
    CONTENT_FILTER = "content_filter"
    NO_FINAL_ANSWER = "no_final_answer"
    TOO_MANY_STEPS = "too_many_steps"
    OVER_TOKEN_LIMIT = "over_token_limit"
    TEACHER_ERROR = "teacher_error"
    BAD_QUESTION = "bad_question"
    # structured tool inputs, native tool calls (agent.format openai-tools) and simulated tools
    INVALID_ARGUMENTS = "invalid_arguments"
    ARGUMENTS_SCHEMA = "arguments_schema"
    PARALLEL_NOT_ALLOWED = "parallel_tool_calls_not_allowed"
    FORMAT_DEPENDENT = "format_dependent"
    SIMULATED_OUTPUT = "simulated_output"
    TOOL_ERROR = "tool_error"  # a tool call errored and generation.reject_tool_errors is on


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Plan(_Record):
    """One conversation to generate, fixed before any teacher call (reproducible from config + seed)."""

    id: str
    index: int
    kind: ConversationKind
    chunk_id: str
    doc_id: str
    turns: int = Field(ge=1)
    tool: str | None = Field(default=None, description="the tool this conversation is meant to exercise")
    seed: int


_PLAN_FIELDS = tuple(Plan.model_fields)


class PlanList(Sequence[Plan]):
    """A run's plans, held as rows of their field values (about 250 bytes a plan, where a `Plan` model takes
    1.2 KB: the plan list is what a run holds whole), each built into a `Plan` when it is read. Appends, extends,
    `+=`, slices (a `PlanList`) and `ids()` without building the models."""

    __slots__ = ("_rows",)

    def __init__(self, plans: Iterable[Plan] = ()) -> None:
        self._rows: list[tuple[Any, ...]] = []
        self.extend(plans)

    @staticmethod
    def row(plan: Plan) -> tuple[Any, ...]:
        """A plan's field values, in field order (equal rows: equal plans)."""
        values = plan.__dict__
        return tuple(values[name] for name in _PLAN_FIELDS)

    def append(self, plan: Plan) -> None:
        self._rows.append(self.row(plan))

    def extend(self, plans: Iterable[Plan]) -> None:
        if isinstance(plans, PlanList):
            self._rows.extend(plans._rows)
        else:
            self._rows.extend(map(self.row, plans))

    def __iadd__(self, plans: Iterable[Plan]) -> Self:
        self.extend(plans)
        return self

    def __add__(self, plans: Iterable[Plan]) -> PlanList:
        out = PlanList(self)
        out.extend(plans)
        return out

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> Plan: ...

    @overload
    def __getitem__(self, i: slice) -> PlanList: ...

    def __getitem__(self, i: int | slice) -> Plan | PlanList:
        if isinstance(i, slice):
            out = PlanList()
            out._rows = self._rows[i]
            return out
        return _plan(self._rows[i])

    def __iter__(self) -> Iterator[Plan]:
        return map(_plan, self._rows)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PlanList):
            return self._rows == other._rows
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"PlanList({len(self)} plans)"

    def ids(self) -> list[str]:
        """The plans' ids, in order."""
        return [row[0] for row in self._rows]

    def column(self, name: str) -> Iterator[Any]:
        """One field of every plan, in order (e.g. `column("chunk_id")`)."""
        at = _PLAN_FIELDS.index(name)
        return (row[at] for row in self._rows)

    def rows_by_id(self) -> dict[str, tuple[Any, ...]]:
        """id -> the plan's row (compare with `PlanList.row(plan)`)."""
        return {row[0]: row for row in self._rows}


def plan_column(plans: Iterable[Plan], name: str) -> Iterator[Any]:
    """One field of every plan, in order, without building models where `plans` is a `PlanList`."""
    if isinstance(plans, PlanList):
        return plans.column(name)
    return (getattr(p, name) for p in plans)


def _plan(row: tuple[Any, ...]) -> Plan:
    return Plan(**dict(zip(_PLAN_FIELDS, row, strict=True)))


class Attempt(_Record):
    """A teacher answer at a step that the strict reader rejected before the step was asked again (resampled).

    `raw` is the reply as text (for native tool calls: the JSON of content and tool_calls, as `Reading.raw`);
    `seed` is the `seed` parameter of the request that got it. Rejected attempts next to the accepted answer at the
    same prompt are the preference pairs of `export.preferences`.
    """

    raw: str | None
    reason: str
    detail: str = ""
    seed: int | None = None


class Step(_Record):
    """One action of a turn (a tool call or the final answer): the action, the raw teacher text, the observation.

    `action_input` is the tool's string input or, for a tool whose `input_schema` is an object, the JSON text of its
    arguments (stored as text: Arrow-based tools mangle free-form dicts). Native tool-calling formats may make several
    calls in one assistant message: each is its own step, and `parallel` marks those made with the previous one.
    """

    action: str
    action_input: str
    raw: str
    observation: str | None = None
    tool_error: bool = False
    call_id: str | None = Field(default=None, description="the teacher's tool_call id (exports use canonical ids)")
    parallel: bool = Field(default=False, description="made in the same assistant message as the previous step")
    simulated: bool = Field(default=False, description="the observation was written by the teacher (kind: simulated)")
    attempts: list[Attempt] = Field(
        default_factory=list, description="rejected answers at this step's prompt before this one (resampling)"
    )

    @model_serializer(mode="wrap")
    def _omit_no_attempts(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A step without rejected attempts serialises exactly as before the field existed."""
        data = handler(self)
        if isinstance(data, dict) and not self.attempts:
            data.pop("attempts", None)
        return data

    @property
    def is_final(self) -> bool:
        """True for the "Final Answer" step."""
        return self.action == FINAL_ANSWER


class Turn(_Record):
    """A user question and the agent's steps up to its final answer."""

    question: str
    steps: list[Step] = Field(default_factory=list)

    @property
    def answer(self) -> str | None:
        """The final answer's text, or None when the turn did not finish."""
        if self.steps and self.steps[-1].is_final:
            return self.steps[-1].action_input
        return None


class Trajectory(_Record):
    """A whole conversation and its outcome."""

    id: str
    kind: ConversationKind
    doc_id: str
    chunk_id: str
    turns: list[Turn] = Field(default_factory=list)
    outcome: Outcome = "accepted"
    stage: str | None = Field(default=None, description="where it failed: questions, rollout or export")
    reason: str | None = None
    detail: str | None = None
    raw: str | None = Field(default=None, description="the raw teacher text that was rejected")
    teacher: dict[str, str] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    def reject(self, stage: str, reason: str, detail: str, raw: str | None) -> Trajectory:
        """Mark rejected (the teacher answered, but not acceptably)."""
        self.outcome, self.stage, self.reason, self.detail, self.raw = "rejected", stage, reason, detail, raw
        return self

    def fail(self, stage: str, reason: str, detail: str, raw: str | None = None) -> Trajectory:
        """Mark failed (no usable teacher answer at all)."""
        self.outcome, self.stage, self.reason, self.detail, self.raw = "failed", stage, reason, detail, raw
        return self
