"""A real MCP server for the tests, written with the official SDK (FastMCP): stdio by default, `--http PORT` for
streamable HTTP on 127.0.0.1.

Every call is appended to the CALL_LOG file (JSON lines: tool, arguments, the text it returned, pid), so the tests
count calls at the server. Tools: nullable / anyOf / enum arguments (`find_item`, `search_items`), one that always
errors (`fail`), one that sleeps (`slow`) and one that kills the server (`die`). When the DEAD_MARKER file exists the
server exits at startup (a server that cannot be restarted).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Literal

from mcp.server.fastmcp import FastMCP

server = FastMCP("shop", log_level="WARNING")
_LOG = os.environ.get("CALL_LOG")


def _logged(tool: str, arguments: dict, text: str) -> str:
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"tool": tool, "arguments": arguments, "text": text, "pid": os.getpid()}) + "\n")
    return text


@server.tool()
def find_item(sku: str, color: Literal["red", "green", "blue"] | None = None, size: int | None = None) -> str:
    """Find an item by its SKU (like SKU-1234), optionally in one color and size."""
    text = json.dumps({"sku": sku, "color": color or "any", "size": size, "in_stock": len(sku) % 2 == 0})
    return _logged("find_item", {"sku": sku, "color": color, "size": size}, text)


@server.tool()
def search_items(query: str, tags: list[str] | None = None, sort: Literal["price", "name"] = "name") -> str:
    """Search the catalogue by words, optionally only items with all the given tags."""
    text = f"3 items match {query!r} (tags: {', '.join(tags or []) or 'none'}; sorted by {sort})"
    return _logged("search_items", {"query": query, "tags": tags, "sort": sort}, text)


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    _logged("fail", {"reason": reason}, "")
    raise RuntimeError(f"the shop is closed: {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Answers after `seconds`."""
    _logged("slow", {"seconds": seconds}, "")
    await asyncio.sleep(seconds)
    return "finally"


@server.tool()
def die(code: int = 1) -> str:
    """Kills the server process."""
    _logged("die", {"code": code}, "")
    os._exit(code)


if __name__ == "__main__":
    marker = os.environ.get("DEAD_MARKER")
    if marker and Path(marker).exists():
        print("shop: cannot start, the marker says so", file=sys.stderr)
        sys.exit(3)
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        server.settings.host, server.settings.port = "127.0.0.1", int(sys.argv[2])
        server.run(transport="streamable-http")
    else:
        server.run()
