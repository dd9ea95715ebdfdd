"""`distill generate`: documents + tools -> teacher-played conversations -> fine-tuning JSONL, in data-flow order.

`sources` (documents -> chunks) -> `index` (BM25 over chunks) -> `questions` (plans and the user's questions) ->
`rollout` (the teacher plays the agent; tools really run) -> `dedup`, `coverage` (mix top-up) -> `export` (lines,
split, manifest). `resume` makes a run folder resumable, `estimate` prices a run from a small sample, and
`pipeline` (the entry point: `generate`, `reexport`) wires the stages together.
"""
