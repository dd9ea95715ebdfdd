"""The agent's tools at generation time: built-in kinds registered by name, each really run on every call.

A tool kind is a factory `(tool_config, context) -> callable(str) -> observation`; `retriever` searches the run's
BM25 index and returns the chunk texts (the observation is then LangChain's `str(list)` print of them), `python`
imports the configured "module:function" (called with keyword arguments when its input_schema is an object);
`simulated` tools are not run here: the teacher writes their observations (`distill.agent.simulated`). A tool that raises
becomes an error observation, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distill.config import Config, PythonTool, RetrieverTool, SimulatedTool, resolve_callable

__all__ = ["TOOL_KINDS", "Observation", "ToolBox", "register_tool_kind"]

ToolFn = Callable[..., Any]  # called with the string input, or with keyword arguments (object input_schema)
TOOL_KINDS: dict[str, Callable[[Any, ToolContext], ToolFn]] = {}


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool factory may use: the config and the run's retrieval index."""

    config: Config
    index: Any


@dataclass(frozen=True, slots=True)
class Observation:
    """What a tool answered, as the agent's scratchpad will print it."""

    text: str
    error: bool = False
    value: Any = None


def register_tool_kind(kind: str) -> Callable[[Callable[[Any, ToolContext], ToolFn]], Callable[[Any, ToolContext], ToolFn]]:
    """Register a factory for `kind:` tools (built-ins are registered the same way)."""

    def decorator(factory: Callable[[Any, ToolContext], ToolFn]) -> Callable[[Any, ToolContext], ToolFn]:
        TOOL_KINDS[kind] = factory
        return factory

    return decorator


@register_tool_kind("retriever")
def _retriever(tool: RetrieverTool, ctx: ToolContext) -> ToolFn:
    index = ctx.index
    if index is None:
        raise ValueError(f"tool {tool.name!r} is a retriever but the run has no index")
    top_k = tool.top_k

    def search(query: str) -> list[str]:
        return [chunk.text for chunk in index.search(query, top_k)]

    return search


@register_tool_kind("python")
def _python(tool: PythonTool, ctx: ToolContext) -> ToolFn:
    return resolve_callable(tool.function, ctx.config.base_dir)


@register_tool_kind("simulated")
def _simulated(tool: SimulatedTool, ctx: ToolContext) -> ToolFn:
    def unavailable(*_: Any, **__: Any) -> Any:
        raise RuntimeError(
            f"{tool.name!r} is a simulated tool: during generation the teacher writes its observations "
            "(distill.agent.simulated); it has no implementation to run"
        )

    return unavailable


class ToolBox:
    """The configured tools, ready to run by name."""

    def __init__(self, config: Config, index: Any = None) -> None:
        ctx = ToolContext(config=config, index=index)
        self._fns: dict[str, ToolFn] = {t.name: TOOL_KINDS[t.kind](t, ctx) for t in config.tools}
        self._structured = frozenset(t.name for t in config.tools if t.structured)
        self._simulated = frozenset(t.name for t in config.tools if t.kind == "simulated")

    def __contains__(self, name: str) -> bool:
        return name in self._fns

    def function(self, name: str) -> ToolFn:
        """The raw callable behind a tool (what a LangChain `Tool(func=...)` would wrap)."""
        return self._fns[name]

    def is_simulated(self, name: str) -> bool:
        """True for a `kind: simulated` tool (the teacher writes its observations; see distill.agent.simulated)."""
        return name in self._simulated

    def run(self, name: str, action_input: str) -> Observation:
        """Run a tool; its output printed the way LangChain's scratchpad prints it (`str(output)`).

        A tool with structured arguments (an object input_schema) is called with them as keyword arguments.
        """
        try:
            if name in self._structured:
                value = self._fns[name](**json.loads(action_input))
            else:
                value = self._fns[name](action_input)
        except Exception as exc:  # noqa: BLE001 - a failing tool is an observation the agent must handle
            return Observation(text=f"Error: {type(exc).__name__}: {exc}", error=True)
        return Observation(text=str(value), value=value)
