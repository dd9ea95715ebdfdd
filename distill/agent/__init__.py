"""The agent at work, for any policy (the teacher during generation, a student during eval).

`loop` (the one agent loop: a step is request -> reply -> strict reading; a turn repeats steps and observes tool
calls), `resample` (a step that failed the strict reader asked again with another seed), `tools` (the ToolBox: tool
kinds registered by name, run off the event loop with timeouts), `mcp` (MCP server sessions), `langchain_tools`
(LangChain tool objects, for `distill chat` and `kind: langchain`), `simulated` (a `kind: simulated` tool's
observation, written by the teacher).
"""
