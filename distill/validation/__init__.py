"""`distill validate`: lint any chat fine-tuning JSONL file (entry point: `lint.lint_file`)."""
