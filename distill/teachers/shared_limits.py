"""The endpoint limits of a `--executor ray` run, shared by its tasks: one actor paces each endpoint for all of them.

`SharedLimits` is the actor (distill/generation/ray_executor.py starts it with the run and passes it to every task).
It holds one `RateLimiter` (distill/teachers/limits.py) per lane, an endpoint and model, for the whole run: the
configured, announced and learned limits, the holds after a Retry-After and the GCRA timeline are the run's. In a
task, `shared_pacing(call)` makes the engines' limiters `LeasedLimiter`s that take their starts from the actor:

- Leases: a request that finds no leased start asks the actor for starts for every request of its task waiting then,
  plus a time slice (`SLICE_S`) of the task's recent rate (at most its part of a slice of the lane's rate, shared by
  the tasks that leased in the last `_ASKING_S`); the actor books them on the lane's timeline and answers their
  delays, and the task starts its requests then: one round trip (~1 ms) per batch, not per request. A start left
  unused `BURST_S` past its time is dropped. The rate goes to the tasks that ask: a task that finished or waits on its
  tools asks nothing and the others get its share at their next lease. Under no limit the actor answers "free": no
  lease for a slice (10 ms at first, doubling up to `SLICE_S` while the lane stays free).
- Tokens: the requests waiting are booked at their tokens, the starts leased ahead at the task's largest request of
  the last second; a request takes the smallest start booked for at least its size (none: it leases one), and what
  was booked beyond what it uses, or for a start left unused, is given back with the next lease.
- What the endpoint says: each answer's status and rate-limit headers go to the actor with the next lease and are
  replayed there at the time they arrived, so a limit announced to one task, or learned from the 429s of all of
  them, paces every task. A 429, a newly announced limit or a `remaining` of 0 with a reset is sent at once and voids
  the task's leased starts (its next lease comes after it); the other tasks learn it at their next lease.
- Concurrency is not shared: each task runs under its share of it (`ray_executor.divided`).

Outside a Ray run `pacer()` returns a plain RateLimiter: the engine's code path and cost are the local ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from distill.teachers.limits import BURST_S, Pacer, RateLimiter

__all__ = ["SLICE_S", "LeasedLimiter", "SharedLimits", "pacer", "ray_call", "shared_pacing"]

SLICE_S = 0.1  # a lease covers this much of the rate ahead
_FIRST_FREE_S = 0.01  # the first slice free of any limit; it doubles up to SLICE_S while the lane stays free
_MAX_AHEAD = 256
_ASKING_S = 0.5  # a task that leased this recently shares the rate leased ahead
_KEPT = ("x-ratelimit-", "retry-after")  # the headers a limiter reads
Call = Callable[..., Awaitable[Any]]  # call(method, *args): the actor's answer
Note = tuple[int | None, dict[str, str] | None, float, float]  # status, headers, answered and sent (seconds ago)
_SHARED: contextvars.ContextVar[Call | None] = contextvars.ContextVar("distill_shared_limits", default=None)


def pacer(lane: str, rpm: int | None, tpm: int | None, *, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> Pacer:
    """The limiter of one lane (`model @ url`): a RateLimiter, or under `shared_pacing` the run's shared one."""
    call = _SHARED.get()
    if call is None:
        return RateLimiter(rpm, tpm, clock=clock, sleep=sleep)
    return LeasedLimiter(call, lane, rpm, tpm, clock=clock, sleep=sleep)


@contextlib.contextmanager
def shared_pacing(call: Call) -> Iterator[None]:
    """Limiters made inside take their starts from the actor that `call` reaches."""
    token = _SHARED.set(call)
    try:
        yield
    finally:
        _SHARED.reset(token)


def ray_call(actor: Any) -> Call:
    """`call` for a Ray actor handle."""
    async def call(method: str, *args: Any) -> Any:
        return await getattr(actor, method).remote(*args)
    return call


class SharedLimits:
    """The actor: one RateLimiter per lane for all the tasks of a run (see the module doc)."""

    def __init__(self) -> None:
        self._lanes: dict[str, RateLimiter] = {}
        self._askers: dict[str, dict[str, float]] = {}  # lane -> task -> when it last leased
        self._now: float | None = None  # the clock while answers are replayed at the time they arrived
        self._last = float("-inf")

    def _clock(self) -> float:
        return self._now if self._now is not None else time.monotonic()

    def _lane(self, lane: str, rpm: int | None, tpm: int | None) -> RateLimiter:
        limiter = self._lanes.get(lane)
        if limiter is None:
            limiter = self._lanes[lane] = RateLimiter(rpm, tpm, clock=self._clock)
        return limiter

    def observe(self, lane: str, rpm: int | None, tpm: int | None, notes: list[Note]) -> None:
        """Replay a task's answers on the lane's limiter, each at the time it arrived."""
        limiter, base = self._lane(lane, rpm, tpm), time.monotonic()
        try:
            for status, headers, answered, sent in notes:
                self._now = self._last = max(self._last, base - answered)  # never back in time
                limiter.observe(status, headers, base - sent)
        finally:
            self._now = None

    def lease(self, lane: str, task: str, rpm: int | None, tpm: int | None, wanted: list[int], ahead: int,
              tokens: int, owed: int, notes: list[Note]) -> tuple[list[float], bool, dict[str, Any]]:
        """Starts for the requests `wanted` (their tokens each) and up to `ahead` more of `tokens` (at most a slice of
        the rate shared by the tasks that leased in the last `_ASKING_S`): (their delays, whether no limit is in
        force after the last, the limits in force)."""
        self.observe(lane, rpm, tpm, notes)
        now, askers = time.monotonic(), self._askers.setdefault(lane, {})
        askers[task] = now
        for gone in [t for t, at in askers.items() if at < now - _ASKING_S]:
            del askers[gone]
        limiter = self._lanes[lane]
        limiter.charge(owed)
        delays = [start - now for start, now in (limiter.reserve(n) for n in wanted)]
        rate, token_rate = limiter.request_rate(), limiter.token_rate()
        if not rate and not (token_rate and tokens):
            return delays, True, limiter.describe()
        per_slice = (rate or math.inf) * SLICE_S
        if token_rate and tokens:
            per_slice = min(per_slice, token_rate * SLICE_S / tokens)
        for _ in range(min(ahead, int(per_slice / len(askers)))):
            start, now = limiter.reserve(tokens)
            delays.append(start - now)
        return delays, False, limiter.describe()

    def limits(self) -> dict[str, dict[str, Any]]:
        """Each lane's limits in force and where they came from."""
        return {lane: limiter.describe() for lane, limiter in self._lanes.items()}


def _zero(value: str | None) -> bool:
    try:
        return value is not None and float(value) == 0
    except ValueError:
        return False


class LeasedLimiter:
    """A task's limiter in a Ray run: its starts leased from the run's SharedLimits (see the module doc)."""

    def __init__(self, call: Call, lane: str, rpm: int | None, tpm: int | None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.lane, self.configured_rpm, self.configured_tpm = lane, rpm, tpm
        self._call, self._clock, self._sleep = call, clock, sleep
        self.throttled = 0  # 429s this task saw
        self.leases = 0  # round trips to the actor for starts
        self._slots: deque[tuple[float, int]] = deque()  # leased starts (this clock) and the tokens booked for each
        self._free_from = self._free_until = float("-inf")  # no limit in force between these
        self._free_s = _FIRST_FREE_S  # the next free slice
        self._epoch = 0
        self._wanted: list[int] = []  # the tokens of the requests waiting for the lease about to be asked
        self._lease: asyncio.Future[None] | None = None
        self._asked = False  # the lease on its way was sent: who comes now waits for the next one
        self._notes: list[tuple[int | None, dict[str, str] | None, float, float]] = []  # answers not yet sent
        self._owed = 0  # tokens used beyond (or short of) what was booked
        self._arrivals: deque[tuple[float, int]] = deque()  # the acquires of the last second and their tokens
        self._announced: tuple[str | None, str | None] = (None, None)
        self._limits = RateLimiter(rpm, tpm).describe()
        self._sending: set[asyncio.Future[Any]] = set()
        self._id = f"{os.getpid()}-{id(self):x}"

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until a request of `tokens` may start (a leased start, or a free slice)."""
        now, arrivals = self._clock(), self._arrivals
        arrivals.append((now, tokens))
        while arrivals[0][0] < now - 1.0:
            arrivals.popleft()
        while True:
            now = self._clock()
            if now < self._free_until:
                start = self._free_from
            else:
                slots = self._slots
                while slots and slots[0][0] < now - BURST_S:
                    self._owed -= slots.popleft()[1]  # unused: its tokens go back
                fits = [(booked, i) for i, (_, booked) in enumerate(slots) if booked >= tokens]
                if not fits:  # none booked for a request this large: lease one at its size
                    await self._leased(tokens)
                    continue
                booked, i = min(fits)
                start = slots[i][0]
                del slots[i]
                self._owed += tokens - booked  # what was booked beyond it goes back
            if start <= now:
                return
            epoch = self._epoch
            await self._sleep(start - now)
            if self._epoch == epoch:
                return

    async def _leased(self, tokens: int) -> None:
        lease = self._lease
        if lease is None:
            lease = self._lease = asyncio.ensure_future(self._fetch())
        if not self._asked:
            self._wanted.append(tokens)
        await asyncio.shield(lease)

    async def _fetch(self) -> None:
        self._asked = True
        wanted, self._wanted = self._wanted or [max(n for _, n in self._arrivals)], []
        try:
            now, arrivals = self._clock(), self._arrivals
            rate = len(arrivals) / max(now - arrivals[0][0], SLICE_S)
            owed, self._owed = self._owed, 0
            booked, epoch = max(n for _, n in arrivals), self._epoch  # ahead: the largest recent request
            delays, free, self._limits = await self._call(
                "lease", self.lane, self._id, self.configured_rpm, self.configured_tpm, wanted,
                min(_MAX_AHEAD, math.ceil(rate * SLICE_S)), booked, owed, self._aged(now))
            now = self._clock()
            self.leases += 1
            if self._epoch != epoch:  # booked before what voided the leased starts reached the actor
                return
            if free:
                self._free_from = now + max(delays, default=0.0)
                self._free_until = self._free_from + self._free_s
                self._free_s = min(SLICE_S, 2 * self._free_s)
            else:
                self._free_s = _FIRST_FREE_S
                self._slots.extend((now + d, wanted[i] if i < len(wanted) else booked) for i, d in enumerate(delays))
        finally:
            self._asked, self._lease = False, None

    def _aged(self, now: float) -> list[Note]:
        notes, self._notes = self._notes, []
        return [(status, headers, now - answered, now - sent) for status, headers, answered, sent in notes]

    def observe(self, status: int | None, headers: Mapping[str, str] | None, sent_at: float | None = None) -> None:
        """Keep an answer for the actor; one that changes the limits goes at once and voids the leased starts."""
        now = self._clock()
        kept = {k.lower(): v for k, v in headers.items() if k.lower().startswith(_KEPT)} if headers else {}
        self._notes.append((status, kept or None, now, now if sent_at is None else sent_at))
        urgent = status == 429
        self.throttled += urgent
        announced = (kept.get("x-ratelimit-limit-requests"), kept.get("x-ratelimit-limit-tokens"))
        if any(announced) and announced != self._announced:
            self._announced, urgent = announced, True
        for kind in ("requests", "tokens"):
            if _zero(kept.get(f"x-ratelimit-remaining-{kind}")) and kept.get(f"x-ratelimit-reset-{kind}"):
                urgent = True
        if urgent:
            self._epoch += 1
            self._slots.clear()
            self._free_until, self._free_s = float("-inf"), _FIRST_FREE_S
            sending = asyncio.ensure_future(self._call("observe", self.lane, self.configured_rpm,
                                                       self.configured_tpm, self._aged(now)))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    def describe(self) -> dict[str, Any]:
        """The run's limits in force for this lane (as of the last lease) and the 429s this task saw."""
        return {**self._limits, "responses_429": self.throttled}
