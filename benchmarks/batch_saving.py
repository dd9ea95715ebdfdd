"""The saving of batch mode on the demo config (configs/retrieval_agent.yaml) at list prices, measured on the fake.

Usage: python benchmarks/batch_saving.py [CONFIG]   (default configs/retrieval_agent.yaml)

Runs the config twice against the project's fake OpenAI server (tests/fake_openai.py), online and in batch mode,
with a teacher that answers like a well-behaved agent (questions, one search, a final answer) and reports usage as
real token counts (tiktoken, the teacher model's encoding) of each request's messages and of each answer. Prints the
requests, tokens, waves and batches, the dollars of each run at the list prices of distill's table, and the saving.
Both runs export the same dataset (checked). No network, no key.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from distill.config import load_config
from distill.formats.langchain_actions import render_action
from distill.generation.pipeline import generate
from distill.tokens import count_text
from tests.fake_openai import FakeBatchAPI, FakeOpenAI, FakeResponse, chat_completion


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    seed, model, messages = body["seed"], body["model"], body["messages"]
    if body.get("response_format"):
        turns = 2 if "several user messages" in messages[1]["content"] else 1
        text = json.dumps({"questions": [f"How does distill handle case {seed % 97}, point {i}?" for i in range(turns)]})
    elif messages[-1]["content"].startswith("TOOL RESPONSE"):
        text = render_action("Final Answer", f"According to the documentation, case {seed % 97} is handled by "
                                             "checking every step strictly before it is used as training data.")
    else:
        text = render_action("Vector Search Tool", f"distill case {seed % 97}")
    prompt = sum(count_text(str(m.get("content") or ""), model) + 4 for m in messages) + 3
    completion = count_text(text, model)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return chat_completion(text, usage=usage, model=model)


def main(argv: list[str]) -> int:
    config_path = Path(argv[0]) if argv else REPO / "configs" / "retrieval_agent.yaml"
    server = FakeOpenAI().start()
    server.route("POST", r"/v1/chat/completions",
                 lambda r: FakeResponse(body=json.dumps(_answer(json.loads(r.body))).encode()))
    FakeBatchAPI(server, _answer)
    os.environ["OPENAI_API_KEY"], os.environ["OPENAI_BASE_URL"] = "sk-fake", server.base_url
    config = load_config(config_path)
    config.teacher.provider, config.teacher.batch_poll_s = "openai", 0.001
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("online", "batch"):
            started = time.perf_counter()
            result = generate(config, Path(tmp) / mode, progress=False, batch=mode == "batch")
            manifest = json.loads(result.manifest.read_text())
            out[mode] = {"manifest": manifest, "seconds": time.perf_counter() - started,
                         "train": (Path(tmp) / mode / "train.jsonl").read_bytes()}
        same = out["online"]["train"] == out["batch"]["train"]
    server.stop()
    usage = out["online"]["manifest"]["teacher_usage"]["run_folder"]
    tokens_in = sum(s["input_tokens"] for s in usage["by_stage"].values())
    tokens_out = sum(s["output_tokens"] for s in usage["by_stage"].values())
    requests = sum(s["responses"] for s in usage["by_stage"].values())
    online_usd = usage["usd"]
    batch = out["batch"]["manifest"]["batch"]
    print(f"config: {config_path.relative_to(REPO) if config_path.is_relative_to(REPO) else config_path} "
          f"({config.generation.conversations} conversations, teacher {config.teacher.model})")
    print(f"requests: {requests}, input tokens: {tokens_in:,}, output tokens: {tokens_out:,}")
    print(f"online: ${online_usd:.4f} at list prices")
    print(f"batch:  ${batch['usd']:.4f} in {batch['waves']} waves, {len(batch['batches'])} batches "
          f"({batch['rows']['answered']} rows answered)")
    print(f"saving: ${online_usd - batch['usd']:.4f} ({1 - batch['usd'] / online_usd:.0%} of the teacher bill); "
          f"same train.jsonl: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
