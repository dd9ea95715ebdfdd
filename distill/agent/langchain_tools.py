"""The configured tools as LangChain's agent gets them at run time (`distill chat`): one list, one set of tools.

`kind: langchain` tools are the user's own objects (a retriever as LangChain's `create_retriever_tool` made it);
MCP tools are `langchain-mcp-adapters` tools on the ToolBox's long-lived session, wrapped as single-input `Tool`s
because LangChain's conversational-chat agent takes one string per action (structured arguments travel as the JSON
text of an object, as in the training data), and their content blocks are read as text the way the ToolBox reads
them; every other kind runs through the ToolBox (`Tool(func=...)`, LangChain prints `str(value)`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from distill.agent.tools import ToolBox
from distill.config import Config, LangchainTool, McpTool
from distill.tool_sources import MCP_HINT

__all__ = ["langchain_tools", "mcp_adapter_text"]


def mcp_adapter_text(content: Any) -> str:
    """The text of what a langchain-mcp-adapters tool returned (content blocks, or a string)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content if isinstance(content, list) else [content]:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, str):
            parts.append(block)
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            mime = block.get("mime_type") if isinstance(block, dict) else None
            parts.append(f"[{kind} content: {mime or 'not text'}]")
    return "\n".join(parts)


def _via_toolbox(toolbox: ToolBox, name: str) -> Callable[[str], Any]:
    def run(query: str) -> Any:
        observation = toolbox.run(name, query)
        return observation.text if observation.error else observation.value  # LangChain prints str(value)

    return run


def _via_adapter(toolbox: ToolBox, tool: McpTool) -> Callable[[str], str]:
    try:
        from langchain_mcp_adapters.tools import convert_mcp_tool_to_langchain_tool
        from mcp import types
    except ImportError:
        raise ImportError(f"distill chat with MCP tools needs langchain-mcp-adapters: {MCP_HINT}") from None
    runner = toolbox.function(tool.name)
    connection = runner.connection  # type: ignore[attr-defined]
    listed = types.Tool.model_validate(connection.tools[tool.name])

    def run(action_input: str) -> str:
        arguments = json.loads(action_input) if isinstance(action_input, str) else action_input
        adapter = convert_mcp_tool_to_langchain_tool(connection.session, listed)  # the current session

        async def call() -> Any:
            import asyncio

            return await asyncio.wait_for(adapter.ainvoke(arguments), tool.timeout_s)

        return mcp_adapter_text(connection.runtime.submit(call()).result())

    return run


def langchain_tools(config: Config, toolbox: ToolBox) -> list[Any]:
    """The LangChain tools of the config, for LangChain's agent."""
    from langchain_core.tools import Tool

    out: list[Any] = []
    for t in config.tools:
        if isinstance(t, LangchainTool):
            assert t.name is not None  # filled at config load
            lc_tool = toolbox.function(t.name).langchain_tool  # type: ignore[attr-defined]
            if lc_tool.is_single_input:
                out.append(lc_tool if lc_tool.name == t.name and lc_tool.description == t.description
                           else lc_tool.model_copy(update={"name": t.name, "description": t.description}))
                continue
        func = _via_adapter(toolbox, t) if isinstance(t, McpTool) else _via_toolbox(toolbox, t.name)
        out.append(Tool(name=t.name, description=t.description, func=func))
    return out
