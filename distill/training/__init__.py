"""Local training: supervised fine-tuning of an open causal LM on a run's train.jsonl (`train`), with distill's
own label mask from the model's chat template (`chat`), model loading from a folder, a .gguf file or a Hub id
(`load`), and a local model as a policy behind the `Teacher` protocol (`local_model`).

Nothing heavy is imported here: torch, transformers, trl and peft (the `train` extra) load when used.
"""
