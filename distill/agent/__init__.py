"""The agent at work: the tools it calls (really run, or simulated by the teacher) and the step loop.

`tools` (the ToolBox: tool kinds registered by name, each really run), `simulated` (a `kind: simulated` tool's
observation, written by the teacher).
"""
