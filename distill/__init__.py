"""distill: documents + a YAML description of an agent's tools -> fine-tuning data for a cheaper student model.

The public Python API; heavy modules are imported when a function is first called, never at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distill.config import Config
    from distill.eval_report import EvalReport
    from distill.lint import LintReport
    from distill.pipeline import GenerateResult

__all__ = ["load_config", "generate", "validate", "evaluate"]
__version__ = "0.1.0"


def load_config(path: Any) -> Config:
    """Read and check a YAML config; raises ConfigError naming the file, the key and the fix."""
    from distill.config import load_config as _load

    return _load(path)


def generate(config: Config | str, out: Any = None, *, progress: bool = True) -> GenerateResult:
    """Run the pipeline for a config (or a config path); returns paths and counts."""
    from distill.pipeline import generate as _generate

    if not hasattr(config, "tools"):
        config = load_config(config)
    return _generate(config, out, progress=progress)


def validate(path: Any, config: Config | str | None = None, *, model: str | None = None) -> LintReport:
    """Lint a fine-tuning JSONL file; `report.ok` is True when every line passes."""
    from distill.lint import lint_file

    if config is not None and not hasattr(config, "tools"):
        config = load_config(config)
    return lint_file(path, config, model=model)


def evaluate(config: Config | str, models: Any, **options: Any) -> EvalReport:
    """Evaluate one or more models (an id or a list) as the agent on held-out questions; writes RUN/eval/ (or `out=`)
    and returns the report (`report.models[m].to_dict()["format_adherence"]`, `report.table()`). Options: run,
    questions, n, base_url, out, few_shot, temperature, max_tokens, concurrency, progress."""
    from distill.evaluate import evaluate as _evaluate

    if not hasattr(config, "tools"):
        config = load_config(config)
    return _evaluate(config, [models] if isinstance(models, str) else list(models), **options)
