"""distill: documents + a YAML description of an agent's tools -> fine-tuning data for a cheaper student model.

The public Python API; heavy modules are imported when a function is first called, never at import.
"""

from __future__ import annotations

from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distill.config import Config
    from distill.evaluation.report import EvalReport
    from distill.finetuning.finetune import FinetuneResult
    from distill.generation.estimate import Estimate
    from distill.generation.pipeline import GenerateResult
    from distill.publishing.publish import PublishResult
    from distill.reporting.report import ReportResult
    from distill.validation.lint import LintReport

__all__ = ["estimate", "evaluate", "finetune", "generate", "load_config", "publish", "report", "validate"]
__version__ = _version("distill")


def load_config(path: Any) -> Config:
    """Read and check a YAML config; raises ConfigError naming the file, the key and the fix."""
    from distill.config import load_config as _load

    return _load(path)


def generate(config: Config | str, out: Any = None, *, progress: bool = True, **options: Any) -> GenerateResult:
    """Run the pipeline for a config (or a config path); returns paths and counts. It resumes what the run folder
    holds; options: fresh (run every conversation again), from_ledger (answer every request from the ledger)."""
    from distill.generation.pipeline import generate as _generate

    if not hasattr(config, "tools"):
        config = load_config(config)
    return _generate(config, out, progress=progress, **options)


def estimate(config: Config | str, out: Any = None, *, pilot: int = 10, progress: bool = True) -> Estimate:
    """Run a pilot of `pilot` conversations in the run folder and project tokens, dollars, acceptance and time for
    the full run (`print(e.format())`); `distill generate` on the same folder resumes after the pilot."""
    from distill.generation.estimate import estimate as _estimate

    if not hasattr(config, "tools"):
        config = load_config(config)
    return _estimate(config, out, pilot=pilot, progress=progress)


def validate(path: Any, config: Config | str | None = None, *, model: str | None = None) -> LintReport:
    """Lint a fine-tuning JSONL file; `report.ok` is True when every line passes."""
    from distill.validation.lint import lint_file

    if config is not None and not hasattr(config, "tools"):
        config = load_config(config)
    return lint_file(path, config, model=model)


def evaluate(config: Config | str, models: Any, **options: Any) -> EvalReport:
    """Evaluate one or more models (an id or a list) as the agent on held-out questions; writes RUN/eval/ (or `out=`)
    and returns the report (`report.models[m].to_dict()["format_adherence"]`, `report.table()`). Options: run,
    questions, n, base_url, out, few_shot, temperature, max_tokens, concurrency, progress."""
    from distill.evaluation.evaluate import evaluate as _evaluate

    if not hasattr(config, "tools"):
        config = load_config(config)
    return _evaluate(config, [models] if isinstance(models, str) else list(models), **options)


def publish(run: Any, repo: str, *, private: bool = False, dry_run: Any = None, **options: Any) -> PublishResult:
    """Push a run folder's train/validation data and a provenance card to the Hub dataset repo `repo` (OWNER/NAME);
    `dry_run=DIR` writes exactly those files to DIR instead. Options: token (default HF_TOKEN or the stored login),
    config (whose `publish:` section applies; default the run's)."""
    from distill.publishing.publish import publish as _publish

    config = options.get("config")
    if config is not None and not hasattr(config, "tools"):
        options["config"] = load_config(config)
    return _publish(run, repo, private=private, dry_run=dry_run, **options)


def finetune(run: Any, **options: Any) -> FinetuneResult:
    """Start (or re-attach to) the OpenAI fine-tuning job of a run folder, recorded in RUN/finetune.json. Options:
    model, suffix, epochs, wait, cancel, new, estimate_only, base_url, price, poll_interval, echo (e.g. print)."""
    from distill.finetuning.finetune import finetune as _finetune

    return _finetune(run, **options)


def report(run: Any, *, examples: int = 3) -> ReportResult:
    """Write RUN/report.html (self-contained: inline SVG charts, a few example conversations) and RUN/report.json;
    returns their paths and the figures."""
    from distill.reporting.report import write_report

    return write_report(run, examples=examples)
