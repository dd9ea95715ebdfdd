"""Client CPU of a whole `distill generate` process against a local OpenAI-compatible endpoint, per 1,000 requests.

Usage: python benchmarks/generate_cpu.py [--conversations 500] [--latency 0.02] [--concurrency 32] [--profile]

The endpoint runs in a separate process (its CPU is not counted) and answers like a teacher: questions as structured
output (taken from the passage it is sent, so they differ), then a LangChain JSON action that searches, then a final
answer once a tool response is in the prompt. `distill generate` runs as a subprocess (`python -m distill.cli`,
every stage on: dedup, coverage, top-up); its user + system CPU comes from `os.wait4` on that process alone and is
divided by the requests the endpoint answered. The whole process is counted: interpreter start, imports, config,
every stage, the ledger. With --profile the same run also goes in-process under cProfile (top entries printed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from teacher_throughput import _ANSWER, _free_port, _get, serve

REPO = Path(__file__).resolve().parent.parent


def _action(action: str, action_input: str) -> str:
    return "```json\n" + json.dumps({"action": action, "action_input": action_input}) + "\n```"


def _answer(body: dict) -> str:
    """What a teacher would say to this request."""
    messages = body["messages"]
    if body.get("response_format"):
        user = messages[-1]["content"]
        n = int(re.search(r"Write exactly (\d+) user", user).group(1))
        passage = user.split('"""')[1].split()
        seed = body.get("seed", 0)
        words = [w.strip(".,:;()*#`") for w in passage if len(w) > 3][:40] or ["documents"]
        if "Conversation kind: direct" in user:
            return json.dumps({"questions": [f"Thanks a lot, that helped with case {seed}-{i}!" for i in range(n)]})
        return json.dumps({"questions": [
            f"What does the passage say about {words[(seed + 7 * i) % len(words)]} and "
            f"{words[(seed * 3 + i) % len(words)]}, case {seed}-{i}?" for i in range(n)]})
    last = messages[-1]["content"]
    if last.startswith("TOOL RESPONSE"):
        observed = last.split("\n", 3)[-1][:160].replace("\n", " ")
        return _action("Final Answer", f"According to the documents: {observed}")
    if "Thanks a lot" in last:
        return _action("Final Answer", "You are welcome!")
    return _action("Vector Search Tool", last[-80:].replace("\n", " "))


def _reply(raw: bytes) -> bytes:
    """The endpoint's answer (teacher_throughput.serve's `answer`): a chat completion carrying `_answer`."""
    reply = json.loads(json.dumps(_ANSWER))
    reply["choices"][0]["message"]["content"] = _answer(json.loads(raw))
    return json.dumps(reply).encode()


def _config_yaml(work: Path, port: int, conversations: int, concurrency: int) -> Path:
    import yaml

    data = {
        "name": "bench",
        "tools": [{"name": "Vector Search Tool", "description": "Searches the docs.", "kind": "retriever", "top_k": 3}],
        "sources": [{"path": str(REPO / "corpus")}],
        "teacher": {"provider": "openai", "model": "gpt-4o", "base_url": f"http://127.0.0.1:{port}/v1",
                    "concurrency": concurrency, "max_retries": 2, "timeout_s": 30},
        "generation": {"conversations": conversations, "seed": 0},
    }
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.02, help="the endpoint's latency in seconds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="also run in-process under cProfile")
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    port, ready = _free_port(), ctx.Event()
    proc = ctx.Process(target=serve, args=(port, args.latency, None, False, ready, _reply), daemon=True)
    proc.start()
    ready.wait(30)
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench-not-a-key", "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = _config_yaml(work, port, args.conversations, args.concurrency)
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", "import sys; from distill.cli import main; sys.exit(main())",
                                  "generate", str(config), "--out", str(work / "run"), "--no-progress"],
                                 env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        requests = _get(port, "/stats")["ok"]
        cpu = usage.ru_utime + usage.ru_stime
        manifest = json.loads((work / "run" / "manifest.json").read_text()) if (work / "run").exists() else {}
        load = os.getloadavg()
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (the machine is shared with other jobs)")
        print(f"`distill generate`: {args.conversations} conversations asked, exit {os.waitstatus_to_exitcode(status)}, "
              f"{requests} requests answered, wall {wall:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MB")
        print(f"client CPU (whole process, user {usage.ru_utime:.2f} + sys {usage.ru_stime:.2f} s): "
              f"{cpu:.2f} s  ->  {cpu / max(1, requests) * 1000:.2f} CPU-s per 1,000 requests")
        if manifest.get("conversations"):
            print(f"conversations: {manifest['conversations']}")
        if args.profile:
            import cProfile
            import pstats

            os.environ["OPENAI_API_KEY"] = "sk-bench-not-a-key"
            from distill.config import load_config
            from distill.generation.pipeline import generate

            cfg = load_config(config)
            profiler = cProfile.Profile()
            profiler.enable()
            generate(cfg, work / "run-profiled", progress=False)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    proc.terminate()


if __name__ == "__main__":
    sys.exit(main())
