"""The mix top-up, decided while the conversations finish: extra conversations for kinds that fall short of the mix.

Export keeps only what it accepts (not over the token limit, not a duplicate), so rejections and duplicates can leave
a kind short of its `generation.mix` target. `TopUp` watches what export will accept (a `MixCount`, fed in plan order
as conversations finish) and, when a kind is predicted to fall short of its target by more than
`generation.mix_tolerance` x `generation.conversations`, plans extra conversations for it: the predicted gap divided
by the kind's acceptance rate so far, within `generation.max_extra_conversations`, in at most five rounds.

No idle gap: the decision is not left for the end of the rollouts. It is taken when a fifth of the conversations
still to count is left (then again at a fifth of what is left, and so on, and when every one is counted): the kinds
of the conversations still to come are known (their plans) and their acceptance is predicted from the rate so far,
so the extra plans join the queue while the last conversations are in flight and the endpoint stays busy to the end.
A prediction that turns out short is corrected at the next decision, at worst once every conversation is counted.

The decisions are reproducible: they are taken at fixed counts of conversations in plan order, from config + seed +
the outcomes of the conversations before them (never from timing), so a resumed run, a batch run in waves and a merged
sharded run plan the same extra conversations as a local run of the same config. Extra plans continue the numbering
of the plans, take the least-used chunks and the least-covered tools. A kind that has had no conversation accepted
at all is not topped up (more of the same would be rejected too). When the mix cannot be met the run says so: a
warning, and `mix_met: false` with the reason in the manifest's `top_up`.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distill.config import Config
from distill.generation.coverage import KINDS, MixCount, allowed_shortfall, mix_targets
from distill.generation.questions import _counts, _eligible_tools
from distill.generation.sources import Chunk
from distill.trajectory import Plan, PlanList, Trajectory, plan_column

__all__ = ["FORESIGHT", "MAX_ROUNDS", "TopUp", "TopUpResult", "extra_budget", "plan_extra"]

log = logging.getLogger(__name__)

MAX_ROUNDS = 5
FORESIGHT = 5  # a decision is taken when 1/FORESIGHT of the conversations still to count is left


def extra_budget(config: Config) -> int:
    """`generation.max_extra_conversations`, or half of `generation.conversations` when it is null."""
    gen = config.generation
    return gen.max_extra_conversations if gen.max_extra_conversations is not None else gen.conversations // 2


def plan_extra(
    config: Config,
    chunks: Sequence[Chunk],
    plans: Sequence[Plan],
    wanted: dict[str, int],
    accepted_tools: Counter[str] | None = None,
) -> PlanList:
    """Extra plans, `wanted[kind]` of each kind, numbered after `plans`; deterministic for the same inputs.

    Chunks are taken least-used first (spreading coverage over documents); tool-using kinds get the eligible tool
    with the fewest accepted plus newly planned conversations.
    """
    if not chunks or not any(wanted.values()):
        return PlanList()
    start = max(plan_column(plans, "index"), default=-1) + 1
    rng = random.Random(f"distill-top-up:{config.generation.seed}:{start}")
    kinds = [k for k in KINDS for _ in range(wanted.get(k, 0))]
    rng.shuffle(kinds)
    chunk_order = list(range(len(chunks)))
    rng.shuffle(chunk_order)
    rank = {chunks[i].id: r for r, i in enumerate(chunk_order)}
    usage = Counter(plan_column(plans, "chunk_id"))
    tool_load = Counter(accepted_tools or {})
    tools = _eligible_tools(config)
    out = PlanList()
    for offset, kind in enumerate(kinds):
        chunk = min(chunks, key=lambda c: (usage[c.id], rank[c.id]))
        usage[chunk.id] += 1
        tool = None
        if kind != "direct":
            tool = min(tools, key=lambda name: (tool_load[name], tools.index(name)))
            tool_load[tool] += 1
        index = start + offset
        out.append(
            Plan(
                id=f"c{index:06d}",
                index=index,
                kind=kind,  # type: ignore[arg-type]
                chunk_id=chunk.id,
                doc_id=chunk.doc_id,
                turns=1 + config.generation.follow_ups if kind == "multi_turn" else 1,
                tool=tool,
                seed=rng.randrange(2**31),
            )
        )
    return out


def _fit(wanted: dict[str, int], left: int) -> dict[str, int]:
    total = sum(wanted.values())
    if total <= left:
        return wanted
    return {k: n for k, n in _counts(left, {k: n / total for k, n in wanted.items()}).items() if n}


@dataclass
class TopUpResult:
    """All plans after the top-up, and the manifest's `top_up` (what is kept once the rollouts are done: the count
    and its dedup index are not)."""

    plans: PlanList
    summary: dict[str, Any]


class TopUp:
    """The run's plans, growing by the extra plans of each top-up decision (see the module doc).

    `plans` starts as the plans to roll out; `add` is the rollouts' in-order sink (every conversation of `plans`, in
    plan order, counted by `counted`); a decision is taken at a fixed count, inside `add`, so it never depends on
    how many conversations a flush of the in-order sink passes; `take()` then hands its extra plans to the rollouts.
    `summary` is the manifest's `top_up` once every conversation is counted."""

    def __init__(self, config: Config, chunks: Sequence[Chunk], plans: Sequence[Plan], counted: MixCount) -> None:
        self.config, self.chunks, self.counted = config, chunks, counted
        self.plans = PlanList(plans)
        self.planned: Counter[str] = Counter(plan_column(self.plans, "kind"))
        self.budget = extra_budget(config)
        self.used = 0
        self.rounds: list[dict[str, Any]] = []
        self.stopped: str | None = None  # why the top-up ended, once every conversation is counted
        self.pilot: int | None = None  # set for a pilot or a shard: these plans only, no top-up
        self._short: dict[str, dict[str, Any]] = {}
        self._fresh = PlanList()
        self._next = self._decision_at()

    def _decision_at(self) -> int:
        left = len(self.plans) - self.counted.added
        return len(self.plans) - left // FORESIGHT

    def add(self, trajectory: Trajectory) -> None:
        """Count the next conversation in plan order; a decision due at this count is taken now (see `take`)."""
        self.counted.add(trajectory)
        self.check()

    def check(self) -> None:
        """Take the decision due at the count so far, if one is (at the start too: a run of no plans ends here)."""
        if self.stopped is not None or self.pilot is not None or self.counted.added < self._next:
            return
        extra = self._decide(final=self.counted.added >= len(self.plans))
        if extra:
            self.rounds.append({"round": len(self.rounds) + 1, "planned": dict(Counter(plan_column(extra, "kind"))),
                                "after": self.counted.added})
            self.plans.extend(extra)
            self.planned.update(plan_column(extra, "kind"))
            self.used += len(extra)
            self._fresh.extend(extra)
        self._next = self._decision_at()

    def take(self) -> PlanList:
        """The extra plans decided since the last call (already in `plans`), to roll out now."""
        fresh, self._fresh = self._fresh, PlanList()
        return fresh

    def _decide(self, final: bool) -> PlanList:
        """Extra plans for the kinds predicted short; `final` (every conversation counted) also ends the top-up when
        there is none to plan."""
        targets, slack = mix_targets(self.config), allowed_shortfall(self.config)
        counted = self.counted
        wanted: dict[str, int] = {}
        self._short = {}
        for kind in KINDS:
            got, asked = counted.got[kind], counted.requested[kind]
            if not asked:  # nothing counted yet to predict from; at the end, a kind with a target is short
                if final and targets[kind] - slack > 0:
                    self._short[kind] = {"accepted": got, "target": targets[kind]}
                continue
            coming = self.planned[kind] - asked  # planned, not counted yet: predicted at the rate so far
            if got * (asked + coming) >= (targets[kind] - slack) * asked:  # the expected acceptances meet it
                continue
            self._short[kind] = {"accepted": got, "target": targets[kind]}
            if got:  # ceil((target - expected) / rate), in integers
                wanted[kind] = -(-(targets[kind] * asked - got * (asked + coming)) // got)
        if final and not self._short:
            return self._end("met")
        stop = ("no_conversation_accepted" if not wanted else "budget" if self.used >= self.budget
                else "rounds" if len(self.rounds) >= MAX_ROUNDS else None)
        extra = PlanList() if stop else plan_extra(self.config, self.chunks, self.plans,
                                                    _fit(wanted, self.budget - self.used), counted.accepted_tools)
        if final and not extra:
            return self._end(stop or "no_chunks")
        return extra

    def _end(self, stopped: str) -> PlanList:
        self.stopped = stopped
        if stopped != "met":
            gaps = ", ".join(f"{k} {c['accepted']}/{c['target']}" for k, c in self._short.items())
            log.warning(
                "generation.mix not met (accepted/target: %s; allowed shortfall %d): %s after %d extra "
                "conversation(s); raise generation.max_extra_conversations or check rejected.jsonl",
                gaps, allowed_shortfall(self.config), stopped.replace("_", " "), self.used,
            )
        return PlanList()

    def result(self) -> TopUpResult:
        """The plans and the summary, without the count."""
        return TopUpResult(self.plans, self.summary)

    @property
    def summary(self) -> dict[str, Any]:
        """The manifest's `top_up`."""
        if self.pilot is not None:
            return {"extra_conversations": 0, "pilot": self.pilot}
        return {"budget": self.budget, "extra_conversations": self.used, "rounds": self.rounds,
                "stopped": self.stopped, "mix_met": self.stopped == "met"}
