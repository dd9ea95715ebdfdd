"""The `distill generate` and `distill merge` subcommands: one run on this machine, one shard of a run (`--shard I/N`),
and the merge of shards into one run folder (distill/generation/shards.py)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from distill.errors import DistillError, RunStopped

if TYPE_CHECKING:
    from distill.config import Config
    from distill.generation.pipeline import GenerateResult

__all__ = ["_add_generate", "_add_merge"]


def _shard_arg(text: str) -> object:
    """An argparse type: I/N with 1 <= I <= N."""
    from distill.generation.shards import Shard, ShardError

    try:
        return Shard.parse(text)
    except ShardError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _refuse_single_run_flags(args: argparse.Namespace, mode: str, hint: str, *, fresh: bool = False) -> None:
    """A DistillError when flags that only a whole run on this machine takes are given with `mode`."""
    given = [flag for flag, on in (("--focus", args.focus), ("--batch", args.batch), ("--no-wait", args.no_wait),
                                   ("--cancel-batches", args.cancel_batches), ("--from-ledger", args.from_ledger),
                                   ("--fresh", fresh and args.fresh)) if on]
    if given:
        raise DistillError(f"{mode} cannot be combined with {', '.join(given)}", hint=hint)


def _cmd_shard(args: argparse.Namespace) -> int:
    from distill.config import load_config
    from distill.generation.shards import generate_shard
    from distill.run_folder import RunFolder, default_run_dir

    _refuse_single_run_flags(args, "--shard", "run the shards, merge them, then give that flag to `distill generate "
                             "CONFIG --out RUN`")
    config = load_config(args.config)
    shard = args.shard
    out = args.out or RunFolder(default_run_dir(config)).shards / f"{shard.index}-of-{shard.count}"
    result = generate_shard(config, shard, out, progress=not args.no_progress, fresh=args.fresh)
    o = result.outcomes
    print(f"shard {shard.label}: {sum(o.values())} conversations ({o['accepted']} accepted, {o['rejected']} rejected, "
          f"{o['failed']} failed) in {result.run_dir}/\nwhen all {shard.count} shards are done: `distill merge "
          f"SHARD_DIRS... --out RUN`, then `distill generate {args.config} --out RUN` (top-up and export)")
    return 0


def _on_ray(args: argparse.Namespace, config: Config) -> GenerateResult:
    from distill.generation.ray_executor import generate_on_ray

    _refuse_single_run_flags(args, "--executor ray", "give that flag to `distill generate CONFIG --out RUN` after the "
                             "Ray run", fresh=True)
    return generate_on_ray(config, args.out, address=args.address, shards=args.shards, progress=not args.no_progress)


def _cmd_generate(args: argparse.Namespace) -> int:
    from distill.config import load_config
    from distill.generation.pipeline import generate
    from distill.generation.summary import nothing_exported

    if args.shard is not None:
        return _cmd_shard(args)
    if args.executor != "ray" and (args.address or args.shards):
        raise DistillError("--address and --shards go with --executor ray", hint="add --executor ray")
    config = load_config(args.config)
    try:
        if args.executor == "ray":
            result = _on_ray(args, config)
        else:
            result = generate(
                config, args.out, progress=not args.no_progress, fresh=args.fresh, from_ledger=args.from_ledger,
                focus=args.focus, focus_budget=args.focus_budget,
                batch=args.batch, no_wait=args.no_wait, cancel_batches=args.cancel_batches,
            )
    except KeyboardInterrupt:
        out = f" --out {args.out}" if args.out else ""
        print(f"\ninterrupted; finished conversations and paid answers are kept: `distill generate {args.config}{out}`"
              " resumes", file=sys.stderr)
        return 130
    except RunStopped as exc:
        from distill.generation.waves import BATCHES_PENDING_EXIT, BatchesPending

        if isinstance(exc, BatchesPending):  # batch mode: batches in flight are not a failure (exit 75: rerun later)
            print(f"{exc.message}; {exc.hint}", file=sys.stderr)
            return BATCHES_PENDING_EXIT
        if exc.reason != "interrupted":  # a first Ctrl-C that drained the requests in flight (generation/interrupt.py)
            raise
        print(f"distill: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
        return 130
    c, e = result.conversations, result.examples
    print(f"{c['accepted']}/{c['requested']} conversations accepted ({c['rejected']} rejected, {c['failed']} failed): "
          f"{e['train']} train + {e['validation']} validation examples in {result.run_dir}/ "
          f"(train.jsonl, validation.jsonl, rejected.jsonl, manifest.json)")
    empty = nothing_exported(result)
    if empty:
        print(f"distill: error: {empty}", file=sys.stderr)
        return 1
    return 0


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="run the whole pipeline for a config and write the run folder")
    p.add_argument("config", help="the YAML config")
    p.add_argument("--out", help="run folder (default: outputs/<name>/; with --shard: outputs/<name>/shards/I-of-N/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fresh", action="store_true", help="run every conversation again (the ledger still answers)")
    p.add_argument(
        "--from-ledger", action="store_true", help="rebuild the run from its ledger only: zero teacher calls"
    )
    p.add_argument("--focus", metavar="EVAL_REPORT",
                   help="add conversations aimed at what the student failed in this eval report of the run")
    p.add_argument("--focus-budget", type=int, metavar="N",
                   help="at most N focused conversations (default: twice the failures, at least 10)")
    p.add_argument("--batch", action="store_true", help="teacher.mode: batch: the Batch API in waves, half price")
    p.add_argument("--no-wait", action="store_true", help="batch mode: submit the next wave and exit (rerun to advance)")
    p.add_argument("--cancel-batches", action="store_true",
                   help="batch mode: cancel the run's batches in flight (their answers are kept) and exit")
    p.add_argument("--shard", type=_shard_arg, metavar="I/N",
                   help="run shard I of N (every N-th plan; no top-up, no export); then `distill merge`")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="ray: run the shards as Ray tasks, merge them here and finish the run")
    p.add_argument("--address", metavar="ADDR", help="--executor ray: the Ray cluster (default: start a local one)")
    p.add_argument("--shards", type=int, metavar="N", help="--executor ray: shards (default: the cluster's CPUs)")
    p.set_defaults(handler=_cmd_generate)


def _cmd_merge(args: argparse.Namespace) -> int:
    from distill.generation.shards import merge_shards

    result = merge_shards(args.shards, args.out)
    o = result.outcomes
    config = result.config or "CONFIG"
    print(f"merged {result.shards} shards: {result.conversations} conversations ({o['accepted']} accepted, "
          f"{o['rejected']} rejected, {o['failed']} failed), {result.ledger_rows} ledger rows, in {result.run_dir}/\n"
          f"next: `distill generate {config} --out {result.run_dir}` plans the mix top-up for the whole run and "
          "exports (the shards' conversations are not run again)")
    return 0


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="gather the shards of a run (generate --shard I/N) into one run folder")
    p.add_argument("shards", nargs="+", metavar="SHARD_DIR", help="the shard folders, every shard of the run once")
    p.add_argument("--out", required=True, help="the merged run folder (new or empty, or an earlier merge)")
    p.set_defaults(handler=_cmd_merge)
