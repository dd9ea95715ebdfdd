"""The cost of a fine-tuning job: training tokens x epochs x price per token, from a small, overridable price table.

Validation tokens are free. Without an explicit epoch count the estimate uses OpenAI's default-epoch rule
(`distill.tokens.default_epochs`). Prices change: callers pass their own price per 1M tokens to override the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.tokens import default_epochs

__all__ = ["PRICES_PER_1M", "CostEstimate", "estimate_cost", "price_per_1m"]

# USD per 1M training tokens (OpenAI's published prices for supervised fine-tuning); the longest matching prefix of
# the base model wins. Prices change: pass price_per_1m (--price-per-1m) to use your own.
PRICES_PER_1M: dict[str, float] = {
    "gpt-4.1-nano": 1.50,
    "gpt-4.1-mini": 5.00,
    "gpt-4.1": 25.00,
    "gpt-4o-mini": 3.00,
    "gpt-4o": 25.00,
    "gpt-3.5-turbo": 8.00,
    "davinci-002": 6.00,
    "babbage-002": 0.40,
}


@dataclass(frozen=True)
class CostEstimate:
    """What a job will bill: training tokens x epochs x price (validation tokens are free)."""

    model: str
    examples: int
    training_tokens: int
    epochs: int
    epochs_rule: str
    usd_per_1m: float | None
    billed_tokens: int
    cost_usd: float | None

    def describe(self) -> str:
        """One line for people."""
        price = (
            f" x ${self.usd_per_1m:.2f} / 1M = ~${self.cost_usd:.2f}"
            if self.cost_usd is not None
            else f" (no known price for {self.model}; pass --price-per-1m)"
        )
        return (
            f"{self.examples} training examples, {self.training_tokens:,} tokens x {self.epochs} epochs "
            f"({self.epochs_rule}) = {self.billed_tokens:,} billed tokens{price}"
        )


def price_per_1m(model: str) -> float | None:
    """USD per 1M training tokens for a base model (the longest table entry it starts with, followed by `-` or
    nothing; `ft:` models take their base model's price), or None when unknown."""
    base = model.removeprefix("ft:")
    best = max((p for p in PRICES_PER_1M if base == p or base.startswith(p + "-")), key=len, default=None)
    return PRICES_PER_1M[best] if best else None


def estimate_cost(
    token_counts: list[int], model: str, *, epochs: int | None = None, usd_per_1m: float | None = None
) -> CostEstimate:
    """Tokens x epochs x price; without `epochs`, OpenAI's default rule for the number of examples."""
    n = len(token_counts)
    rule = "as requested" if epochs else f"OpenAI's default for {n} examples"
    epochs = epochs or default_epochs(n)
    price = usd_per_1m if usd_per_1m is not None else price_per_1m(model)
    tokens = sum(token_counts)
    billed = tokens * epochs
    cost = round(billed * price / 1_000_000, 4) if price is not None else None
    return CostEstimate(model, n, tokens, epochs, rule, price, billed, cost)
