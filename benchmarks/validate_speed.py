"""`distill validate` speed beside the OpenAI cookbook's format checks, on the same large file.

Usage: python benchmarks/validate_speed.py [--lines 60000] [--format langchain-chat|openai-tools|both]
                                           [--file FILE.jsonl] [--keep DIR] [--workers 1 2] [--repeat 1] [--code DIR]

Without --file it builds a realistic file per agent format (in a temporary folder, or in --keep DIR, where a file
built before, `FORMAT-LINES.jsonl`, is used again instead of rebuilt): a run of the offline teacher over corpus/ with
configs/multi_tool_agent.yaml (every stage on), whose train.jsonl (about 1,800 distinct conversations) is replicated
to --lines lines. Every copy after the first is made new where a real run's lines differ (the question, each tool
input but the schema-checked Calculator's, each observation and each answer carry a copy number), so caches only gain
from what really repeats in such files: the system prompt, the tool list and LangChain's prompt templates.

Each measurement runs in a fresh Python process (imports done before the clock starts, caches cold, as in a real
`distill validate` run) and prints lines/s:

- the cookbook: "Data preparation and analysis for chat model fine-tuning" (openai-cookbook,
  examples/Chat_finetuning_data_prep.ipynb) as written: load every line with json.loads, its 7 format-error counts,
  missing system/user warnings, the token counts of every example (num_tokens_from_messages) and of its assistant
  messages, their distributions (numpy), the over-16,385 count and the epoch/billed-token estimate. Two changes, both
  said here: the tokenizer is bpe-openai (the project's: tiktoken downloads its encodings at first use and fails
  offline), with the encoding `distill validate` uses for the target model (o200k_base for gpt-4o-mini), and
  non-string values (`weight`, `tool_calls`, a null content) are skipped by the token counter, where the
  cookbook's `encoding.encode(value)` crashes on them.
- `distill validate` (`distill.validation.lint.lint_file` + `format_report`, the whole CLI path but argument
  parsing), with --workers processes (1 = in-process).

Beside wall-clock lines/s it prints lines per CPU-second (the process's and its workers' user + system time): on a
shared machine the wall clock moves with the load, CPU time much less, so that is the figure to compare versions by.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "multi_tool_agent.yaml"
SCHEMA_CHECKED = "calculator"  # its input must match a pattern: left as generated


# -- the file ---------------------------------------------------------------------------------------------------------


def _run(agent_format: str, work: Path, conversations: int) -> Path:
    from distill.config import load_config
    from distill.generation.pipeline import generate

    config = load_config(CONFIG)
    config = config.model_copy(
        update={
            "teacher": config.teacher.model_copy(update={"provider": "offline"}),
            "agent": config.agent.model_copy(update={"format": agent_format}),
            "generation": config.generation.model_copy(update={"conversations": conversations}),
        }
    )
    if agent_format == "openai-tools":  # function names must be letters, digits, _ or - for the service
        tools = [t.model_copy(update={"name": t.name.lower().replace(" ", "_")}) for t in config.tools]
        config = config.model_copy(update={"tools": tools})
    result = generate(config, work / f"run-{agent_format}", progress=False, fresh=True)
    return result.train


def _tagged_blob(content: str, tag: str) -> str:
    from distill.formats.langchain_actions import check_action, render_action

    verdict = check_action(content, None)
    if not verdict.ok or verdict.action is None or verdict.action.action.lower() == SCHEMA_CHECKED:
        return content
    return render_action(verdict.action.action, verdict.action.action_input + tag)


def _tagged(example: dict[str, Any], copy: int) -> dict[str, Any]:
    """A copy of one line made new where lines of a real run differ (see the module docstring)."""
    if copy == 0:
        return example
    tag = f" (copy {copy})"
    messages = []
    for m in example["messages"]:
        m = dict(m)
        content = m.get("content")
        if m.get("role") != "system" and isinstance(content, str):
            if m.get("role") == "assistant" and content.lstrip().startswith("```json"):
                m["content"] = _tagged_blob(content, tag)
            else:
                m["content"] = content + tag
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                fn = call["function"]
                if fn["name"].lower() != SCHEMA_CHECKED:
                    args = json.loads(fn["arguments"])
                    key = next((k for k, v in args.items() if isinstance(v, str)), None)
                    if key is not None:
                        args[key] += tag
                    fn = {**fn, "arguments": json.dumps(args, ensure_ascii=False)}
                calls.append({**call, "function": fn})
            m["tool_calls"] = calls
        messages.append(m)
    return {**example, "messages": messages}


def build_file(agent_format: str, lines: int, work: Path) -> Path:
    source = _run(agent_format, work, 2000)
    base = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = work / f"{agent_format}-{lines}.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(json.dumps(_tagged(base[i % len(base)], i // len(base)), ensure_ascii=False) + "\n")
    return out


# -- the cookbook's checks (bpe-openai for tiktoken; non-string values skipped by the token counter) ----------------


def cookbook(path: Path, model: str) -> dict[str, Any]:
    import numpy as np

    from distill.tokens import encoding_for

    encoding = encoding_for(model)

    with open(path, encoding="utf-8") as f:
        dataset = [json.loads(line) for line in f]

    format_errors: dict[str, int] = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1

    def num_tokens_from_messages(messages: list[dict[str, Any]], tokens_per_message: int = 3,
                                 tokens_per_name: int = 1) -> int:
        num_tokens = 0
        for message in messages:
            num_tokens += tokens_per_message
            for key, value in message.items():
                if not isinstance(value, str):
                    continue  # the cookbook's encode(value) crashes on weight, tool_calls and null content
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += tokens_per_name
        num_tokens += 3
        return num_tokens

    def num_assistant_tokens_from_messages(messages: list[dict[str, Any]]) -> int:
        num_tokens = 0
        for message in messages:
            if message["role"] == "assistant" and isinstance(message.get("content"), str):
                num_tokens += len(encoding.encode(message["content"]))
        return num_tokens

    def distribution(values: list[int]) -> tuple[float, ...]:
        return (np.min(values), np.max(values), np.mean(values), np.median(values),
                np.quantile(values, 0.1), np.quantile(values, 0.9))

    n_missing_system = n_missing_user = 0
    n_messages, convo_lens, assistant_message_lens = [], [], []
    for ex in dataset:
        messages = ex["messages"]
        if not any(message["role"] == "system" for message in messages):
            n_missing_system += 1
        if not any(message["role"] == "user" for message in messages):
            n_missing_user += 1
        n_messages.append(len(messages))
        convo_lens.append(num_tokens_from_messages(messages))
        assistant_message_lens.append(num_assistant_tokens_from_messages(messages))
    stats = [distribution(v) for v in (n_messages, convo_lens, assistant_message_lens)]
    n_too_long = sum(length > 16385 for length in convo_lens)

    max_tokens_per_example, target_epochs, min_epochs, max_epochs = 16385, 3, 1, 25
    min_target_examples, max_target_examples = 100, 25000
    n_epochs = target_epochs
    n_train_examples = len(dataset)
    if n_train_examples * target_epochs < min_target_examples:
        n_epochs = min(max_epochs, min_target_examples // n_train_examples)
    elif n_train_examples * target_epochs > max_target_examples:
        n_epochs = max(min_epochs, max_target_examples // n_train_examples)
    billing = sum(min(max_tokens_per_example, length) for length in convo_lens)
    return {"lines": len(dataset), "errors": dict(format_errors), "too_long": n_too_long, "epochs": n_epochs,
            "billing_tokens": billing, "tokens": int(sum(convo_lens)), "stats": len(stats)}


def distill_validate(path: Path, model: str, workers: int) -> dict[str, Any]:
    import inspect

    from distill.validation.lint import format_report, lint_file

    if "workers" in inspect.signature(lint_file).parameters:
        report = lint_file(path, model=model, workers=workers)
    elif workers == 1:  # the validator before it had worker processes
        report = lint_file(path, model=model)
    else:
        return {}
    text = format_report(report)
    return {"lines": report.lines, "ok": report.ok_lines, "problems": len(report.problems),
            "tokens": sum(report.token_counts), "report_chars": len(text)}


def _cpu() -> float:
    """CPU seconds of this process and its finished children (worker processes): a figure the load does not move."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _measure(which: str, path: Path, model: str, workers: int) -> None:
    """In a fresh process: import, then time one pass; print one JSON line."""
    import numpy  # noqa: F401  (imports before the clock)

    from distill.tokens import encoding_for
    from distill.validation import lint

    lint._markers()
    encoding_for(model)
    started, cpu = time.perf_counter(), _cpu()
    out = cookbook(path, model) if which == "cookbook" else distill_validate(path, model, workers)
    out["seconds"] = time.perf_counter() - started
    out["cpu"] = _cpu() - cpu
    print(json.dumps(out))


CODE = [REPO]  # the checkout whose `distill` is measured (--code)


def measure(which: str, path: Path, model: str, workers: int = 1) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(CODE[0])}
    cmd = [sys.executable, __file__, "--_measure", which, "--file", str(path), "--model", model,
           "--workers", str(workers)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"{which} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=60_000)
    parser.add_argument("--format", choices=["langchain-chat", "openai-tools", "both"], default="both")
    parser.add_argument("--file", type=Path, help="lint this file instead of building one")
    parser.add_argument("--keep", type=Path, help="build the files in this folder, and use again the ones found there")
    parser.add_argument("--model", default="gpt-4o-mini-2024-07-18")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="measure each this many times; the best is shown")
    parser.add_argument("--code", type=Path, help="measure the distill of this checkout (e.g. main's, for 'before')")
    parser.add_argument("--_measure", choices=["cookbook", "distill"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    CODE[0] = (args.code or REPO).resolve()
    if args._measure:
        _measure(args._measure, args.file, args.model, args.workers[0])
        return

    work = args.keep or Path(tempfile.mkdtemp(prefix="distill-validate-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.file:
        files = [args.file]
    else:
        formats = ["langchain-chat", "openai-tools"] if args.format == "both" else [args.format]
        kept = [work / f"{f}-{args.lines}.jsonl" for f in formats]
        files = [k if k.is_file() else build_file(f, args.lines, work) for f, k in zip(formats, kept, strict=True)]
        print("files: " + ", ".join(str(f) for f in files))
    print(f"cores: {os.cpu_count()}, load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for path in files:
        size = path.stat().st_size / 1e6
        book = min((measure("cookbook", path, args.model) for _ in range(args.repeat)), key=lambda r: r["seconds"])
        print(f"{path.name}: {book['lines']} lines, {size:,.0f} MB")
        book_rate = book["lines"] / book["seconds"]
        book_cpu = book["lines"] / book["cpu"]
        print(f"  cookbook checks (1 process)     : {book['seconds']:6.2f} s  {book_rate:8,.0f} lines/s  "
              f"{book_cpu:8,.0f} lines/CPU-s  (format errors counted: {sum(book['errors'].values())})")
        for workers in args.workers:
            ours = min((measure("distill", path, args.model, workers) for _ in range(args.repeat)),
                       key=lambda r: r.get("seconds", 0))
            if "lines" not in ours:
                print(f"  distill validate ({workers} processes): not supported by this version")
                continue
            rate = ours["lines"] / ours["seconds"]
            cpu_rate = ours["lines"] / ours["cpu"]
            print(f"  distill validate ({workers} process{'es' if workers > 1 else '  '}): {ours['seconds']:6.2f} s  "
                  f"{rate:8,.0f} lines/s  {cpu_rate:8,.0f} lines/CPU-s  = {rate / book_rate:4.1f}x the cookbook "
                  f"({cpu_rate / book_cpu:4.1f}x per CPU-second)  "
                  f"({ours['ok']} ok, {ours['problems']} problems, {ours['tokens']:,} tokens)")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
