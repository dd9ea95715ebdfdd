"""The agent's tools at run time: a registry of runner factories by kind, and the ToolBox that runs every call.

A kind's runner factory `(tool_config, context) -> runner` is registered with `register_tool_kind` (its config model
with `distill.tool_config.register_tool_model`); the built-ins are registered the same way. A runner is a plain
callable (called with the action_input string, or keyword arguments for an object input_schema) or an
`AsyncRunner` (awaited on its own loop: MCP). `retriever` searches the run's BM25 index (the observation is then
LangChain's `str(list)` print), `python` imports "module:function", `langchain` runs the BaseTool as LangChain's
agent does (`tool.run(input)`), `mcp_tool` calls its server (`distill.agent.mcp`); `simulated` tools are not run here
(the teacher writes their observations, `distill.agent.simulated`).

`ToolBox.arun` never blocks the event loop: a plain runner runs in a daemon worker thread, at most
`teacher.concurrency` calls at once, each bounded by its tool's `timeout_s`. A call past its timeout is an error
observation and its thread is abandoned (a daemon: it cannot keep the process alive, and Ctrl-C cancels the waiting
task at once); its late result is dropped. A tool that raises, returns None, or returns an object whose print is
not text (`<... object at 0x...>`) gives an error observation, never a crash. `ToolBox.run` is the synchronous
twin (LangChain's runtime in `distill chat`). Calls and errors are counted per tool (`ToolBox.counts`).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distill.config import (
    Config,
    LangchainTool,
    McpTool,
    PythonTool,
    RetrieverTool,
    SimulatedTool,
    resolve_callable,
)

__all__ = ["TOOL_KINDS", "AsyncRunner", "Observation", "ToolBox", "ToolContext", "register_tool_kind"]

ToolFn = Callable[..., Any]  # called with the string input, or with keyword arguments (object input_schema)
ToolFactory = Callable[[Any, "ToolContext"], Any]
TOOL_KINDS: dict[str, ToolFactory] = {}
_DEFAULT_REPR = re.compile(r"^<.* at 0x[0-9a-f]+>$", re.DOTALL)


@dataclass
class ToolContext:
    """What a runner factory may use: the config, the run's retrieval index, and state shared in one ToolBox."""

    config: Config
    index: Any
    shared: dict[str, Any] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Observation:
    """What a tool answered, as the agent's scratchpad will print it."""

    text: str
    error: bool = False
    value: Any = None


class AsyncRunner:
    """A runner awaited on the caller's loop (it does its own I/O off the loop and its own timeout)."""

    async def acall(self, arguments: Any) -> Observation:
        """Run one call (`arguments`: the string input or the mapping of arguments)."""
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        """Synchronous call from outside any loop (a LangChain `Tool(func=...)`): the observation's text."""
        raise NotImplementedError


def register_tool_kind(kind: str) -> Callable[[ToolFactory], ToolFactory]:
    """Register the runner factory of `kind:` tools (built-ins are registered the same way)."""

    def decorator(factory: ToolFactory) -> ToolFactory:
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


@register_tool_kind("langchain")
def _langchain(tool: LangchainTool, ctx: ToolContext) -> ToolFn:
    from distill.tool_sources import langchain_object

    entry = LangchainTool.model_validate({k: v for k, v in tool.model_dump().items() if k in tool.model_fields_set})
    lc_tool, _ = langchain_object(tool.object, ctx.config.base_dir, entry.name, entry.description)

    def run(*args: Any, **kwargs: Any) -> Any:
        return lc_tool.run(kwargs if kwargs else args[0])  # what LangChain's agent executor calls

    run.langchain_tool = lc_tool  # type: ignore[attr-defined]
    return run


class _McpRunner(AsyncRunner):
    def __init__(self, tool: McpTool, connection: Any) -> None:
        self.tool, self.connection = tool, connection

    async def acall(self, arguments: Any) -> Observation:
        runtime = self.connection.runtime
        future = runtime.submit(self.connection.call(self.tool.name, arguments, self.tool.timeout_s))
        text, error = await asyncio.wrap_future(future)
        return Observation(text=text, error=error, value=text)

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        arguments = kwargs if kwargs else json.loads(args[0]) if args and isinstance(args[0], str) else args[0]
        call = self.connection.call(self.tool.name, arguments, self.tool.timeout_s)
        text, _ = self.connection.runtime.submit(call).result()
        return str(text)


@register_tool_kind("mcp_tool")
def _mcp(tool: McpTool, ctx: ToolContext) -> AsyncRunner:
    from distill.agent.mcp import McpRuntime

    runtime = ctx.shared.get("mcp")
    if runtime is None:
        runtime = ctx.shared["mcp"] = McpRuntime(ctx.config.base_dir)
        ctx.closers.append(runtime.close)
    connection = runtime.connection(tool.server)
    listed = connection.tools.get(tool.name)
    if listed is None or (listed.get("inputSchema") or {"type": "object", "properties": {}}) != tool.input_schema:
        from distill.errors import ConfigError

        what = "no longer lists" if listed is None else "changed the input schema of"
        raise ConfigError(
            str(ctx.config.path or ctx.config.name), "tools",
            f"MCP server `{tool.server.label}` {what} tool {tool.name!r} since the config was loaded",
            hint="run the command again (the config is read anew)",
        )
    return _McpRunner(tool, connection)


@register_tool_kind("simulated")
def _simulated(tool: SimulatedTool, ctx: ToolContext) -> ToolFn:
    def unavailable(*_: Any, **__: Any) -> Any:
        raise RuntimeError(
            f"{tool.name!r} is a simulated tool: during generation the teacher writes its observations "
            "(distill.agent.simulated); it has no implementation to run"
        )

    return unavailable


def _observation(value: Any) -> Observation:
    """A tool's return value as the scratchpad prints it (`str(value)`); None and object reprs are errors."""
    if value is None:
        return Observation(text="Error: the tool returned None (no result); a tool must return its observation",
                           error=True)
    text = value if isinstance(value, str) else str(value)
    if not isinstance(value, str) and _DEFAULT_REPR.match(text):
        return Observation(text=f"Error: the tool returned a {type(value).__name__} object, which prints as no "
                           "result; return text or a JSON value", error=True)
    return Observation(text=text, value=value)


def _failure(exc: BaseException) -> Observation:
    return Observation(text=f"Error: {type(exc).__name__}: {exc}", error=True)


class ToolBox:
    """The configured tools, ready to run by name; `close()` ends their sessions (MCP servers)."""

    def __init__(self, config: Config, index: Any = None) -> None:
        self._ctx = ctx = ToolContext(config=config, index=index)
        self._fns: dict[str, Any] = {}
        try:
            for t in config.tools:
                self._fns[t.name] = TOOL_KINDS[t.kind](t, ctx)
        except BaseException:
            self.close()
            raise
        self._structured = frozenset(t.name for t in config.tools if t.structured)
        self._simulated = frozenset(t.name for t in config.tools if t.kind == "simulated")
        self._timeouts = {t.name: getattr(t, "timeout_s", None) for t in config.tools}
        # the run's own in-memory BM25 index answers in well under a millisecond: a thread per call cost a third of
        # an offline run's time (benchmarks/offline_throughput.py --all-stages --profile), so it runs inline
        self._inline = frozenset(t.name for t in config.tools if t.kind == "retriever")
        self._concurrency = config.teacher.concurrency
        self._slots: dict[int, asyncio.Semaphore] = {}  # one per event loop
        self._lock = threading.Lock()
        self.counts: dict[str, dict[str, int]] = {t.name: {"calls": 0, "errors": 0} for t in config.tools}

    def __contains__(self, name: str) -> bool:
        return name in self._fns

    def function(self, name: str) -> ToolFn:
        """The raw callable behind a tool (what a LangChain `Tool(func=...)` would wrap)."""
        return self._fns[name]

    def is_simulated(self, name: str) -> bool:
        """True for a `kind: simulated` tool (the teacher writes its observations; see distill.agent.simulated)."""
        return name in self._simulated

    def close(self) -> None:
        """End what the tools hold open (MCP sessions and their server processes)."""
        while self._ctx.closers:
            self._ctx.closers.pop()()

    def _arguments(self, name: str, action_input: str) -> Any:
        return json.loads(action_input) if name in self._structured else action_input

    def _invoke(self, name: str, arguments: Any) -> Any:
        fn = self._fns[name]
        return fn(**arguments) if name in self._structured else fn(arguments)

    def _count(self, name: str, observation: Observation) -> Observation:
        with self._lock:
            counts = self.counts.setdefault(name, {"calls": 0, "errors": 0})
            counts["calls"] += 1
            counts["errors"] += observation.error
        return observation

    async def arun(self, name: str, action_input: str) -> Observation:
        """Run a tool off the event loop (a worker thread, or its own loop for MCP), bounded by its timeout_s and by
        `teacher.concurrency` calls at once; the output printed the way LangChain's scratchpad prints it."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(id(loop))
        if slots is None:
            slots = self._slots[id(loop)] = asyncio.Semaphore(self._concurrency)
        async with slots:
            try:
                arguments = self._arguments(name, action_input)
                fn = self._fns[name]
                if isinstance(fn, AsyncRunner):
                    return self._count(name, await fn.acall(arguments))
                if name in self._inline:
                    try:
                        observation = _observation(self._invoke(name, arguments))
                    except Exception as exc:  # noqa: BLE001 - a failing tool is an observation the agent must handle
                        observation = _failure(exc)
                    return self._count(name, observation)
                return self._count(name, await self._in_thread(loop, name, arguments))
            except (ValueError, TypeError, KeyError) as exc:  # bad JSON arguments, an unknown tool
                return self._count(name, _failure(exc))

    async def _in_thread(self, loop: asyncio.AbstractEventLoop, name: str, arguments: Any) -> Observation:
        done: asyncio.Future[Observation] = loop.create_future()

        def settle(observation: Observation) -> None:
            if not done.done():
                done.set_result(observation)

        def work() -> None:
            try:
                observation = _observation(self._invoke(name, arguments))
            except BaseException as exc:  # noqa: BLE001 - a failing tool is an observation the agent must handle
                observation = _failure(exc)
            try:
                loop.call_soon_threadsafe(settle, observation)
            except RuntimeError:  # the loop is gone (Ctrl-C, or the call was abandoned): drop the late result
                pass

        threading.Thread(target=work, daemon=True, name=f"distill-tool {name}").start()
        timeout = self._timeouts.get(name)
        try:
            return await asyncio.wait_for(done, timeout)
        except TimeoutError:
            return Observation(text=f"Error: TimeoutError: {name} did not answer within {timeout:g} s", error=True)

    def run(self, name: str, action_input: str) -> Observation:
        """Run a tool synchronously (in a worker thread, bounded by its timeout_s); see `arun`."""
        try:
            arguments = self._arguments(name, action_input)
            fn = self._fns[name]
            if isinstance(fn, AsyncRunner):
                runtime = fn.connection.runtime  # type: ignore[attr-defined]
                return self._count(name, runtime.submit(fn.acall(arguments)).result())
        except (ValueError, TypeError, KeyError) as exc:
            return self._count(name, _failure(exc))
        box: list[Observation] = []

        def work() -> None:
            try:
                box.append(_observation(self._invoke(name, arguments)))
            except BaseException as exc:  # noqa: BLE001 - a failing tool is an observation
                box.append(_failure(exc))

        thread = threading.Thread(target=work, daemon=True, name=f"distill-tool {name}")
        thread.start()
        timeout = self._timeouts.get(name)
        thread.join(timeout)
        if not box:
            return self._count(name, Observation(
                text=f"Error: TimeoutError: {name} did not answer within {timeout:g} s", error=True))
        return self._count(name, box[0])
