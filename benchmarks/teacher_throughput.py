"""Teacher engine throughput against a local endpoint with fixed latency and an RPM limit enforced per second.

Usage: python benchmarks/teacher_throughput.py [--requests 1500] [--latency 0.1] [--concurrency 32] [--rpm 6000]

The endpoint (a separate process, so the client's CPU is measured alone) answers every chat completion after a fixed
latency, and enforces its requests-per-minute limit per second: a token bucket holding one second of requests
(rpm / 60), refilled continuously, the way OpenAI quantizes its limits. Over the limit it answers 429; with headers
on, like OpenAI (`x-ratelimit-limit-requests`, `-remaining-requests`, `-reset-requests` on every answer, and
`retry-after-ms` / `retry-after` on a 429); with headers off, like a self-hosted server, a bare 429.

The client is distill's real path: `OpenAITeacher` (the engine, the SDK, the ledger in SQLite, the meter) sending
requests the size of a rollout step (about 3 KB of messages, each unique, so the ledger never answers), `2 x
concurrency` workers as in `generate`. Each set-up prints sustained requests/s (steady state: from the 25 % to the
90 % completion) against the ceiling min(concurrency / latency, rpm / 60), the share of requests answered 429, the
requests answered (none may be lost), and the client's CPU seconds per 1,000 requests in the same steady state
(process time, the engine, SDK, event loop and ledger writes included). Then the time to the first request: from
starting a fresh Python process that builds a teacher, and from `complete()` in a warm process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

_ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": '```json\n{"action": "Final Answer", "action_input": "ok"}\n```'},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 750, "completion_tokens": 20, "total_tokens": 770},
}


# -- the endpoint ---------------------------------------------------------------------------------------------------
def serve(port: int, latency: float, rpm: int | None, headers: bool, ready: multiprocessing.Event,
          answer: Callable[[bytes], bytes] | None = None) -> None:
    """An OpenAI-compatible endpoint: fixed latency, an RPM limit enforced per second, counters at /stats (with the
    wall-clock time of every admitted request in `admitted`). `answer` (request body -> response body) replaces the
    fixed answer."""
    rate = rpm / 60 if rpm else None
    state: dict[str, Any] = {"tokens": rate or 0.0, "at": time.monotonic(), "requests": 0, "ok": 0, "limited": 0,
                             "first": None, "admitted": []}
    body = json.dumps(_ANSWER).encode()

    def take() -> float | None:
        """None when admitted, else the seconds until a request would be."""
        if rate is None:
            return None
        now = time.monotonic()
        state["tokens"] = min(rate, state["tokens"] + (now - state["at"]) * rate)
        state["at"] = now
        if state["tokens"] >= 1:
            state["tokens"] -= 1
            return None
        return (1 - state["tokens"]) / rate

    def limit_headers() -> list[str]:
        if not (headers and rate):
            return []
        remaining = int(state["tokens"] * 60)  # the bucket, in per-minute units
        reset = (rate - state["tokens"]) / rate
        return [f"x-ratelimit-limit-requests: {rpm}", f"x-ratelimit-remaining-requests: {remaining}",
                f"x-ratelimit-reset-requests: {reset * 1000:.0f}ms"]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                path = line.split()[1]
                length = 0
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                request = await reader.readexactly(length) if length else b""
                if path == b"/stats":
                    payload, status, extra = json.dumps(state).encode(), "200 OK", []
                elif path == b"/reset":
                    state.update(requests=0, ok=0, limited=0, first=None, tokens=rate or 0.0, at=time.monotonic(),
                                 admitted=[])
                    payload, status, extra = b"{}", "200 OK", []
                else:
                    state["requests"] += 1
                    state["first"] = state["first"] or time.time()
                    wait = take()
                    if wait is None:
                        state["admitted"].append(time.time())
                        await asyncio.sleep(latency)
                        state["ok"] += 1
                        payload = answer(request) if answer is not None else body
                        status, extra = "200 OK", limit_headers()
                    else:
                        state["limited"] += 1
                        payload = b'{"error": {"message": "Rate limit reached", "type": "requests"}}'
                        status, extra = "429 Too Many Requests", limit_headers()
                        if headers:
                            extra += [f"retry-after-ms: {wait * 1000:.0f}", f"retry-after: {math.ceil(wait)}"]
                head = [f"HTTP/1.1 {status}", "content-type: application/json", f"content-length: {len(payload)}", *extra]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=2048)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _get(port: int, path: str) -> dict:
    import urllib.request

    method = "POST" if path == "/reset" else "GET"
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)) as r:
        return json.loads(r.read())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the client -----------------------------------------------------------------------------------------------------
def _request(i: int):
    from distill.teachers.base import TeacherRequest

    system = "Assistant is a large language model trained by OpenAI. " * 28  # ~1.6 KB, like LangChain's PREFIX
    user = f"TOOLS\n------\n> Vector Search Tool: Searches the documents.\n\nUSER'S INPUT\n--------------------\n" \
           f"Question {i}: what does the documentation say about BM25 scoring? " + "context " * 90
    return TeacherRequest(
        stage="rollout",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        params={"temperature": 0.7, "max_tokens": 256, "stop": ["\nObservation:"], "seed": i},
    )


def _config(port: int, concurrency: int, rpm: int | None):
    from distill.config import config_from_dict

    return config_from_dict({
        "name": "bench",
        "tools": [{"name": "Vector Search Tool", "description": "Searches.", "kind": "retriever"}],
        "sources": [{"path": str(REPO / "corpus")}],
        "teacher": {"provider": "openai", "model": "gpt-4o", "base_url": f"http://127.0.0.1:{port}/v1",
                    "concurrency": concurrency, "rpm": rpm, "max_retries": 5, "timeout_s": 30},
    })


async def _drive(teacher, n: int, workers: int) -> list[tuple[float, float]]:
    done: list[tuple[float, float]] = []  # (wall clock, process CPU) at each completion
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await teacher.complete(_request(i))
            done.append((time.perf_counter(), time.process_time()))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done


def run_setup(name: str, port: int, args: argparse.Namespace, rpm_configured: int | None) -> dict:
    from distill.teachers.costs import Meter, price_for
    from distill.teachers.ledger import Ledger
    from distill.teachers.openai_teacher import OpenAITeacher

    _get(port, "/reset")
    config = _config(port, args.concurrency, rpm_configured)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = OpenAITeacher(config)
        ledger = Ledger.open(Path(tmp) / "ledger.sqlite")
        teacher.use_run(ledger, Meter(price=price_for("gpt-4o")))

        async def go() -> tuple[list[tuple[float, float]], float]:
            t0 = time.perf_counter()
            try:
                done = await _drive(teacher, args.requests, 2 * args.concurrency)
            finally:
                await teacher.aclose()
            return done, t0

        done, t0 = asyncio.run(go())
        stored = ledger.count(ok=True)
        ledger.close()
    stats = _get(port, "/stats")
    # steady state: from the 25 % to the 90 % completion (past the start-up burst, before the last stragglers)
    lo, hi = int(0.25 * len(done)), int(0.9 * len(done)) - 1
    sustained = (hi - lo) / (done[hi][0] - done[lo][0])
    cpu = (done[hi][1] - done[lo][1]) / (hi - lo)
    server_rate = args.rpm / 60 if args.rpm else math.inf
    ceiling = min(args.concurrency / args.latency, server_rate)
    return {
        "setup": name,
        "sustained": sustained,
        "overall": len(done) / (done[-1][0] - t0),
        "ceiling": ceiling,
        "share": sustained / ceiling,
        "limited": stats["limited"] / max(1, stats["requests"]),
        "answered": len(done),
        "stored": stored,
        "cpu_per_1000": cpu * 1000,
        "limits": teacher.engine.limiter.describe(),
    }


def first_request(port: int, args: argparse.Namespace) -> tuple[float, float]:
    """Seconds from spawning a Python process that builds a teacher to its first request at the endpoint; and from
    `complete()` in a warm process."""
    code = (
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(REPO / 'benchmarks')!r})\n"
        "from teacher_throughput import _config, _request\n"
        "from distill.teachers.openai_teacher import OpenAITeacher\n"
        f"teacher = OpenAITeacher(_config({port}, 8, None))\n"
        "async def go():\n"
        "    await teacher.complete(_request(0))\n"
        "    await teacher.aclose()\n"
        "asyncio.run(go())\n"
    )
    _get(port, "/reset")
    spawned = time.time()
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OPENAI_API_KEY": "sk-bench"})
    cold = _get(port, "/stats")["first"] - spawned

    from distill.teachers.openai_teacher import OpenAITeacher

    _get(port, "/reset")
    teacher = OpenAITeacher(_config(port, 8, None))

    async def go() -> float:
        started = time.time()
        await teacher.complete(_request(1))
        await teacher.aclose()
        return started

    started = asyncio.run(go())
    return cold, _get(port, "/stats")["first"] - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="requests per set-up")
    parser.add_argument("--latency", type=float, default=0.1, help="the endpoint's latency in seconds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rpm", type=int, default=6000, help="the endpoint's limit (enforced per second)")
    args = parser.parse_args()
    os.environ["OPENAI_API_KEY"] = "sk-bench-not-a-key"

    ctx = multiprocessing.get_context("spawn")
    servers = {}
    for headers in (True, False):
        port, ready = _free_port(), ctx.Event()
        proc = ctx.Process(target=serve, args=(port, args.latency, args.rpm, headers, ready), daemon=True)
        proc.start()
        ready.wait(30)
        servers[headers] = (port, proc)
    port_free, ready = _free_port(), ctx.Event()
    free = ctx.Process(target=serve, args=(port_free, args.latency, None, False, ready), daemon=True)
    free.start()
    ready.wait(30)

    setups = [
        ("rpm configured = the limit, no headers", servers[False][0], args.rpm),
        ("nothing configured, x-ratelimit headers", servers[True][0], None),
        ("nothing configured, no headers (429s only)", servers[False][0], None),
        ("rpm configured 2x too high, headers", servers[True][0], 2 * args.rpm),
        ("rpm configured 2x too high, no headers", servers[False][0], 2 * args.rpm),
    ]
    print(f"endpoint: latency {args.latency * 1000:.0f} ms, {args.rpm} rpm enforced per second "
          f"({args.rpm / 60:.0f}/s, burst 1 s); client: concurrency {args.concurrency}, {args.requests} requests each")
    print(f"{'set-up':<44} {'sustained':>10} {'ceiling':>8} {'share':>7} {'429s':>6} {'answered':>9} {'CPU s/1k':>9}")
    rows = [run_setup(name, port, args, rpm) for name, port, rpm in setups]
    saved_rpm, args.rpm = args.rpm, None
    rows.append(run_setup("no limit anywhere: concurrency-bound", port_free, args, None))
    args.rpm = saved_rpm
    for r in rows:
        lost = r["answered"] != args.requests or r["stored"] != args.requests
        print(f"{r['setup']:<44} {r['sustained']:>8.1f}/s {r['ceiling']:>6.0f}/s {r['share']:>6.1%} "
              f"{r['limited']:>6.1%} {r['answered']:>9}{' LOST' if lost else ''} {r['cpu_per_1000']:>9.2f}")
    cold, warm = first_request(servers[True][0], args)
    print(f"time to first request: {cold:.2f} s from process start (imports, config, teacher); "
          f"{warm * 1000:.1f} ms from complete() in a warm process")
    for _, proc in servers.values():
        proc.terminate()
    free.terminate()


if __name__ == "__main__":
    main()
