"""The tool section of the config: the registry of tool kinds (one pydantic model per kind), their schemas, examples.

Every `tools:` entry is a `ToolEntry`; most are one tool (`ToolSpec`: the name/description/input_schema/examples
checks), some stand for several (`kind: mcp` lists a server's tools) and are expanded at config load
(`ToolEntry.expand`). Kinds live in a registry: `register_tool_model(kind, Model)` adds one, and `tool_union()` is
the discriminated union on `kind` of what is registered now, so a kind registered at run time passes config
validation (`distill.config` rebuilds its model when the registry changes). The built-ins here (`RetrieverTool`:
BM25 over the source chunks, `PythonTool`: "module:function", `SimulatedTool`: the teacher writes the observation)
are registered the same way a third party's are; `distill.tool_sources` registers `mcp` and `langchain`.
`distill.config` re-exports everything here.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distill.errors import ConfigError
from distill.schema import check_schema, schema_problem
from distill.trajectory import FINAL_ANSWER

__all__ = [
    "FINAL_ANSWER",
    "PythonTool",
    "RetrieverTool",
    "SimulatedTool",
    "StrictModel",
    "ToolConfig",
    "ToolEntry",
    "ToolExample",
    "ToolSpec",
    "expand_entries",
    "is_object_schema",
    "on_tool_models_change",
    "register_tool_model",
    "resolve_callable",
    "tool_kinds",
    "tool_union",
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


class ToolEntry(StrictModel):
    """One entry of `tools:`; `kind` picks its model in the registry (`register_tool_model`)."""

    kind: str

    def expand(self, base_dir: Path) -> list[ToolSpec]:
        """The tools this entry stands for, resolved at config load (relative paths against `base_dir`).

        Raise ValueError with what to fix; the config error names the entry.
        """
        raise NotImplementedError(f"{type(self).__name__} must say which tools it stands for (expand)")


class ToolSpec(ToolEntry):
    """One tool the agent can call: its name, description, input schema and example uses."""

    name: str = Field(min_length=1, max_length=64)
    description: str = Field(min_length=1)
    input_schema: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema of the input: a string schema (action_input), or an object schema (arguments)",
    )
    examples: list[ToolExample] = Field(default_factory=list)

    def expand(self, base_dir: Path) -> list[ToolSpec]:
        """A tool stands for itself."""
        return [self]

    @property
    def structured(self) -> bool:
        """True when the tool takes structured arguments (its input_schema is an object)."""
        return is_object_schema(self.input_schema)

    @property
    def searches(self) -> bool:
        """True for a tool that searches the documents (the offline teacher plays it like the retriever)."""
        return False

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if value is None:  # a kind that fills the name at load (kind: langchain)
            return value
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
        if value is not None and ("{" in value or "}" in value):
            raise ValueError("contains { or }, which LangChain's prompt template would treat as variables")
        return value

    @field_validator("input_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_schema(value)

    @model_validator(mode="after")
    def _examples_fit(self) -> ToolSpec:
        for i, example in enumerate(self.examples):
            if self.structured != isinstance(example.input, dict):
                want = "a mapping of arguments" if self.structured else "a string"
                raise ValueError(f"examples[{i}].input must be {want} (see input_schema)")
            if self.input_schema is not None:
                problem = schema_problem(self.input_schema, example.input)
                if problem:
                    raise ValueError(f"examples[{i}].input does not satisfy input_schema: {problem}")
        return self


_ToolBase = ToolSpec  # the older name


class RetrieverTool(ToolSpec):
    """Built-in search: BM25 over the source chunks; the observation is LangChain's print of the result list."""

    kind: Literal["retriever"]
    top_k: int = Field(default=3, ge=1, le=50)

    @property
    def searches(self) -> bool:
        """The retriever searches the documents."""
        return True

    @model_validator(mode="after")
    def _string_query(self) -> RetrieverTool:
        if self.structured:
            raise ValueError("input_schema: a retriever takes one string query; give a string schema or none")
        return self


class PythonTool(ToolSpec):
    """A callable "module:function" that takes the action_input string and returns the observation."""

    kind: Literal["python"]
    function: str = Field(description='"module:function", importable from the config folder or the environment')
    timeout_s: float = Field(default=30.0, gt=0, description="a call still running after this is an error observation")

    @field_validator("function")
    @classmethod
    def _shape(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise ValueError('must look like "package.module:function"')
        return value


class SimulatedTool(ToolSpec):
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


# -- the registry of kinds ------------------------------------------------------------------------------------------
_MODELS: dict[str, type[ToolEntry]] = {}
_LISTENERS: list[Callable[[], None]] = []


def register_tool_model(kind: str, model: type[ToolEntry]) -> type[ToolEntry]:
    """Make `kind: <kind>` entries of `tools:` validate as `model` (a ToolEntry with `kind: Literal["<kind>"]`).

    Registering a kind again replaces its model. The runner (what a call does) is registered beside it with
    `distill.agent.tools.register_tool_kind`.
    """
    is_entry = isinstance(model, type) and issubclass(model, ToolEntry)
    field = model.model_fields.get("kind") if is_entry else None
    if field is None or get_args(field.annotation) != (kind,):
        raise TypeError(f'a tool model must subclass ToolEntry and declare kind: Literal["{kind}"]')
    _MODELS[kind] = model
    for listener in _LISTENERS:
        listener()
    return model


def on_tool_models_change(listener: Callable[[], None]) -> None:
    """Call `listener` whenever a tool kind is registered (the config model rebuilds its `tools` field)."""
    _LISTENERS.append(listener)


def tool_kinds() -> tuple[str, ...]:
    """The tool kinds registered now, in registration order."""
    return tuple(_MODELS)


def tool_union() -> Any:
    """The discriminated union on `kind` of the registered tool models (what one `tools:` entry validates as)."""
    models = tuple(_MODELS.values())
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007 - built from a tuple at run time


for _kind, _model in (("retriever", RetrieverTool), ("python", PythonTool), ("simulated", SimulatedTool)):
    register_tool_model(_kind, _model)

ToolConfig = ToolSpec  # what `config.tools` holds once loaded (entries standing for several tools are expanded)


def expand_entries(entries: list[Any], base_dir: Path, file: str) -> list[tuple[str, ToolSpec]]:
    """Each entry's tools with the `tools[i]` key it came from; a tool name used twice is an error naming both."""
    out: list[tuple[str, ToolSpec]] = []
    origin: dict[str, str] = {}
    for i, entry in enumerate(entries):
        key = f"tools[{i}]"
        try:
            found = entry.expand(base_dir)
        except ValueError as exc:
            raise ConfigError(file, key, str(exc).removeprefix("Value error, ")) from None
        for tool in found:
            where = key if tool is entry else f"{key} ({tool.name!r}, {getattr(entry, 'origin', entry.kind)})"
            if tool.name in origin:
                raise ConfigError(
                    file, key, f"tool name {tool.name!r} of {where} clashes with {origin[tool.name]}",
                    hint="tool names must be unique: leave one out (include:) or rename the other",
                )
            origin[tool.name] = where
            out.append((key, tool))
    return out


def resolve_callable(spec: str, base_dir: Path | None = None, *, any_object: bool = False) -> Callable[[str], Any]:
    """Import "module:function" (any attribute with `any_object`); the config's folder is searched first."""
    module_name, _, attr = spec.partition(":")
    added = False
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
        added = True
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        raise ImportError(f"{type(exc).__name__}: {exc}") from None
    finally:
        if added:
            sys.path.remove(str(base_dir))
    func = getattr(module, attr, None)
    if any_object and func is None and not hasattr(module, attr):
        raise ImportError(f"module {module_name!r} has no attribute {attr!r}")
    if not any_object and not callable(func):
        raise ImportError(f"module {module_name!r} has no callable {attr!r}")
    return cast(Callable[[str], Any], func)
