"""The agent at work: the tools it calls (really run, or simulated by the teacher) and the step loop.

`tools` (the ToolBox: runner factories registered by kind, each call run off the event loop with its timeout),
`mcp` (long-lived MCP sessions on a background loop), `langchain_tools` (the same tools as LangChain's agent gets
them, for `distill chat`), `simulated` (a `kind: simulated` tool's observation, written by the teacher).
"""
