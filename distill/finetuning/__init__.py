"""`distill finetune`: an OpenAI fine-tuning job on a run's dataset (entry point: `finetune.finetune`).

`cost` (tokens x epochs x price), `jobs` (the job record in the run folder, upload and watch), `finetune`.
"""
