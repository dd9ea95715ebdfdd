"""`distill publish`: a run's dataset to the Hugging Face Hub (entry point: `publish.publish`).

`rows` (lines -> dataset rows with JSON-string fields), `card` (the dataset card), `publish` (push or dry run).
"""
