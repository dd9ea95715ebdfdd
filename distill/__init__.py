"""distill: documents + a YAML description of an agent's tools -> fine-tuning data for a cheaper student model.

The public Python API, one function per command. Heavy modules are imported when a function is first called,
never at import. The rooms behind it, in data-flow order: `config` -> `generation/` (sources, index, questions,
rollouts through `agent/` and `teachers/`, export) -> `validation/` -> `publishing/`, `finetuning/`, `training/` ->
`evaluation/` -> `reporting/`; `formats/` renders and reads the canonical trajectory record for each agent runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import version as _version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distill.config import Config
    from distill.evaluation.report import EvalReport
    from distill.finetuning.finetune import FinetuneResult
    from distill.generation.estimate import Estimate
    from distill.generation.pipeline import GenerateResult
    from distill.publishing.publish import PublishResult
    from distill.reporting.report import ReportResult
    from distill.training.train import TrainResult
    from distill.validation.report import LintReport

__all__ = ["estimate", "evaluate", "finetune", "generate", "load_config", "publish", "report", "train", "validate"]
__version__ = _version("distill")

PathLike = str | Path


def load_config(path: PathLike) -> Config:
    """Read and check a YAML config; raises ConfigError naming the file, the key and the fix."""
    from distill.config import load_config as _load

    return _load(path)


def _config(config: Config | PathLike) -> Config:
    from distill.config import Config

    return config if isinstance(config, Config) else load_config(config)


def generate(
    config: Config | PathLike,
    out: PathLike | None = None,
    *,
    progress: bool = True,
    fresh: bool = False,
    from_ledger: bool = False,
    focus: PathLike | None = None,
    focus_budget: int | None = None,
) -> GenerateResult:
    """Run the pipeline for a config (or a config path); returns paths and counts. It resumes what the run folder
    holds unless `fresh` (run every conversation again); `from_ledger` answers every request from the ledger;
    `focus` (an eval report of this run) adds up to `focus_budget` conversations aimed at the student's failures."""
    from distill.generation.pipeline import generate as _generate

    return _generate(_config(config), out, progress=progress, fresh=fresh, from_ledger=from_ledger, focus=focus,
                     focus_budget=focus_budget)


def estimate(config: Config | PathLike, out: PathLike | None = None, *, pilot: int = 10,
             progress: bool = True) -> Estimate:
    """Run a pilot of `pilot` conversations in the run folder and project tokens, dollars, acceptance and time for
    the full run (`print(e.format())`); `distill generate` on the same folder resumes after the pilot."""
    from distill.generation.estimate import estimate as _estimate

    return _estimate(_config(config), out, pilot=pilot, progress=progress)


def validate(path: PathLike, config: Config | PathLike | None = None, *, model: str | None = None) -> LintReport:
    """Lint a fine-tuning JSONL file; `report.ok` is True when every line passes."""
    from distill.validation.lint import lint_file

    return lint_file(path, _config(config) if config is not None else None, model=model)


def evaluate(
    config: Config | PathLike,
    models: str | Sequence[str],
    *,
    run: PathLike | None = None,
    questions: PathLike | None = None,
    n: int | None = 100,
    base_url: str | None = None,
    out: PathLike | None = None,
    few_shot: int = 0,
    temperature: float = 0.0,
    max_tokens: int = 512,
    concurrency: int = 4,
    progress: bool = False,
    judge: bool = False,
) -> EvalReport:
    """Evaluate one or more models (an id or a list) as the agent on held-out questions; writes RUN/eval/ (or `out`)
    and returns the report (`report.models[m].to_dict()["format_adherence"]`, `report.table()`); `judge`: the
    config's judge grades each final answer (`metrics["judge"]`)."""
    from distill.evaluation.evaluate import evaluate as _evaluate

    return _evaluate(
        _config(config), [models] if isinstance(models, str) else list(models), run=run, questions=questions, n=n,
        base_url=base_url, out=out, few_shot=few_shot, temperature=temperature, max_tokens=max_tokens,
        concurrency=concurrency, progress=progress, judge=judge,
    )


def publish(run: PathLike, repo: str, *, private: bool = False, dry_run: PathLike | None = None,
            token: str | None = None, config: Config | PathLike | None = None) -> PublishResult:
    """Push a run folder's train/validation data and a provenance card to the Hub dataset repo `repo` (OWNER/NAME);
    `dry_run=DIR` writes exactly those files to DIR instead. `token` defaults to HF_TOKEN or the stored login;
    `config` (whose `publish:` section applies) defaults to the run's."""
    from distill.publishing.publish import publish as _publish

    return _publish(run, repo, private=private, dry_run=dry_run, token=token,
                    config=_config(config) if config is not None else None)


def finetune(
    run: PathLike,
    *,
    model: str | None = None,
    suffix: str | None = None,
    epochs: int | None = None,
    wait: bool = False,
    cancel: bool = False,
    new: bool = False,
    estimate_only: bool = False,
    base_url: str | None = None,
    price: float | None = None,
    echo: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Start (or re-attach to) the OpenAI fine-tuning job of a run folder, recorded in RUN/finetune.json; `wait`
    watches it to the end, `cancel` cancels it, `new` starts another, `estimate_only` lints and prices only."""
    from distill.finetuning.finetune import finetune as _finetune

    return _finetune(run, model=model, suffix=suffix, epochs=epochs, wait=wait, cancel=cancel, new=new,
                     estimate_only=estimate_only, base_url=base_url, price=price, echo=echo)


def train(
    run: PathLike,
    *,
    base: str,
    out: PathLike | None = None,
    lora: bool = True,
    epochs: float = 1.0,
    lr: float | None = None,
    max_steps: int | None = None,
    max_tokens: int | None = None,
    grad_accum: int = 8,
    save_steps: int = 25,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune the open model `base` (a folder, a .gguf file or a Hub id) on RUN/train.jsonl on this machine (LoRA,
    merged, unless `lora=False`); writes the model folder `out` (default RUN/student/) with train.json. Only weight-1
    assistant messages are trained; lines over `max_tokens` (default: the model's context) are skipped and counted.
    The same call resumes from the last checkpoint. Needs the extra: pip install 'distill[train]'."""
    from distill.training.train import train as _train

    return _train(run, base=base, out=out, lora=lora, epochs=epochs, lr=lr, max_steps=max_steps,
                  max_tokens=max_tokens, grad_accum=grad_accum, save_steps=save_steps, progress=progress)


def report(run: PathLike, *, examples: int = 3) -> ReportResult:
    """Write RUN/report.html (self-contained: inline SVG charts, a few example conversations) and RUN/report.json;
    returns their paths and the figures."""
    from distill.reporting.report import write_report

    return write_report(run, examples=examples)
