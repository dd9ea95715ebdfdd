"""Tools that come from elsewhere: `kind: mcp` (an MCP server's tools) and `kind: langchain` (the user's LangChain
tool or retriever), their config models and what they expand to at config load.

An `mcp` entry names a server (a stdio `command`, run in the config's folder, or a streamable-HTTP `url`); at load
the server is started / connected with the official `mcp` SDK (`open_mcp_session`, which the agent's runner reuses
for its long-lived session), its tools are listed, and each one's name, description and `inputSchema` become an
`mcp_tool` (so the schemas are part of the dumped config, hence of the run's fingerprint). A `langchain` entry names
`module:attribute`: a `BaseTool`, a `BaseRetriever` (made a tool with LangChain's own `create_retriever_tool`) or a
zero-argument factory returning either; the object is resolved once per process (`langchain_object`) and its name,
description and argument schema fill the entry. Both kinds are registered with `register_tool_model` like any
third-party kind. Heavy imports (mcp, langchain_core) happen inside functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal, TextIO, cast

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from distill.tool_config import (
    StrictModel,
    ToolEntry,
    ToolExample,
    ToolSpec,
    is_object_schema,
    register_tool_model,
    resolve_callable,
)

__all__ = [
    "MCP_HINT",
    "LangchainTool",
    "McpServer",
    "McpTool",
    "McpToolsEntry",
    "langchain_object",
    "list_mcp_tools",
    "open_mcp_session",
    "run_in_thread",
]

MCP_HINT = 'pip install "distill[mcp]" (the official mcp SDK and langchain-mcp-adapters)'


class McpServer(StrictModel):
    """Where an MCP server is: a stdio `command` (started in the config's folder) or a streamable-HTTP `url`."""

    command: list[str] | None = Field(
        default=None, min_length=1, description='argv of a stdio server; "python" is the interpreter running distill'
    )
    url: str | None = Field(default=None, pattern=r"^https?://", description="a streamable-HTTP endpoint, e.g. .../mcp")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment of a stdio server")
    startup_timeout_s: float = Field(default=30.0, gt=0, description="to start, connect and list the tools")

    @model_validator(mode="after")
    def _one_of(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (stdio) or url (streamable HTTP)")
        if self.url is not None and self.env:
            raise ValueError("env is for a stdio server (command); an HTTP server has its own environment")
        return self

    @property
    def label(self) -> str:
        """How errors name the server: its command line or its URL."""
        return " ".join(self.command) if self.command else str(self.url)


class McpTool(ToolSpec):
    """One tool of an MCP server, as listed (what a `kind: mcp` entry expands to; it may also be written by hand)."""

    kind: Literal["mcp_tool"]
    server: McpServer
    timeout_s: float = Field(default=30.0, gt=0, description="a call still running after this is an error")

    @model_validator(mode="after")
    def _object_input(self) -> McpTool:
        if not is_object_schema(self.input_schema):
            raise ValueError("input_schema: an MCP tool takes an object of arguments (its inputSchema)")
        return self


class McpToolsEntry(ToolEntry):
    """`kind: mcp`: the tools of one MCP server (all, or those in `include`)."""

    kind: Literal["mcp"]
    server: McpServer
    include: list[str] | None = Field(default=None, min_length=1, description="which tools; null = all listed")
    timeout_s: float = Field(default=30.0, gt=0, description="per call; a call still running is an error")
    descriptions: dict[str, str] = Field(default_factory=dict, description="tool name -> description override")
    examples: dict[str, list[ToolExample]] = Field(default_factory=dict, description="tool name -> example uses")

    @property
    def origin(self) -> str:
        """How a clash error names where a tool came from."""
        return f"listed by MCP server `{self.server.label}`"

    def expand(self, base_dir: Path) -> list[ToolSpec]:
        """List the server's tools (it is started / connected for that) and make each a configured tool."""
        label = self.server.label
        try:
            listed = list_mcp_tools(self.server, base_dir)
        except ImportError as exc:
            raise ValueError(f"{exc}") from None
        except Exception as exc:  # noqa: BLE001 - any failure to reach the server is the user's to fix
            raise ValueError(f"cannot list the tools of MCP server `{label}`: {_leaf(exc)}") from None
        names = [t["name"] for t in listed]
        for asked in [*(self.include or []), *self.descriptions, *self.examples]:
            if asked not in names:
                raise ValueError(f"MCP server `{label}` has no tool {asked!r}; it lists: {', '.join(names) or 'none'}")
        tools: list[ToolSpec] = []
        for item in listed:
            name = item["name"]
            if self.include is not None and name not in self.include:
                continue
            data = {
                "kind": "mcp_tool", "name": name, "server": self.server.model_dump(), "timeout_s": self.timeout_s,
                "description": self.descriptions.get(name) or item.get("description") or name,
                "input_schema": item.get("inputSchema") or {"type": "object", "properties": {}},
                "examples": [e.model_dump() for e in self.examples.get(name, [])],
            }
            try:
                tools.append(McpTool.model_validate(data))
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "tool"
                fix = " (override it: descriptions: {NAME: ...})" if where == "description" else ""
                raise ValueError(
                    f"MCP tool {name!r} of `{label}`: {where} {err['msg'].removeprefix('Value error, ')}{fix}"
                ) from None
        return tools


class LangchainTool(ToolSpec):
    """`kind: langchain`: a LangChain BaseTool or retriever named "module:attribute"; name/description override."""

    kind: Literal["langchain"]
    object: str = Field(description='"module:attribute": a BaseTool, a BaseRetriever or a zero-argument factory')
    name: str | None = Field(default=None, min_length=1, max_length=64)  # type: ignore[assignment]
    description: str | None = Field(default=None, min_length=1)  # type: ignore[assignment]
    timeout_s: float = Field(default=30.0, gt=0, description="a call still running after this is an error")
    _retriever: bool = PrivateAttr(default=False)

    @field_validator("object")
    @classmethod
    def _shape(cls, value: str) -> str:
        if ":" not in value or not all(value.partition(":")[::2]):
            raise ValueError('must look like "package.module:attribute"')
        return value

    @property
    def searches(self) -> bool:
        """A LangChain retriever searches documents (the offline teacher plays it like the built-in retriever)."""
        return self._retriever

    def expand(self, base_dir: Path) -> list[ToolSpec]:
        """Resolve the object; its name, description and argument schema fill what the entry leaves out."""
        tool, retriever = langchain_object(self.object, base_dir, self.name, self.description)
        schema = None
        if not tool.is_single_input:
            from langchain_core.utils.function_calling import convert_to_openai_tool

            schema = convert_to_openai_tool(tool)["function"]["parameters"]
        data = {**self.model_dump(exclude_unset=True), "name": self.name or tool.name,
                "description": self.description or tool.description or tool.name}
        data.setdefault("input_schema", schema)
        try:
            filled = LangchainTool.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"LangChain tool {self.object}: {where} {err['msg'].removeprefix('Value error, ')}") from None
        filled._retriever = retriever
        return [filled]


_OBJECTS: dict[tuple[str, str, str | None, str | None], tuple[Any, bool]] = {}


def langchain_object(spec: str, base_dir: Path, name: str | None, description: str | None) -> tuple[Any, bool]:
    """The LangChain tool that `spec` names (retrievers become tools, factories are called), and whether it was a
    retriever; resolved once per process. Raises ValueError with what to fix."""
    key = (spec, str(base_dir), name, description)
    if key in _OBJECTS:
        return _OBJECTS[key]
    try:
        from langchain_core.retrievers import BaseRetriever
        from langchain_core.tools import BaseTool, create_retriever_tool
    except ImportError:
        raise ValueError("kind: langchain needs langchain-core: pip install langchain-core") from None
    try:
        obj: Any = resolve_callable(spec, base_dir, any_object=True)
        if not isinstance(obj, BaseTool | BaseRetriever) and callable(obj):
            obj = obj()  # a zero-argument factory
    except Exception as exc:  # noqa: BLE001 - an import or factory failure is the user's to fix
        raise ValueError(f"object: cannot load {spec!r}: {exc}") from None
    retriever = isinstance(obj, BaseRetriever)
    if retriever:
        if not name or not description:
            raise ValueError(f"object: {spec!r} is a retriever; give the tool a name: and a description:")
        obj = create_retriever_tool(obj, name, description)
    elif not isinstance(obj, BaseTool):
        raise ValueError(f"object: {spec!r} is a {type(obj).__name__}, not a LangChain BaseTool or BaseRetriever")
    _OBJECTS[key] = (obj, retriever)
    return obj, retriever


# -- MCP sessions ------------------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def open_mcp_session(server: McpServer, base_dir: Path, errlog: TextIO | None = None) -> AsyncIterator[Any]:
    """An initialized `mcp.ClientSession` to `server` (a stdio process in `base_dir`, or streamable HTTP)."""
    try:
        from mcp import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client
        from mcp.client.streamable_http import streamable_http_client
    except ImportError:
        raise ImportError(f"kind: mcp needs the mcp SDK: {MCP_HINT}") from None
    async with contextlib.AsyncExitStack() as stack:
        if server.command is not None:
            command, *args = server.command
            if command in ("python", "python3"):
                command = sys.executable
            params = StdioServerParameters(
                command=command, args=args, cwd=str(base_dir), env={"FASTMCP_LOG_LEVEL": "WARNING", **server.env}
            )
            read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog or sys.stderr))
        else:
            read, write, _ = await stack.enter_async_context(streamable_http_client(str(server.url)))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


async def list_session_tools(session: Any) -> list[dict[str, Any]]:
    """Every tool a session lists (all pages) as JSON: name, description, inputSchema."""
    from mcp import types

    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        out.extend(t.model_dump(mode="json", include={"name", "description", "inputSchema"}) for t in page.tools)
        cursor = page.nextCursor
        if not cursor:
            return out


def list_mcp_tools(server: McpServer, base_dir: Path) -> list[dict[str, Any]]:
    """Start / connect to `server`, list its tools, disconnect; a stdio server's stderr is kept for the error."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as raw:
        errlog = cast(TextIO, raw)

        async def go() -> list[dict[str, Any]]:
            async with open_mcp_session(server, base_dir, errlog) as session:
                return await list_session_tools(session)

        try:
            return run_in_thread(go, server.startup_timeout_s)
        except ImportError:
            raise
        except Exception as exc:  # noqa: BLE001 - said in one line, with the server's last word
            errlog.seek(0)
            said = [line for line in errlog.read().splitlines() if line.strip()]
            tail = f" (the server said: {said[-1].strip()[:200]})" if said else ""
            raise RuntimeError(f"{_leaf(exc)}{tail}") from None


def run_in_thread(make: Callable[[], Any], timeout_s: float) -> Any:
    """Run the coroutine `make()` on a fresh event loop in a thread (callable from inside a running loop too)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(asyncio.wait_for(make(), timeout_s))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="distill-mcp-list")
    thread.start()
    thread.join(timeout_s + 10)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    if "error" in box:
        if isinstance(box["error"], asyncio.TimeoutError | TimeoutError):
            raise TimeoutError(f"no answer within {timeout_s:g} s (server.startup_timeout_s)")
        raise box["error"]
    return box["value"]


def _leaf(exc: BaseException) -> str:
    """The first real error inside (possibly nested) exception groups, as one line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


register_tool_model("mcp", McpToolsEntry)
register_tool_model("mcp_tool", McpTool)
register_tool_model("langchain", LangchainTool)
