"""Teacher costs: the price table, the run's meter (requests, tokens and dollars per stage) and the budget stop.

Prices are USD per 1M tokens (input, cached input, output), defaults for common OpenAI models as published on
openai.com/api/pricing (standard tier) when this table was written; `teacher.price` in the config overrides them,
and is required for any other model when a budget is set. A dated snapshot (`gpt-4o-2024-08-06`) takes the price of
its family (`gpt-4o`): the longest table entry it starts with, followed by `-` or nothing. Batch mode and
`service_tier: flex` pay half (`discounted`), or `teacher.batch_price` when given.

The `Meter` counts what this invocation sent and what the ledger answered, per stage (`questions`, `rollout`);
`generation.max_cost_usd` is checked before each request is sent: the request's worst case (its estimated input
plus its whole `max_tokens` as output) is reserved, and when the run's spend (earlier invocations included, from
the ledger) plus the reservations would pass the budget, the run stops resumably instead of sending it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from distill.errors import ConfigError, RunStopped

__all__ = ["BATCH_DISCOUNT", "DEFAULT_PRICES", "Meter", "Price", "StageUsage", "cost_usd", "discounted", "price_for"]

BATCH_DISCOUNT = 0.5  # the Batch API and flex processing cost half the standard tier


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens."""

    input: float
    cached_input: float
    output: float


DEFAULT_PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 0.125, 10.00),
    "gpt-5-mini": Price(0.25, 0.025, 2.00),
    "gpt-5-nano": Price(0.05, 0.005, 0.40),
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4o-2024-05-13": Price(5.00, 5.00, 15.00),
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "gpt-4-turbo": Price(10.00, 10.00, 30.00),
    "gpt-4": Price(30.00, 30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 0.50, 1.50),
    "o1": Price(15.00, 7.50, 60.00),
    "o1-mini": Price(1.10, 0.55, 4.40),
    "o3": Price(2.00, 0.50, 8.00),
    "o3-mini": Price(1.10, 0.55, 4.40),
    "o4-mini": Price(1.10, 0.275, 4.40),
}


def price_for(model: str, override: Any = None) -> Price | None:
    """The price of `model`: the config's `teacher.price` when given, else the table's family entry, else None."""
    if override is not None:
        cached = override.cached_input if override.cached_input is not None else override.input
        return Price(override.input, cached, override.output)
    if model in DEFAULT_PRICES:
        return DEFAULT_PRICES[model]
    family = max((m for m in DEFAULT_PRICES if model.startswith(m + "-")), key=len, default=None)
    return DEFAULT_PRICES[family] if family else None


def discounted(price: Price | None, override: Any = None) -> Price | None:
    """The batch / flex price: `teacher.batch_price` when given, else half of `price` (OpenAI's batch discount)."""
    if override is not None:
        return price_for("", override)
    if price is None:
        return None
    return Price(price.input * BATCH_DISCOUNT, price.cached_input * BATCH_DISCOUNT, price.output * BATCH_DISCOUNT)


def cost_usd(usage: dict[str, int], price: Price | None) -> float | None:
    """Dollars of one response's usage (`input` includes `cached_input`, as OpenAI reports prompt tokens)."""
    if price is None:
        return None
    cached = usage.get("cached_input", 0)
    fresh = max(0, usage.get("input", 0) - cached)
    return (fresh * price.input + cached * price.cached_input + usage.get("output", 0) * price.output) / 1e6


@dataclass(slots=True)
class StageUsage:
    """One stage's teacher traffic in this invocation."""

    requests: int = 0  # answered by the endpoint (paid)
    ledger_hits: int = 0  # answered from the ledger (already paid)
    failed: int = 0  # no answer after the retries
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0


@dataclass
class Meter:
    """Counts requests, tokens and dollars per stage; reserves and enforces the budget."""

    price: Price | None
    budget_usd: float | None = None
    spent_before_usd: float = 0.0  # what earlier invocations on this run folder paid (from the ledger)
    clock: Callable[[], float] = time.monotonic
    stages: dict[str, StageUsage] = field(default_factory=dict)
    consumed: dict[str, StageUsage] = field(default_factory=dict)  # paid or replayed: what the conversations used
    reserved_usd: float = 0.0
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    @classmethod
    def for_config(cls, config: Any, *, spent_before_usd: float = 0.0) -> Meter:
        """The meter of a run: the teacher's price, the budget; a budget without a known price is a config error."""
        teacher = config.teacher
        price = price_for(teacher.model, teacher.price)
        if teacher.mode == "batch" or teacher.service_tier == "flex":
            price = discounted(price, teacher.batch_price)
        budget = config.generation.max_cost_usd
        if budget is not None and price is None:
            raise ConfigError(
                str(config.path or "<config>"),
                "generation.max_cost_usd",
                f"needs a price, and distill's table has none for teacher.model {teacher.model!r}",
                hint="add teacher.price: {input: ..., cached_input: ..., output: ...} in USD per 1M tokens",
            )
        return cls(price=price, budget_usd=budget, spent_before_usd=spent_before_usd)

    def _stage(self, stage: str) -> StageUsage:
        usage = self.stages.get(stage)
        if usage is None:
            usage = self.stages[stage] = StageUsage()
        return usage

    def record(self, stage: str, usage: dict[str, int], *, hit: bool = False) -> float:
        """Count one answered request (`hit`: answered by the ledger, costing nothing now); returns its dollars."""
        s = self._stage(stage)
        usd = cost_usd(usage, self.price) or 0.0
        c = self.consumed.get(stage) or self.consumed.setdefault(stage, StageUsage())
        c.requests += 1
        c.input_tokens += usage.get("input", 0)
        c.cached_input_tokens += usage.get("cached_input", 0)
        c.output_tokens += usage.get("output", 0)
        c.usd += usd
        if hit:
            s.ledger_hits += 1
            return usd
        s.requests += 1
        s.input_tokens += usage.get("input", 0)
        s.cached_input_tokens += usage.get("cached_input", 0)
        s.output_tokens += usage.get("output", 0)
        s.usd += usd
        return usd

    def record_failure(self, stage: str) -> None:
        """Count a request that got no answer after the retries."""
        self._stage(stage).failed += 1

    @property
    def spent_usd(self) -> float:
        """Dollars paid by this invocation."""
        return sum(s.usd for s in self.stages.values())

    @property
    def total_usd(self) -> float:
        """Dollars paid for this run folder, earlier invocations included."""
        return self.spent_before_usd + self.spent_usd

    def estimate_usd(self, input_tokens: int, max_output_tokens: int) -> float:
        """The worst case of one request: its input (all uncached) and `max_output_tokens` of output."""
        if self.price is None:
            return 0.0
        return (input_tokens * self.price.input + max_output_tokens * self.price.output) / 1e6

    def reserve(self, usd: float) -> float:
        """Hold `usd` for a request about to be sent; RunStopped when the budget would be passed."""
        if self.budget_usd is None:
            return 0.0
        if self.total_usd + self.reserved_usd + usd > self.budget_usd:
            raise RunStopped(
                "budget",
                f"stopped before passing generation.max_cost_usd (${self.budget_usd:g}): ${self.total_usd:.4f} "
                f"spent on this run folder, the next request could cost up to ${usd:.4f}",
                hint="raise generation.max_cost_usd and rerun the same command to continue where it stopped",
            )
        self.reserved_usd += usd
        return usd

    def release(self, usd: float) -> None:
        """Drop a reservation (the request was answered, and recorded, or failed)."""
        self.reserved_usd = max(0.0, self.reserved_usd - usd)

    def requests_per_s(self) -> float:
        """Requests sent and answered by the endpoint per second of this invocation."""
        elapsed = self.clock() - self.started
        sent = sum(s.requests for s in self.stages.values())
        return sent / elapsed if elapsed > 0 else 0.0

    def postfix(self) -> dict[str, str]:
        """The progress bar's teacher figures: requests/s and dollars so far (this run folder)."""
        return {"req/s": f"{self.requests_per_s():.1f}", "$": f"{self.total_usd:.2f}" if self.price else "?"}

    def summary(self) -> dict[str, Any]:
        """This invocation's traffic for the manifest."""
        return {
            "by_stage": {name: asdict(s) | {"usd": round(s.usd, 6)} for name, s in sorted(self.stages.items())},
            "requests": sum(s.requests for s in self.stages.values()),
            "ledger_hits": sum(s.ledger_hits for s in self.stages.values()),
            "failed_requests": sum(s.failed for s in self.stages.values()),
            "usd": round(self.spent_usd, 6),
            "consumed_by_stage": {
                name: {k: v for k, v in asdict(s).items() if k not in ("ledger_hits", "failed")} | {"usd": round(s.usd, 6)}
                for name, s in sorted(self.consumed.items())
            },
        }
