"""The tool section of the config: one pydantic model per tool kind, their JSON Schemas and examples.

`RetrieverTool` (BM25 over the source chunks), `PythonTool` ("module:function") and `SimulatedTool` (the teacher
writes the observation) share the name/description/input_schema/examples checks of `_ToolBase`; `ToolConfig` is
their discriminated union on `kind`. `distill.config` re-exports everything here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distill.schema import check_schema, schema_problem
from distill.trajectory import FINAL_ANSWER

__all__ = [
    "FINAL_ANSWER",
    "TOOL_KINDS",
    "PythonTool",
    "RetrieverTool",
    "SimulatedTool",
    "StrictModel",
    "ToolConfig",
    "ToolExample",
    "is_object_schema",
]

_BAD_NAME_CHARS = re.compile(r"[\n\r:{}`,\"]")
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for tool (function) names


class StrictModel(BaseModel):
    """The base of every config model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ToolExample(StrictModel):
    """An example use of a tool: a user question, the input that answers it and (simulated tools) its output.

    `input` is a string, or a mapping for a tool whose `input_schema` is an object; `output` is what the tool
    returned for that input (any JSON value), which a simulated tool's observations imitate.
    """

    question: str = Field(min_length=1)
    input: str | dict[str, Any]
    output: Any = None


def is_object_schema(schema: Any) -> bool:
    """True when a tool's input_schema describes an object (structured arguments), not one string."""
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    return kind == "object" or (kind is None and "properties" in schema)


def _bare_null(schema: Any) -> bool:
    if isinstance(schema, dict):
        kind = schema.get("type", "")
        if kind is None or (isinstance(kind, list) and None in kind):
            return True
        return any(_bare_null(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_bare_null(v) for v in schema)
    return False


def _check_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return value
    import jsonschema

    if _bare_null(value):
        raise ValueError('has a bare null in a "type": YAML reads null as nothing; quote it, e.g. [string, "null"]')
    try:
        check_schema(value)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"is not a valid JSON Schema: {exc.message}") from None
    return value


class _ToolBase(StrictModel):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(min_length=1)
    input_schema: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema of the input: a string schema (action_input), or an object schema (arguments)",
    )
    examples: list[ToolExample] = Field(default_factory=list)

    @property
    def structured(self) -> bool:
        """True when the tool takes structured arguments (its input_schema is an object)."""
        return is_object_schema(self.input_schema)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError("has leading or trailing spaces; remove them")
        bad = _BAD_NAME_CHARS.search(value)
        if bad:
            raise ValueError(
                f"contains {bad.group()!r}, which breaks the agent's tool list or JSON action; "
                "use letters, digits, spaces, - or _"
            )
        if value.lower() == FINAL_ANSWER.lower():
            raise ValueError("'Final Answer' is the agent's reserved action; pick another tool name")
        return value

    @field_validator("description")
    @classmethod
    def _safe_description(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError("contains { or }, which LangChain's prompt template would treat as variables")
        return value

    @field_validator("input_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_schema(value)

    @model_validator(mode="after")
    def _examples_fit(self) -> _ToolBase:
        for i, example in enumerate(self.examples):
            if self.structured != isinstance(example.input, dict):
                want = "a mapping of arguments" if self.structured else "a string"
                raise ValueError(f"examples[{i}].input must be {want} (see input_schema)")
            if self.input_schema is not None:
                problem = schema_problem(self.input_schema, example.input)
                if problem:
                    raise ValueError(f"examples[{i}].input does not satisfy input_schema: {problem}")
        return self


class RetrieverTool(_ToolBase):
    """Built-in search: BM25 over the source chunks; the observation is LangChain's print of the result list."""

    kind: Literal["retriever"]
    top_k: int = Field(default=3, ge=1, le=50)

    @model_validator(mode="after")
    def _string_query(self) -> RetrieverTool:
        if self.structured:
            raise ValueError("input_schema: a retriever takes one string query; give a string schema or none")
        return self


class PythonTool(_ToolBase):
    """A callable "module:function" that takes the action_input string and returns the observation."""

    kind: Literal["python"]
    function: str = Field(description='"module:function", importable from the config folder or the environment')

    @field_validator("function")
    @classmethod
    def _shape(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise ValueError('must look like "package.module:function"')
        return value


class SimulatedTool(_ToolBase):
    """A tool that cannot run during generation (a payments API, a ticket system): the teacher writes what it
    returns, from its description, its output_schema and its examples' outputs."""

    kind: Literal["simulated"]
    output_schema: dict[str, Any] | None = Field(default=None, description="JSON Schema of what the tool returns")

    @field_validator("output_schema")
    @classmethod
    def _valid_output_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_schema(value)

    @model_validator(mode="after")
    def _has_shape(self) -> SimulatedTool:
        if self.output_schema is None and not any(e.output is not None for e in self.examples):
            raise ValueError(
                "a simulated tool needs output_schema or examples with an output, so its observations have a shape"
            )
        if self.output_schema is not None:
            for i, example in enumerate(self.examples):
                if example.output is None:
                    continue
                problem = schema_problem(self.output_schema, example.output)
                if problem:
                    raise ValueError(f"examples[{i}].output does not satisfy output_schema: {problem}")
        return self


ToolConfig = Annotated[RetrieverTool | PythonTool | SimulatedTool, Field(discriminator="kind")]
TOOL_KINDS = ("retriever", "python", "simulated")
