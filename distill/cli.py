"""The `distill` command line: a thin layer over the Python API.

It alone sets up logging and turns a `DistillError` into one line on stderr (plus the hint) and exit code 2.
Each subcommand is a `_add_<name>` function that registers its parser and handler.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distill.cli_generate import _add_generate, _add_merge
from distill.errors import DistillError

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _at_least(low: float, kind: type) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` that is not below `low` (argparse prints the one-line error)."""

    def number(text: str) -> Any:
        value = kind(text)  # a ValueError: argparse says "invalid number value"
        if math.isnan(value) or value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        return value

    return number


def _cmd_estimate(args: argparse.Namespace) -> int:
    from distill.config import load_config
    from distill.generation.estimate import estimate

    config = load_config(args.config)
    print(estimate(config, args.out, pilot=args.pilot, progress=not args.no_progress, force=args.force).format())
    return 0


def _add_estimate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimate", help="run a small pilot and project tokens, dollars, acceptance and time")
    p.add_argument("config", help="the YAML config")
    p.add_argument("--pilot", type=_at_least(1, int), default=10, help="conversations in the pilot (default 10)")
    p.add_argument("--out", help="run folder (default: outputs/<name>/); the full run resumes after the pilot")
    p.add_argument("--force", action="store_true", help="estimate into a run folder that holds a full run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_estimate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from distill.config import load_config
    from distill.validation.lint import format_report, lint_file

    config = load_config(args.config) if args.config else None
    if not Path(args.file).is_file():
        raise DistillError(f"{args.file}: no such file", hint="give a fine-tuning .jsonl file")
    report = lint_file(args.file, config, model=args.model, workers=args.workers)
    print(format_report(report, max_lines=args.max_lines))
    return 0 if report.ok else 1


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="lint a fine-tuning JSONL file (ours or anyone's); exit 1 if any line fails")
    p.add_argument("file", help="an OpenAI chat fine-tuning .jsonl file")
    p.add_argument("--config", help="the agent's config: its tools, schemas and max_steps are checked too")
    p.add_argument("--model", help="fine-tuning target for token limits (default: the config's, else gpt-4o-mini)")
    p.add_argument("--max-lines", type=_at_least(0, int), default=50, help="problems to print (default 50)")
    p.add_argument("--workers", type=_at_least(1, int), help="processes (default: one per core for large files)")
    p.set_defaults(handler=_cmd_validate)


def _cmd_export(args: argparse.Namespace) -> int:
    from distill.config import load_config
    from distill.generation.pipeline import reexport
    from distill.run_folder import default_run_dir

    config = load_config(args.config)
    run_dir = Path(args.run) if args.run else default_run_dir(config)
    result = reexport(config, run_dir)
    e = result.examples
    print(f"re-exported with no teacher call: {e['train']} train + {e['validation']} validation examples in {run_dir}/")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="rebuild a run's dataset files from its trajectories (no teacher call)")
    p.add_argument("config", help="the YAML config (its export/agent sections may have changed)")
    p.add_argument("--run", help="run folder (default: outputs/<name>/)")
    p.set_defaults(handler=_cmd_export)


def _cmd_eval(args: argparse.Namespace) -> int:
    from distill.config import load_config
    from distill.evaluation.evaluate import evaluate

    config = load_config(args.config)
    report = evaluate(
        config, args.model, run=args.run, questions=args.questions, n=args.n, base_url=args.base_url, out=args.out,
        few_shot=args.few_shot, temperature=args.temperature, max_tokens=args.max_tokens,
        concurrency=args.concurrency, progress=not args.no_progress, judge=args.judge,
    )
    print(report.table())
    for name, result in report.models.items():
        errors = result.to_dict()["call_errors"]
        if errors:
            print(f"warning: {name}: {sum(errors.values())} question(s) got no answer from the endpoint "
                  f"({', '.join(errors)}); check --base-url and the model id", file=sys.stderr)
    print(f"report: {report.out_dir}/report.json, report.md, failures/")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate models as the agent on held-out questions, side by side")
    p.add_argument("config", help="the YAML config (agent, tools)")
    p.add_argument("--model", action="append", required=True,
                   help="model id, or MODEL@URL for a model on its own endpoint; repeat to compare models")
    p.add_argument("--run", help="run folder: index, validation split (default: outputs/<name>/)")
    p.add_argument("--questions", help="questions file (.jsonl with question/reference/used_tool, or one a line)")
    p.add_argument("--n", type=_at_least(0, int), default=100, help="questions to use, the first N (default 100; 0: all)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else OpenAI)")
    p.add_argument("--out", help="report folder (default: RUN/eval/)")
    p.add_argument("--few-shot", type=_at_least(0, int), default=0, metavar="K",
                   help="insert K demonstrations from the run's train.jsonl after the system message (default 0)")
    p.add_argument("--temperature", type=_at_least(0.0, float), default=0.0, help="sampling temperature (default 0)")
    p.add_argument("--max-tokens", type=_at_least(1, int), default=512, help="per answer; hitting it is `truncated` (default 512)")
    p.add_argument("--concurrency", type=_at_least(1, int), default=4, help="questions in flight per model (default 4)")
    p.add_argument("--judge", action="store_true",
                   help="the config's judge grades each final answer (supported, answers), next to the token F1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_eval)


def _cmd_chat(args: argparse.Namespace) -> int:
    from distill.config import load_config
    from distill.evaluation.chat import chat

    config = load_config(args.config)
    return chat(config, args.model, question=args.question, run=args.run, base_url=args.base_url,
                temperature=args.temperature)


def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="talk to a model running as the LangChain agent over the run's documents")
    p.add_argument("config", help="the YAML config (agent, tools)")
    p.add_argument("--model", required=True, help="model id (e.g. a fine-tuned ft:... id)")
    p.add_argument("--question", help="ask one question and exit (default: interactive)")
    p.add_argument("--run", help="run folder whose index the retriever searches (default: outputs/<name>/)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else OpenAI)")
    p.add_argument("--temperature", type=_at_least(0.0, float), default=0.0, help="sampling temperature (default 0)")
    p.set_defaults(handler=_cmd_chat)


def _cmd_publish(args: argparse.Namespace) -> int:
    from distill.config import load_config
    from distill.publishing.publish import publish

    config = load_config(args.config) if args.config else None
    result = publish(args.run, args.repo, private=args.private, dry_run=args.dry_run, config=config,
                     preferences=not args.no_preferences)
    rows = ", ".join(f"{n} {split}" for split, n in result.rows.items())
    if result.dry_run is not None:
        print(f"dry run: wrote {', '.join(result.files)} ({rows} rows) to {result.dry_run}/; nothing was pushed")
        print(f"check it with: python -c \"import datasets; print(datasets.load_dataset('{result.dry_run}'))\"")
    else:
        print(f"published {rows} rows and the dataset card to {result.url}")
    return 0


def _add_publish(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="push a run's train/validation data and a provenance card to the HF Hub")
    p.add_argument("run", help="the run folder (train.jsonl, validation.jsonl, manifest.json)")
    p.add_argument("--repo", required=True, help="the Hub dataset repo, OWNER/NAME")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its own)")
    p.add_argument("--dry-run", metavar="DIR", help="write exactly what would be pushed to DIR; push nothing")
    p.add_argument("--config", help="a config whose publish: section (license, tags) to use (default: the run's)")
    p.add_argument("--no-preferences", action="store_true", help="leave out the run's preference pairs (DPO config)")
    p.set_defaults(handler=_cmd_publish)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from distill.finetuning.finetune import finetune

    try:
        result = finetune(
            args.run,
            model=args.model,
            suffix=args.suffix,
            epochs=args.epochs,
            wait=args.wait,
            cancel=args.cancel,
            new=args.new,
            estimate_only=args.estimate,
            method=args.method,
            beta=args.beta,
            base_url=args.base_url,
            price=args.price_per_1m,
            echo=lambda line: print(line, flush=True),
        )
    except KeyboardInterrupt:
        print(
            f"\nstopped watching; the job keeps running on the service. `distill finetune {args.run} --wait` "
            f"watches it again, `distill finetune {args.run} --cancel` cancels it",
            file=sys.stderr,
        )
        return 130
    if args.estimate:  # an estimate succeeds whatever the recorded job's status
        return 0
    if result.status == "cancelled" and not args.cancel:
        print(f"distill: the recorded job {result.job_id} was cancelled", file=sys.stderr)
        return 1
    return 0


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="start, watch, resume or cancel an OpenAI fine-tuning job for a run")
    p.add_argument("run", help="the run folder; the job is recorded in RUN/finetune.json")
    p.add_argument("--model", help="base model to fine-tune (default: the run's export.model)")
    p.add_argument("--suffix", help="up to 64 characters added to the fine-tuned model's name")
    p.add_argument("--epochs", type=_at_least(1, int), help="training epochs (default: the service's; estimated by its rule)")
    p.add_argument("--wait", action="store_true", help="stream the job's events until it ends (Ctrl-C stops watching)")
    p.add_argument("--cancel", action="store_true", help="cancel the recorded job")
    p.add_argument("--new", action="store_true", help="start another job even though one is recorded")
    p.add_argument("--estimate", action="store_true", help="lint and show tokens and cost only; no key, no upload")
    p.add_argument("--method", choices=["supervised", "dpo"],
                   help="supervised (train.jsonl, default) or dpo (preferences.train.jsonl: export.preferences)")
    p.add_argument("--beta", type=float, help="DPO beta (with --method dpo; default: the service's)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else OpenAI)")
    p.add_argument("--price-per-1m", type=_at_least(0.0, float), metavar="USD",
                   help="training price per 1M tokens (default: table)")
    p.set_defaults(handler=_cmd_finetune)


def _cmd_train(args: argparse.Namespace) -> int:
    from distill.training.train import train

    try:
        result = train(args.run, base=args.base, out=args.out, lora=not args.full, epochs=args.epochs, lr=args.lr,
                       max_steps=args.max_steps, max_tokens=args.max_tokens, grad_accum=args.grad_accum,
                       save_steps=args.save_steps, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("\ninterrupted; the same command resumes from the last checkpoint", file=sys.stderr)
        return 130
    f = result.figures
    skipped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in f["data"]["skipped"].items() if n) or "none"
    print(f"trained {f['data']['examples']} examples ({skipped} skipped) for {f['steps']} steps in {f['seconds']:.0f} s "
          f"({f['tokens_per_second']} tokens/s), final loss {f['final_loss']}: {result.out_dir}/ (train.json)")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune an open model on a run's train.jsonl on this machine (transformers)")
    p.add_argument("run", help="the run folder (its train.jsonl) or a .jsonl file")
    p.add_argument("--base", required=True, help="the model: a local folder, a .gguf file or a Hub id")
    p.add_argument("--out", help="model folder to write (default: RUN/student/)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--lora", action="store_true", help="train LoRA adapters, merged into the saved model (default)")
    mode.add_argument("--full", action="store_true", help="train every weight")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the data (default 1)")
    p.add_argument("--lr", type=float, help="learning rate (default 2e-4 with LoRA, 5e-5 full)")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides --epochs)")
    p.add_argument("--max-tokens", type=int, help="skip (and count) longer examples (default: the model's context)")
    p.add_argument("--grad-accum", type=int, default=8, help="examples per optimizer step, micro-batch 1 (default 8)")
    p.add_argument("--save-steps", type=int, default=25, help="checkpoint every N steps, and at the end (default 25)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_train)


def _cmd_report(args: argparse.Namespace) -> int:
    from distill.reporting.report import write_report

    result = write_report(args.run, examples=args.examples)
    c = result.figures["run"].get("conversations", {})
    print(
        f"wrote {result.html} and {result.json} ({c.get('accepted', 0)}/{c.get('requested', 0)} conversations "
        f"accepted, {result.figures['duplicates']['dropped']} duplicates dropped)"
    )
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write RUN/report.html (charts, examples; self-contained) and RUN/report.json")
    p.add_argument("run", help="the run folder (manifest.json, trajectories.jsonl, rejected.jsonl, train/validation)")
    p.add_argument("--examples", type=_at_least(0, int), default=3, help="accepted and rejected conversations to show (default 3)")
    p.set_defaults(handler=_cmd_report)


_COMMANDS = [
    _add_generate, _add_merge, _add_validate, _add_export, _add_eval, _add_chat, _add_publish, _add_finetune,
    _add_report, _add_estimate, _add_train,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="distill",
        description="Turn documents and a YAML description of an agent's tools into fine-tuning data.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `distill` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.handler(args)
    except DistillError as exc:
        print(f"distill: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("distill: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early, e.g. `distill validate big.jsonl | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except sqlite3.OperationalError as exc:  # the run's ledger database: a full disk, a read-only or locked file
        print(f"distill: error: cannot write the run folder's ledger (ledger.sqlite): {exc}\nhint: free disk space "
              "(or fix the folder's permissions) and rerun: every answer stored so far is kept", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine, not distill: a full disk, a read-only folder (run_folder names most)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"distill: error: cannot complete `distill {args.command}`:{where}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
