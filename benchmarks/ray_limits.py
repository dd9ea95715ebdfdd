"""Two Ray tasks of unequal length against one rate-limited endpoint: the limit divided between them, or shared.

Usage: python benchmarks/ray_limits.py [--rpm 6000] [--requests 600,200] [--concurrency 16] [--latency 0.05]
                                      [--announced]

The endpoint is benchmarks/teacher_throughput.py's (a separate process, fixed latency, a requests-per-minute limit
enforced per second, OpenAI's rate-limit headers). On a local Ray cluster of 2 CPUs, each task is distill's real
client path (`OpenAITeacher`: engine, SDK, ledger, meter) sending its share of the requests with `concurrency / 2`
in flight, as `generate --executor ray` runs its shards. Two set-ups:
- divided: each task configured with `rpm / 2` and its own limiter (what `--executor ray` did before);
- shared: each task configured with `rpm`, its starts leased from one SharedLimits actor (what it does now).
With `--announced` no rpm is configured: the limit is only what the endpoint's headers announce (and its 429s
teach), which each task alone learns in full (`alone`), or the actor once for both (`shared`).
Each prints the wall time from the first request to the last answer, the sustained rate over that time against
the endpoint's limit, the rate while both tasks ran and after the shorter finished, the share answered 429, and the
leases (round trips to the actor) per request.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from teacher_throughput import _free_port, _get, serve


def task(port: int, n: int, offset: int, concurrency: int, rpm: int | None, limits: Any) -> dict[str, Any]:
    """One Ray task: `n` requests through OpenAITeacher; the wall-clock time of each answer."""
    import asyncio
    import contextlib
    import tempfile

    sys.path.insert(0, str(BENCH))
    sys.path.insert(0, str(BENCH.parent))
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    from teacher_throughput import _config, _request

    from distill.teachers.costs import Meter, price_for
    from distill.teachers.ledger import Ledger
    from distill.teachers.openai_teacher import OpenAITeacher
    from distill.teachers.shared_limits import ray_call, shared_pacing

    with tempfile.TemporaryDirectory() as tmp:
        with shared_pacing(ray_call(limits)) if limits is not None else contextlib.nullcontext():
            teacher = OpenAITeacher(_config(port, concurrency, rpm))
        teacher.use_run(Ledger.open(Path(tmp) / "ledger.sqlite"), Meter(price=price_for("gpt-4o")))
        done: list[float] = []

        async def go() -> None:
            queue = iter(range(offset, offset + n))

            async def worker() -> None:
                for i in queue:
                    await teacher.complete(_request(i))
                    done.append(time.time())

            try:
                await asyncio.gather(*(worker() for _ in range(2 * concurrency)))
            finally:
                await teacher.aclose()

        cpu = time.process_time()
        asyncio.run(go())
        return {"done": done, "cpu": time.process_time() - cpu, "leases": getattr(teacher.engine.limiter, "leases", 0)}


def run(name: str, port: int, args: argparse.Namespace, shared: bool) -> None:
    import ray

    from distill.teachers.shared_limits import SharedLimits

    _get(port, "/reset")
    sizes = [int(x) for x in args.requests.split(",")]
    limits = ray.remote(num_cpus=0)(SharedLimits).remote() if shared else None
    rpm = None if args.announced else args.rpm if shared else args.rpm // len(sizes)
    remote = ray.remote(num_cpus=1, max_retries=0)(task)
    refs = [remote.remote(port, n, sum(sizes[:i]), args.concurrency // len(sizes), rpm, limits)
            for i, n in enumerate(sizes)]
    results = ray.get(refs)
    if limits is not None:
        ray.kill(limits)
    stats = _get(port, "/stats")
    first, ends = stats["first"], [max(r["done"]) for r in results]
    last, short = max(ends), min(ends)
    total = sum(len(r["done"]) for r in results)
    both = sum(1 for r in results for t in r["done"] if t <= short)
    after = total - both
    limit = args.rpm / 60
    leases = sum(r["leases"] for r in results)
    print(f"{name:8s} {total} requests in {last - first:5.2f} s: {total / (last - first):6.1f}/s "
          f"({total / (last - first) / limit:4.0%} of the {limit:.0f}/s limit); both running "
          f"{both / (short - first):6.1f}/s, after the shorter finished "
          f"{after / max(last - short, 1e-9):6.1f}/s; 429s {stats['limited'] / max(1, stats['requests']):.1%}; "
          f"leases per request {leases / total:.2f}; task CPU {sum(r['cpu'] for r in results) / total * 1000:.2f} "
          f"ms/request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=int, default=6000)
    parser.add_argument("--requests", default="600,200", help="requests of each task, comma-separated")
    parser.add_argument("--concurrency", type=int, default=16, help="of the run (each task gets its share)")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--announced", action="store_true", help="configure no rpm: the endpoint's headers say it")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    port = _free_port()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(port, args.latency, args.rpm, True, ready), daemon=True)
    server.start()
    ready.wait(10)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OPENAI_API_KEY": "sk-bench"}})
    try:
        print(f"load average {os.getloadavg()[0]:.2f}; endpoint {args.rpm} rpm, latency {args.latency * 1000:.0f} ms; "
              f"tasks of {args.requests} requests, concurrency {args.concurrency}")
        run("alone" if args.announced else "divided", port, args, shared=False)
        run("shared", port, args, shared=True)
    finally:
        ray.shutdown()
        server.terminate()


if __name__ == "__main__":
    main()
