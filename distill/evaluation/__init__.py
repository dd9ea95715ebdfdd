"""`distill eval` and `distill chat`: students playing the agent on held-out questions (entry: `evaluate.evaluate`).

`evaluate` (each model plays the agent through the runtime prompt; strict verdicts), `report` (figures and files),
`chat` (LangChain's own agent with the same tools, for a look by hand).
"""
