"""A pool of teacher endpoints (`teacher.endpoints`, or `teacher.base_url` as a list): one engine, several servers.

For several replicas of a self-hosted teacher, or several keys. `PoolEngine` is the engine of
distill/teachers/engine.py (the same retries, budget, ledger and breaker) with one lane per endpoint: its own
clients, its own limiter (configured, announced and learned limits are each endpoint's; a `RateLimiter`, in a Ray
task the run's shared one: distill/teachers/shared_limits.py), its own cap of
requests in flight (`endpoints[].concurrency`, under the pool's `teacher.concurrency`) and its own health.

- Routing: a request goes to the least-loaded healthy endpoint (requests assigned to it, waiting or in flight, over
  its concurrency; ties to the one picked less often), so a slower or rate-limited endpoint gets less.
- Health: `_DOWN_AFTER` connection errors, timeouts or 5xx in a row take an endpoint out for a cool-down of
  `10 x teacher.backoff_s` (at most 60 s); then one request probes it: an answer brings it back, a failure takes it
  out again. A request that failed on one endpoint goes at once to another healthy one (no retry used up, up to
  `_DOWN_AFTER` times per endpoint); with none healthy it waits and retries as a one-endpoint engine does.
- The ledger key comes from the request body (distill/teachers/openai_teacher.py), never from the endpoint: a run
  resumes against another pool, or a single endpoint, from the same ledger.
- The run stops as "cannot reach" only when no endpoint ever answered and each refused connections
  `_UNREACHABLE_ATTEMPTS` times; a 401 / 403 / 404 from any endpoint stops it as it stops a one-endpoint run.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from distill.config import TeacherConfig
from distill.endpoint import resolve_endpoint
from distill.errors import TeacherError
from distill.pool_config import EndpointConfig, pool_entries
from distill.teachers.engine import _UNREACHABLE_ATTEMPTS, CLIENT_CONNECTIONS, Engine, _Attempt, build_clients
from distill.teachers.limits import Pacer
from distill.teachers.shared_limits import pacer

__all__ = ["Lane", "PoolEngine", "build_pool"]

_DOWN_AFTER = 3  # failures in a row that take an endpoint out
_MAX_COOL_S = 60.0
_FAILED_ON: contextvars.ContextVar[Lane | None] = contextvars.ContextVar("failed_on", default=None)  # per request


class Lane:
    """One endpoint of a pool: its clients, its limiter, its slots and its health."""

    def __init__(self, url: str, clients: list[Any], limiter: Pacer, concurrency: int) -> None:
        self.url, self.clients, self.limiter = url, clients, limiter
        self.per = CLIENT_CONNECTIONS if len(clients) > 1 else concurrency
        self.concurrency = min(concurrency, self.per * len(clients))
        self.free = list(range(self.concurrency - 1, -1, -1))
        self.slots: asyncio.Semaphore | None = None
        self.assigned = 0  # requests routed here, waiting or in flight
        self.picked = 0  # requests routed here in all
        self.answered = 0  # HTTP answers (any status but 5xx)
        self.failures = 0  # connection errors, timeouts and 5xx in a row
        self.unreached = 0  # refused connections in a row, before any answer
        self.down_until: float | None = None  # out until then (clock time); None: in
        self.probing = False  # the one request that tests an endpoint back in is in flight
        self.outages = 0

    def describe(self) -> dict[str, Any]:
        """This endpoint's limits, traffic and health (for the manifest)."""
        return {"base_url": self.url, **self.limiter.describe(), "requests": self.picked, "outages": self.outages,
                "up": self.down_until is None}


class PoolEngine(Engine):
    """The engine over several endpoints (see the module doc)."""

    def __init__(self, config: TeacherConfig, lanes: list[Lane], *, model: str, **kwargs: Any) -> None:
        super().__init__(config, [c for lane in lanes for c in lane.clients], model=model, **kwargs)
        self.lanes = lanes
        self.limiter = lanes[0].limiter
        self._slot_count = config.concurrency  # the pool's cap; each lane has its own below it
        self._cool_s = min(_MAX_COOL_S, 10 * config.backoff_s)

    # -- routing ----------------------------------------------------------------------------------------------------
    def _pick(self) -> Lane:
        now, avoid = self._clock(), _FAILED_ON.get()  # a request that just failed over avoids where it failed
        _FAILED_ON.set(None)
        due = [lane for lane in self.lanes if lane.down_until is not None and not lane.probing
               and now >= lane.down_until and lane is not avoid]
        if due:  # the cool-down is over: one request tests it
            lane = min(due, key=lambda x: x.down_until or 0.0)
            lane.probing = True
            return lane
        up = [lane for lane in self.lanes if lane.down_until is None and lane is not avoid]
        if up:
            return min(up, key=lambda x: (x.assigned / x.concurrency, x.picked))
        return min(self.lanes, key=lambda x: x.down_until or 0.0)  # all out: the first back in

    async def _attempt(self, blob: bytes, tokens: int) -> _Attempt:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._slot_count)
        async with self._slots:
            lane = self._pick()
            lane.assigned += 1
            lane.picked += 1
            attempt: _Attempt | None = None
            try:
                if lane.slots is None:
                    lane.slots = asyncio.Semaphore(lane.concurrency)
                async with lane.slots:
                    slot = lane.free.pop()
                    try:
                        await lane.limiter.acquire(tokens)
                        if self.stopped:
                            raise self.stopped
                        attempt = await self._post(lane.clients[slot // lane.per], blob)
                    finally:
                        lane.free.append(slot)
            finally:
                lane.assigned -= 1
                if attempt is None:  # stopped or cancelled before it was sent: a probe is still owed
                    lane.probing = False
        attempt.lane = lane
        self._health(lane, attempt)
        return attempt

    def _health(self, lane: Lane, attempt: _Attempt) -> None:
        probe, lane.probing = lane.probing, False
        if attempt.status is not None and attempt.status < 500:  # it answers (a 429 or a 4xx is an answer)
            lane.answered += 1
            lane.failures = lane.unreached = 0
            lane.down_until = None
            return
        lane.failures += 1
        lane.unreached += attempt.unreached
        if probe or (lane.down_until is None and lane.failures >= _DOWN_AFTER):
            lane.outages += not probe
            lane.down_until = self._clock() + self._cool_s

    # -- the engine's hooks -------------------------------------------------------------------------------------------
    def _observe(self, attempt: _Attempt) -> None:
        lane = attempt.lane if attempt.lane is not None else self.lanes[0]
        lane.limiter.observe(attempt.status, attempt.headers, attempt.sent_at)

    def _failover(self, attempt: _Attempt, failovers: int) -> bool:
        others = [lane for lane in self.lanes if lane is not attempt.lane and lane.down_until is None]
        if not others or failovers >= _DOWN_AFTER * len(self.lanes):
            return False
        _FAILED_ON.set(attempt.lane)
        return True

    def _unreachable(self, attempt: _Attempt) -> str | None:
        if any(lane.answered for lane in self.lanes):
            return None
        if any(lane.unreached < _UNREACHABLE_ATTEMPTS for lane in self.lanes):
            return None
        urls = ", ".join(lane.url for lane in self.lanes)
        return (f"stopped: cannot reach any endpoint of the pool ({urls}; each refused {_UNREACHABLE_ATTEMPTS}+ "
                f"connections in a row; {attempt.describe()})")

    def limits(self) -> dict[str, Any]:
        """The pool's limits: each endpoint's, and their sum in force."""
        each = [lane.describe() for lane in self.lanes]
        rates = [e["rpm_in_force"] for e in each]
        return {"rpm_in_force": round(sum(rates), 1) if all(rates) else None,
                "responses_429": sum(e["responses_429"] for e in each), "endpoints": each}


def build_pool(config: TeacherConfig, *, model: str, **kwargs: Any) -> PoolEngine | None:
    """The engine of a pool configured in `teacher` (None when it has one endpoint); keys from each `api_key_env`."""
    entries = pool_entries(config.base_url, config.endpoints)
    if entries is None:
        return None
    timing: dict[str, Any] = {name: kwargs[name] for name in ("clock", "sleep") if name in kwargs}
    lanes = [_lane(config, model, i, entry, timing) for i, entry in enumerate(entries)]
    return PoolEngine(config, lanes, model=model, **kwargs)


def _lane(config: TeacherConfig, model: str, index: int, entry: EndpointConfig, timing: dict[str, Any]) -> Lane:
    where = f"teacher.endpoints[{index}]" if config.endpoints else f"teacher.base_url[{index}]"
    endpoint = resolve_endpoint(
        entry.base_url, key_required=True, url_option=where, needed_by="teacher.provider is openai",
        alternative="or set teacher.provider: offline", error=TeacherError,
        key_env=entry.api_key_env or "OPENAI_API_KEY",
    )
    concurrency = min(entry.concurrency or config.concurrency, config.concurrency)
    settings = config.model_copy(update={"concurrency": concurrency})
    limiter = pacer(f"{model} @ {entry.base_url}", entry.rpm or config.rpm, entry.tpm or config.tpm, **timing)
    return Lane(entry.base_url, build_clients(settings, endpoint.api_key, endpoint.base_url), limiter, concurrency)
