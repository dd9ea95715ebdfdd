"""Coverage: what a run's accepted data covers, and topping up the mix when rejections leave a kind short.

`summarize_coverage` is the manifest's `coverage` section: accepted conversations and acceptance rate per kind
(against the `generation.mix` target), per planned tool and per source document, and accepted examples (fine-tuning
lines) per outcome: `tool_used` (a first turn that calls a tool), `no_tool` (a first turn answered directly) and
`follow_up` (a later turn of a multi-turn conversation).

`top_up` runs after the rollouts: it counts what export will accept (not over the token limit, not a duplicate),
and while a kind falls short of its target by more than `generation.mix_tolerance` x `generation.conversations`,
plans extra conversations for it (the shortfall divided by the kind's acceptance rate so far) and rolls them out,
within `generation.max_extra_conversations`, for at most five rounds. Extra plans continue the numbering of the
original plans and are reproducible from config + seed + the earlier outcomes, so a resumed run plans the same ones.
A kind that has had no conversation accepted at all is not topped up (more of the same would be rejected too).
A conversation counts for its kind only when it is one (`as_planned`): a `direct` one whose teacher called a tool, or
a `tool` one answered without a tool, is accepted data but is counted as `off_plan`, not towards the kind's target.
When the mix cannot be met the run says so: a warning, and `mix_met: false` with the reason in the manifest.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from distill.config import Config
from distill.formats.base import Format
from distill.generation.dedup import DedupIndex
from distill.generation.questions import _counts, _eligible_tools
from distill.generation.sources import Chunk
from distill.trajectory import Plan, PlanList, Trajectory, plan_column

__all__ = [
    "MAX_ROUNDS",
    "Coverage",
    "MixCount",
    "TopUp",
    "allowed_shortfall",
    "as_planned",
    "extra_budget",
    "mix_targets",
    "plan_extra",
    "summarize_coverage",
    "top_up",
]

log = logging.getLogger(__name__)

MAX_ROUNDS = 5
KINDS = ("tool", "direct", "multi_turn")


def mix_targets(config: Config) -> dict[str, int]:
    """Accepted conversations wanted per kind: `generation.conversations` split by the mix (largest remainder)."""
    gen = config.generation
    return _counts(gen.conversations, gen.mix.model_dump())


def allowed_shortfall(config: Config) -> int:
    """How many conversations a kind may fall short of its target: mix_tolerance x conversations, rounded down."""
    gen = config.generation
    return math.floor(gen.mix_tolerance * gen.conversations + 1e-9)


def extra_budget(config: Config) -> int:
    """`generation.max_extra_conversations`, or half of `generation.conversations` when it is null."""
    gen = config.generation
    return gen.max_extra_conversations if gen.max_extra_conversations is not None else gen.conversations // 2


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
    within the token limit, renderable, not a duplicate (a `DedupIndex`: only what its index needs is kept)."""

    def __init__(self, config: Config, fmt: Format) -> None:
        from distill.tokens import example_limit

        self.config, self.fmt = config, fmt
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
        if t.outcome != "accepted":
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


def plan_extra(
    config: Config,
    chunks: Sequence[Chunk],
    plans: Sequence[Plan],
    wanted: dict[str, int],
    accepted_tools: Counter[str] | None = None,
) -> list[Plan]:
    """Extra plans, `wanted[kind]` of each kind, numbered after `plans`; deterministic for the same inputs.

    Chunks are taken least-used first (spreading coverage over documents); tool-using kinds get the eligible tool
    with the fewest accepted plus newly planned conversations.
    """
    if not chunks or not any(wanted.values()):
        return []
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
    out: list[Plan] = []
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


@dataclass
class TopUp:
    """All plans after topping up, and what the top-up did (the manifest's `top_up`)."""

    plans: PlanList
    summary: dict[str, Any] = field(default_factory=dict)


def _fit(wanted: dict[str, int], left: int) -> dict[str, int]:
    total = sum(wanted.values())
    if total <= left:
        return wanted
    return {k: n for k, n in _counts(left, {k: n / total for k, n in wanted.items()}).items() if n}


async def top_up(
    config: Config,
    chunks: Sequence[Chunk],
    plans: Sequence[Plan],
    counted: MixCount,
    roll: Callable[[Sequence[Plan]], Awaitable[Any]],
) -> TopUp:
    """Roll out extra conversations for kinds short of their mix target, within the budget (see the module doc).

    `counted` has seen every conversation of `plans` (in plan order); `roll` rolls out extra plans and adds each of
    their conversations to it, in plan order."""
    plans = PlanList(plans)
    budget = extra_budget(config)
    used = 0
    rounds: list[dict[str, Any]] = []
    slack = allowed_shortfall(config)
    stopped = "met"
    while True:
        cells = counted.cells()
        short = {k: c for k, c in cells.items() if not c["met"]}
        if not short:
            stopped = "met"
            break
        wanted = {  # the shortfall divided by the acceptance rate so far, in integers: ceil(gap * requested / accepted)
            k: -(-(c["target"] - c["accepted"]) * c["requested"] // c["accepted"])
            for k, c in short.items()
            if c["accepted"]
        }
        if not wanted:
            stopped = "no_conversation_accepted"
        elif used >= budget:
            stopped = "budget"
        elif len(rounds) >= MAX_ROUNDS:
            stopped = "rounds"
        if stopped != "met":
            break
        wanted = _fit(wanted, budget - used)
        extra = plan_extra(config, chunks, plans, wanted, counted.accepted_tools)
        if not extra:
            stopped = "no_chunks"
            break
        rounds.append({"round": len(rounds) + 1, "planned": dict(Counter(p.kind for p in extra))})
        await roll(extra)
        plans.extend(extra)
        used += len(extra)
    if stopped != "met":
        gaps = ", ".join(f"{k} {c['accepted']}/{c['target']}" for k, c in short.items())
        log.warning(
            "generation.mix not met (accepted/target: %s; allowed shortfall %d): %s after %d extra conversation(s); "
            "raise generation.max_extra_conversations or check rejected.jsonl",
            gaps,
            slack,
            stopped.replace("_", " "),
            used,
        )
    summary = {
        "budget": budget,
        "extra_conversations": used,
        "rounds": rounds,
        "stopped": stopped,
        "mix_met": stopped == "met",
    }
    return TopUp(plans=plans, summary=summary)
