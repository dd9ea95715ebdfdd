"""Coverage: what a run's accepted data covers, and what export will accept so far (for the mix top-up).

`summarize_coverage` is the manifest's `coverage` section: accepted conversations and acceptance rate per kind
(against the `generation.mix` target), per planned tool and per source document, and accepted examples (fine-tuning
lines) per outcome: `tool_used` (a first turn that calls a tool), `no_tool` (a first turn answered directly) and
`follow_up` (a later turn of a multi-turn conversation).

`MixCount` counts, one conversation at a time as they finish, what export will accept (not over the token limit,
not a duplicate) per kind: the mix top-up (distill/generation/top_up.py) decides from it. A conversation counts for
its kind only when it is one (`as_planned`): a `direct` one whose teacher called a tool, or a `tool` one answered
without a tool, is accepted data but is counted as `off_plan`, not towards the kind's target.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from distill.config import Config
from distill.formats.base import Format
from distill.generation.dedup import DedupIndex
from distill.generation.questions import _counts
from distill.trajectory import Trajectory

__all__ = ["KINDS", "Coverage", "MixCount", "allowed_shortfall", "as_planned", "mix_targets", "summarize_coverage"]

KINDS = ("tool", "direct", "multi_turn")


def mix_targets(config: Config) -> dict[str, int]:
    """Accepted conversations wanted per kind: `generation.conversations` split by the mix (largest remainder)."""
    gen = config.generation
    return _counts(gen.conversations, gen.mix.model_dump())


def allowed_shortfall(config: Config) -> int:
    """How many conversations a kind may fall short of its target: mix_tolerance x conversations, rounded down."""
    gen = config.generation
    return math.floor(gen.mix_tolerance * gen.conversations + 1e-9)


def _rate(accepted: int, requested: int) -> float | None:
    return round(accepted / requested, 3) if requested else None


def as_planned(t: Trajectory) -> bool:
    """True when a conversation is of its planned kind: a `direct` one calls no tool, a `tool` one calls one first."""
    if t.kind == "direct":
        return not any(not s.is_final for turn in t.turns for s in turn.steps)
    if t.kind == "tool":
        return bool(t.turns) and any(not s.is_final for s in t.turns[0].steps)
    return True


def _cells(config: Config, requested: Counter[str], got: Counter[str], off: Counter[str]) -> dict[str, dict[str, Any]]:
    targets = mix_targets(config)
    slack = allowed_shortfall(config)
    shares = config.generation.mix.model_dump()
    return {
        k: {
            "share": shares[k],
            "target": targets[k],
            "requested": requested[k],
            "accepted": got[k],
            "off_plan": off[k],
            "rate": _rate(got[k], requested[k]),
            "met": got[k] >= targets[k] - slack,
        }
        for k in KINDS
    }


class Coverage:
    """The manifest's `coverage` section, counted one conversation at a time (`add`, outcomes final)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.requested: Counter[str] = Counter()
        self.got: Counter[str] = Counter()
        self.off: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.tools: dict[str, Counter[str]] = {t.name: Counter() for t in config.tools}
        self.docs: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, t: Trajectory) -> None:
        ok = t.outcome == "accepted"
        self.requested[t.kind] += 1
        if ok:
            (self.got if as_planned(t) else self.off)[t.kind] += 1
        planned = t.meta.get("tool")
        tools, doc = self.tools, self.docs[t.doc_id]
        doc["requested"] += 1
        if planned in tools:
            tools[planned]["requested"] += 1
            tools[planned]["accepted"] += ok
        if not ok:
            return
        doc["accepted"] += 1
        doc["examples"] += len(t.turns)
        for i, turn in enumerate(t.turns):
            called = [s.action for s in turn.steps if not s.is_final]
            self.outcomes["follow_up" if i else ("tool_used" if called else "no_tool")] += 1
            for name in set(called):
                if name in tools:
                    tools[name]["examples"] += 1
            for name in called:
                if name in tools:
                    tools[name]["calls"] += 1

    def section(self) -> dict[str, Any]:
        config = self.config
        by_kind = _cells(config, self.requested, self.got, self.off)

        def cell(c: Counter[str], *keys: str) -> dict[str, Any]:
            return {**{k: c[k] for k in ("requested", "accepted", *keys)}, "rate": _rate(c["accepted"], c["requested"])}

        return {
            "mix_met": all(c["met"] for c in by_kind.values()),
            "tolerance": config.generation.mix_tolerance,
            "allowed_shortfall": allowed_shortfall(config),
            "by_kind": by_kind,
            "by_outcome": {k: self.outcomes[k] for k in ("tool_used", "no_tool", "follow_up")},
            "by_tool": {name: cell(c, "examples", "calls") for name, c in self.tools.items()},
            "by_document": {doc: cell(self.docs[doc], "examples") for doc in sorted(self.docs)},
        }


def summarize_coverage(config: Config, trajectories: Iterable[Trajectory]) -> dict[str, Any]:
    """The manifest's `coverage` section, from trajectories whose outcomes are final (after export's checks)."""
    coverage = Coverage(config)
    for t in trajectories:
        coverage.add(t)
    return coverage.section()


class MixCount:
    """What export will accept so far, per kind, counted one conversation at a time in plan order (`add`): accepted,
    not below the judge's thresholds (its verdict stored before the count), within the token limit, renderable, not a
    duplicate (a `DedupIndex`: only what its index needs is kept)."""

    def __init__(self, config: Config, fmt: Format) -> None:
        from distill.generation.judge import Verdicts
        from distill.tokens import example_limit

        self.config, self.fmt = config, fmt
        self.verdicts = Verdicts(config)
        self.model = config.export.model
        self.limit = config.export.max_example_tokens or example_limit(self.model)
        self.dedup = DedupIndex(config.export.dedup, keep_found=False)
        self.requested: Counter[str] = Counter()
        self.got: Counter[str] = Counter()
        self.off: Counter[str] = Counter()
        self.accepted_tools: Counter[str] = Counter()
        self.added = 0

    def add(self, t: Trajectory) -> None:
        from distill.formats import NotRenderable
        from distill.tokens import count_example

        self.added += 1
        self.requested[t.kind] += 1
        if t.outcome != "accepted" or self.verdicts.rejects(t):
            return
        try:
            worst = max(count_example(ex, self.model) for ex in self.fmt.render(t))
        except NotRenderable:
            return
        if worst > self.limit or self.dedup.check(t) is not None:
            return
        (self.got if as_planned(t) else self.off)[t.kind] += 1
        if t.meta.get("tool"):
            self.accepted_tools[str(t.meta["tool"])] += 1

    def cells(self) -> dict[str, dict[str, Any]]:
        return _cells(self.config, self.requested, self.got, self.off)
