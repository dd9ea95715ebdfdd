"""Step resampling (`generation.step_retries`): ask a step again, with another seed, when its answer is rejected.

`resample(ask, read, base_seed, retries)` is pure: `ask(seed)` sends the step's request with that `seed` parameter
(so each attempt is a distinct request, and a distinct ledger entry) and returns the reply; `read(reply)` reads it
strictly into a `Reading`. The first accepted reading wins; every rejected one is kept as an `Attempt` (raw text or
tool-call JSON, reason, detail, seed), to be stored on the accepted step (`Step.attempts`) or, when every attempt is
rejected, with the rejected conversation. Exceptions of `ask` (a failed teacher call, a stopped run) propagate:
resampling is for answers the reader rejects, not for calls that got no answer. `settled(reply)`, when given, marks
a reply that ends the resampling as it is, unread (generation: an answer the endpoint cut off, which is a failed
call, not a rejected answer); the caller tells it by `reading is None` and its own look at `reply`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from distill.formats.base import Reading
from distill.trajectory import Attempt

__all__ = ["Resampled", "attempt_seed", "resample"]

_SEED_SPACE = 2**31  # OpenAI's seed parameter is a 32-bit signed integer


def attempt_seed(base_seed: int, attempt: int) -> int:
    """The seed of attempt number `attempt` (0 = the first ask, which keeps the plan's own seed)."""
    return (base_seed + attempt) % _SEED_SPACE if attempt else base_seed


@dataclass
class Resampled:
    """The outcome of one step: the accepted reading (None when every attempt was rejected) and the rejected ones."""

    reading: Reading | None
    reply: Any  # the accepted reply, else the last one
    seed: int | None  # the seed of `reply`
    attempts: list[Attempt] = field(default_factory=list)  # rejected, in the order they were asked

    @property
    def ok(self) -> bool:
        """True when some attempt was accepted."""
        return self.reading is not None

    @property
    def recovered(self) -> bool:
        """True when an attempt was accepted after at least one rejected one."""
        return self.ok and bool(self.attempts)

    @property
    def last_rejection(self) -> Attempt | None:
        """The last rejected attempt (what a conversation is rejected with when none was accepted)."""
        return self.attempts[-1] if self.attempts else None


async def resample(
    ask: Callable[[int | None], Awaitable[Any]],
    read: Callable[[Any], Reading],
    base_seed: int | None,
    retries: int,
    settled: Callable[[Any], bool] | None = None,
) -> Resampled:
    """Ask once with `base_seed`, then up to `retries` more times with new seeds while the reading is rejected;
    a reply that `settled` marks ends it at once, with `reading` None (see the module doc)."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if retries and base_seed is None:
        raise ValueError("resampling needs a seed: each re-ask is the same request with another seed")
    attempts: list[Attempt] = []
    reply: Any = None
    seed = base_seed
    for number in range(retries + 1):
        seed = attempt_seed(base_seed, number) if number and base_seed is not None else base_seed
        reply = await ask(seed)
        if settled is not None and settled(reply):
            return Resampled(None, reply, seed, attempts)
        reading = read(reply)
        if reading.ok:
            return Resampled(reading, reply, seed, attempts)
        attempts.append(Attempt(raw=reading.raw, reason=str(reading.reason), detail=reading.detail, seed=seed))
    return Resampled(None, reply, seed, attempts)
