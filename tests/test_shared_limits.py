"""The limits shared by the tasks of a Ray run (distill/teachers/shared_limits.py), in one process: the tasks' limiters
lease their starts from one SharedLimits, so together they keep the endpoint's rate, a task that stops leaves its
share to the others, and what one task hears from the endpoint paces the others. (The Ray run against a rate-limited
endpoint is in tests/test_shards.py.)"""

from __future__ import annotations

import asyncio
import time

from distill.teachers.limits import RateLimiter
from distill.teachers.shared_limits import LeasedLimiter, SharedLimits, pacer, shared_pacing

LANE = "gpt-4o @ http://127.0.0.1:1/v1"


def _direct(actor: SharedLimits):
    """The actor's methods called in this process, each a round trip of one turn of the loop."""
    async def call(method: str, *args):
        await asyncio.sleep(0.0005)
        return getattr(actor, method)(*args)
    return call


async def _demand(limiter: LeasedLimiter, until: float, starts: list[float], workers: int = 8) -> None:
    """`workers` requests always waiting for a start until `until`."""
    async def worker() -> None:
        while time.monotonic() < until:
            await limiter.acquire(100)
            starts.append(time.monotonic())
            await asyncio.sleep(0.002)  # the request

    await asyncio.gather(*(worker() for _ in range(workers)))


def test_tasks_share_the_rate_and_a_task_that_stops_leaves_its_share() -> None:
    actor = SharedLimits()
    rate = 200  # per second: 12,000 rpm for the run
    a, b = (LeasedLimiter(_direct(actor), LANE, rate * 60, None) for _ in range(2))
    got_a: list[float] = []
    got_b: list[float] = []

    async def run() -> float:
        t0 = time.monotonic()
        await asyncio.gather(_demand(a, t0 + 0.8, got_a), _demand(b, t0 + 0.4, got_b))
        return t0

    t0 = asyncio.run(run())

    def between(starts: list[float], lo: float, hi: float) -> int:
        return sum(1 for s in starts if t0 + lo <= s < t0 + hi)

    together = between(got_a, 0.1, 0.4) + between(got_b, 0.1, 0.4)
    assert together <= rate * 0.3 + 0.2 * rate  # both at once keep the one rate (plus a burst and a slice)
    assert between(got_a, 0.1, 0.4) >= 0.25 * together and between(got_b, 0.1, 0.4) >= 0.25 * together
    alone = between(got_a, 0.5, 0.8)
    assert alone >= 0.7 * rate * 0.3  # B stopped: A gets the whole rate, not its half
    assert len(got_a) + len(got_b) <= rate * 0.8 + 0.2 * rate
    assert a.leases + b.leases < (len(got_a) + len(got_b)) / 2  # starts leased in batches, not one round trip each
    assert actor.limits()[LANE]["rpm_in_force"] == rate * 60


def test_what_one_task_hears_from_the_endpoint_paces_the_others() -> None:
    actor = SharedLimits()
    a, b = (LeasedLimiter(_direct(actor), LANE, None, None) for _ in range(2))

    async def run() -> tuple[float, float]:
        await a.acquire()
        a.observe(200, {"x-ratelimit-limit-requests": "600", "X-Request-Id": "abc"}, sent_at=time.monotonic())
        await asyncio.sleep(0.01)  # the announcement is on its way to the actor at once
        started = time.monotonic()
        for _ in range(4):
            await b.acquire()
        paced = time.monotonic() - started
        a.observe(429, {"retry-after-ms": "300"}, sent_at=time.monotonic())
        await asyncio.sleep(0.01)
        started = time.monotonic()
        await b.acquire()
        return paced, time.monotonic() - started

    paced, held = asyncio.run(run())
    assert paced >= 0.2  # B never saw the header: 600 rpm (10/s) reached it through the actor
    assert held >= 0.2  # the Retry-After of A's 429 holds B too
    assert b.describe()["rpm_from_headers"] == 600 and b.describe()["responses_429"] == 0
    assert a.describe()["responses_429"] == 1 and actor.limits()[LANE]["responses_429"] == 1


def test_limiters_are_local_outside_a_ray_run() -> None:
    assert type(pacer(LANE, 60, None)) is RateLimiter  # the local engine's limiter, no actor
    with shared_pacing(_direct(SharedLimits())):
        inside = pacer(LANE, 60, None)
    assert isinstance(inside, LeasedLimiter) and inside.configured_rpm == 60
    assert type(pacer(LANE, 60, None)) is RateLimiter


def test_tokens_per_minute_are_shared_and_charged_as_used() -> None:
    """Starts leased ahead are booked at the task's average request; what a request really counts is charged later,
    so small and large requests together keep the run's tokens per minute."""
    actor = SharedLimits()
    a, b = (LeasedLimiter(_direct(actor), LANE, None, 60_000) for _ in range(2))  # 1,000 tokens/s for the run
    used: list[tuple[float, int]] = []

    async def worker(limiter: LeasedLimiter, sizes: tuple[int, ...], until: float) -> None:
        n = 0
        while time.monotonic() < until:
            tokens = sizes[n % len(sizes)]
            await limiter.acquire(tokens)
            used.append((time.monotonic(), tokens))
            n += 1

    async def run() -> float:
        t0 = time.monotonic()
        await asyncio.gather(*(worker(a, (20, 180, 40), t0 + 0.6) for _ in range(3)),
                             *(worker(b, (100,), t0 + 0.6) for _ in range(3)))
        return t0

    t0 = asyncio.run(run())
    late = sum(tokens for at, tokens in used if t0 + 0.2 <= at < t0 + 0.6)
    assert late <= 1000 * 0.4 + 300  # the rate, plus a burst and the largest request
    assert late >= 0.6 * 1000 * 0.4
    assert actor.limits()[LANE]["tpm_configured"] == 60_000


def test_each_endpoint_of_a_pool_has_its_own_shared_lane(make_config, monkeypatch) -> None:
    from distill.teachers.pool import build_pool

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    config = make_config(teacher={"provider": "openai", "model": "gpt-4o", "rpm": 600, "endpoints": [
        {"base_url": "http://127.0.0.1:1/v1", "rpm": 120}, {"base_url": "http://127.0.0.1:2/v1"}]})
    with shared_pacing(_direct(SharedLimits())):
        pool = build_pool(config.teacher, model="gpt-4o")
    assert pool is not None
    lanes = [lane.limiter for lane in pool.lanes]
    assert all(isinstance(x, LeasedLimiter) for x in lanes)
    assert [(x.lane, x.configured_rpm) for x in lanes] == [  # type: ignore[union-attr]
        ("gpt-4o @ http://127.0.0.1:1/v1", 120), ("gpt-4o @ http://127.0.0.1:2/v1", 600)]  # each its own limit
