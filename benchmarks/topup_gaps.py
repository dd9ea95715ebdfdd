"""How much of a rate-limited endpoint's ceiling a whole `distill generate` with the mix top-up holds, first to last
request.

Usage: python benchmarks/topup_gaps.py [--conversations 600] [--rpm 3000] [--latency 0.1] [--concurrency 16] [--judge]

The endpoint is benchmarks/teacher_throughput.py's (a separate process: fixed latency, the RPM limit enforced per
second as a token bucket holding one second of requests), answering like a teacher: question requests get questions,
a tool question gets a search call and then a final answer, and two out of three small-talk answers break the format
(rejected), so `direct` falls short of its mix and the run tops it up, round after round. Everything is decided by the
request's content, so the run is the same every time. With --judge the judge stage is on (one request per accepted
conversation, every score 5). The run is distill's real path (`generate`, the OpenAI teacher,
the ledger, every stage). Printed: requests, top-up rounds, the time from the first to the last admitted request, and
the share of the ceiling min(rpm / 60, concurrency / latency) held over it: (admitted - one second of burst) /
(ceiling x that time); the gaps longer than 0.25 s without an admitted request are listed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

from teacher_throughput import _ANSWER, _free_port, _get, serve

REPO = Path(__file__).resolve().parent.parent
WORDS = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "glacier", "harbor", "iris", "jasper", "kelp",
         "lagoon", "mesa", "nectar", "opal", "prairie", "quartz", "reef", "sierra", "tundra", "umber", "valley"]


def _action(tool: str, text: str) -> str:
    return "```json\n" + json.dumps({"action": tool, "action_input": text}) + "\n```"


def answer(raw: bytes) -> bytes:
    """A teacher's answer, decided by the request's content only."""
    body = json.loads(raw)
    messages = body["messages"]
    digest = int(hashlib.sha256(raw).hexdigest()[:12], 16)
    if (body.get("response_format") or {}).get("json_schema", {}).get("name") == "verdict":  # --judge
        scores = {c: {"score": 5, "reason": "Fine."} for c in ("supported", "answers", "answerable", "tool_choice")}
        content = json.dumps(scores)
    elif body.get("response_format"):
        prompt = messages[1]["content"]
        n = 2 if "several user messages" in prompt else 1
        words = [WORDS[(digest >> (5 * i)) % len(WORDS)] for i in range(6)]
        if "without any tool" in prompt:
            text = [f"Small talk {words[0]} {words[1]} {words[2]} #{digest % 100000}"]
        else:
            text = [f"Where is {words[0]} {words[1]} {words[2]} {words[3]} {i} #{digest % 100000}?" for i in range(n)]
        content = json.dumps({"questions": text})
    else:
        last = messages[-1]["content"]
        if last.startswith("TOOL RESPONSE"):
            content = _action("Final Answer", "Found it in the documents.")
        elif "Small talk" in last:
            content = _action("Final Answer", "Hello!")
            content = content if digest % 3 == 0 else "Sure! " + content  # text outside the block: rejected
        else:
            question = next((line for line in last.splitlines() if line.startswith("Where is")), "the docs")
            content = _action("Vector Search Tool", question)
    reply = json.loads(json.dumps(_ANSWER))
    reply["choices"][0]["message"]["content"] = content
    return json.dumps(reply).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=600)
    parser.add_argument("--rpm", type=int, default=3000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--judge", action="store_true", help="the judge stage on (judge.enabled: true)")
    args = parser.parse_args()

    from distill.config import config_from_dict
    from distill.generation.pipeline import generate

    ctx = multiprocessing.get_context("spawn")
    port, ready = _free_port(), ctx.Event()
    proc = ctx.Process(target=serve, args=(port, args.latency, args.rpm, True, ready, answer), daemon=True)
    proc.start()
    ready.wait(30)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = config_from_dict({
                "name": "gaps",
                "tools": [{"name": "Vector Search Tool", "description": "Searches the docs.", "kind": "retriever"}],
                "sources": [{"path": str(REPO / "corpus")}],
                "teacher": {"provider": "openai", "model": "gpt-4o", "base_url": f"http://127.0.0.1:{port}/v1",
                            "concurrency": args.concurrency, "rpm": args.rpm, "max_retries": 5, "timeout_s": 30},
                "generation": {"conversations": args.conversations, "seed": 0,
                               "mix": {"tool": 0.5, "direct": 0.3, "multi_turn": 0.2}},
                "export": {"validation_fraction": 0.0},
                "judge": {"enabled": args.judge},
            }, file=str(Path(tmp) / "gaps.yaml"), base_dir=Path(tmp))
            os.environ.setdefault("OPENAI_API_KEY", "sk-local-bench")
            started = time.time()
            result = generate(config, Path(tmp) / "run", progress=False)
            wall = time.time() - started
            manifest = json.loads(result.manifest.read_text())
        stats = _get(port, "/stats")
    finally:
        proc.terminate()
    admitted = sorted(stats["admitted"])
    span = admitted[-1] - admitted[0]
    ceiling = min(args.rpm / 60, args.concurrency / args.latency)
    held = (len(admitted) - ceiling) / (ceiling * span)  # the bucket starts full: one second of burst left out
    gaps = [(round(b - admitted[0], 2), round(b - a, 2)) for a, b in itertools.pairwise(admitted) if b - a > 0.25]
    top = manifest["top_up"]
    print(f"endpoint: latency {args.latency * 1000:.0f} ms, {args.rpm} rpm enforced per second; client concurrency "
          f"{args.concurrency}; load average {os.getloadavg()[0]:.2f}")
    print(f"conversations: {args.conversations} asked, {manifest['conversations']['requested']} requested "
          f"({top['extra_conversations']} extra in {len(top['rounds'])} top-up round(s), stopped: {top['stopped']}); "
          f"rounds decided after (conversations counted): {[r.get('after') for r in top['rounds']]}")
    print(f"requests admitted: {len(admitted)} (429s: {stats['limited']}); first to last: {span:.1f} s; "
          f"generate wall {wall:.1f} s")
    print(f"ceiling {ceiling:.0f}/s; held {100 * held:.1f}% of it from the first to the last request (target >= 97%)")
    print(f"gaps > 0.25 s without an admitted request (at s, length s): {gaps or 'none'}")
    per_s = [0] * (int(span) + 1)
    for t in admitted:
        per_s[int(t - admitted[0])] += 1
    print(f"admitted per second: {' '.join(map(str, per_s))}")


if __name__ == "__main__":
    sys.exit(main())
