"""MCP tools at run time: one long-lived session per server, on a background event loop owned by the ToolBox.

`McpRuntime` runs its own event loop in a daemon thread, so a session outlives any one `asyncio.run` (generate,
each eval model, the synchronous `distill chat`) and no call blocks the caller's loop. Each server (`McpConnection`)
is started / connected once, lists its tools (they must be those the config was loaded with), and then serves
`call_tool` requests concurrently. A result is the text of its content blocks (what LangChain's MCP adapter hands
the agent); an `isError` result is an error observation with that text; a call past the tool's `timeout_s` is an
error observation. A server that dies (its process exits, its connection drops) is restarted once and the call
retried; when it dies again the run stops (`RunStopped`, one line naming the server), resumably.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from distill.errors import RunStopped
from distill.tool_sources import McpServer, list_session_tools, open_mcp_session

__all__ = ["McpConnection", "McpRuntime", "content_text"]

RESTARTS = 1  # a dead server is restarted this many times per ToolBox; then the run stops


def content_text(blocks: list[Any]) -> str:
    """The text an agent gets from MCP content blocks: text blocks joined by newlines, others named."""
    parts = []
    for block in blocks:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource" and hasattr(block.resource, "text"):
            parts.append(block.resource.text)
        else:
            parts.append(f"[{kind} content: {getattr(block, 'mimeType', None) or 'not text'}]")
    return "\n".join(parts)


class McpRuntime:
    """The background loop and the connections of one ToolBox (keyed by server)."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="distill-mcp")
        self._thread.start()
        self.connections: dict[str, McpConnection] = {}
        self._closed = False
        atexit.register(self.close)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Schedule a coroutine on the runtime's loop."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def connection(self, server: McpServer) -> McpConnection:
        """The (started) connection to `server`: one per server, started on first use."""
        key = json.dumps(server.model_dump(mode="json"), sort_keys=True)
        found = self.connections.get(key)
        if found is None:
            found = self.connections[key] = McpConnection(server, self)
            self.submit(found.start()).result(timeout=server.startup_timeout_s + 10)
        return found

    def close(self, timeout_s: float = 5.0) -> None:
        """Close every session (a stdio server's process ends) and stop the loop."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            futures = [self.submit(c.stop()) for c in self.connections.values()]
            concurrent.futures.wait(futures, timeout=timeout_s)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout_s)
            if not self._thread.is_alive():
                self.loop.close()


class McpConnection:
    """One server's long-lived session; restarted once when it dies."""

    def __init__(self, server: McpServer, runtime: McpRuntime) -> None:
        self.server, self.runtime = server, runtime
        self.tools: dict[str, dict[str, Any]] = {}
        self.session: Any = None
        self.generation = 0
        self.restarts = 0
        self._owner: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None

    # -- lifetime (on the runtime's loop) --------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the session and list the tools."""
        self._lock = self._lock or asyncio.Lock()
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._owner = asyncio.create_task(self._own(ready, self._stop))
        self.session = await asyncio.wait_for(ready, self.server.startup_timeout_s)
        self.generation += 1
        self.tools = {t["name"]: t for t in await list_session_tools(self.session)}

    async def _own(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        """Hold the transport and session open (anyio wants them entered and left in one task)."""
        try:
            async with open_mcp_session(self.server, self.runtime.base_dir) as session:
                ready.set_result(session)
                await stop.wait()
        except BaseException as exc:  # noqa: BLE001 - a dead server: the calls see it, start() reports it
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))

    async def stop(self) -> None:
        """Close the session (ends a stdio server's process)."""
        if self._stop is not None:
            self._stop.set()
        if self._owner is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):  # closing a dead session
                await asyncio.wait_for(self._owner, 5)

    async def _restart(self, generation: int, why: str) -> None:
        assert self._lock is not None  # set by start()
        async with self._lock:
            if self.generation != generation:  # another call restarted it already
                return
            if self.restarts >= RESTARTS:
                raise self._died(why)
            self.restarts += 1
            if self._owner is not None:
                self._owner.cancel()
            try:
                await self.start()
            except Exception as exc:  # noqa: BLE001 - reported as the server's death
                raise self._died(f"{why}; restarting it failed: {type(exc).__name__}: {exc}") from None

    def _died(self, why: str) -> RunStopped:
        return RunStopped(
            "tool_server_died",
            f"MCP server `{self.server.label}` died ({why})",
            hint="fix or restart the server, then resume",
        )

    # -- calls ---------------------------------------------------------------------------------------------------------
    async def call(self, tool: str, arguments: dict[str, Any], timeout_s: float) -> tuple[str, bool]:
        """(text, is_error) of one `call_tool`; a dead server is restarted once and the call made again."""
        from mcp.shared.exceptions import McpError
        from mcp.types import CONNECTION_CLOSED

        for attempt in (0, 1):
            generation, session = self.generation, self.session
            try:
                result = await asyncio.wait_for(session.call_tool(tool, arguments), timeout_s)
            except TimeoutError:
                return f"Error: TimeoutError: {tool} did not answer within {timeout_s:g} s", True
            except McpError as exc:
                if exc.error.code != CONNECTION_CLOSED:
                    return f"Error: McpError: {exc.error.message}", True
                why = "its connection closed"
            except Exception as exc:  # noqa: BLE001 - the transport failed: the server is gone
                why = f"{type(exc).__name__}: {exc}"
            else:
                return content_text(result.content), bool(result.isError)
            if attempt:
                raise self._died(why)
            await self._restart(generation, why)
        raise AssertionError("unreachable")
