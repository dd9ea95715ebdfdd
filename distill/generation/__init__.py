"""`distill generate`: documents + tools -> teacher-played conversations -> fine-tuning JSONL, in data-flow order.

`sources` (documents -> chunks) -> `index` (BM25 over chunks) -> `questions` (plans and the user's questions) ->
`rollout` (the teacher plays the agent through `distill.agent.loop`; tools really run; `scheduler` runs them) ->
`judge` (content grades; `offline_judge` without a key) -> `dedup`, `coverage` + `top_up` (the mix top-up) ->
`export` (lines, split, manifest; `preferences` for DPO pairs). Around them: `focus` (a round aimed at a student's
failures), `waves` (batch mode), `resume` (a run folder resumable), `interrupt` (Ctrl-C drains what is paid),
`estimate` (a priced pilot), `summary` (what a run that exported nothing says), and `pipeline` (the entry point:
`generate`, `reexport`) wiring the stages.
"""
