"""The rollouts of a run: a queue of plans, worker tasks (up to 2 x `teacher.concurrency`), every finished
conversation to the run's spool and, in plan order, to the mix top-up, whose extra plans join the queue while the last
conversations are in flight (distill/generation/top_up.py); then the judge stage. One progress bar to the end.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from distill.errors import RunStopped
from distill.generation.resume import RunSession
from distill.generation.rollout import Rollout, run_conversation
from distill.generation.spool import InOrder
from distill.generation.top_up import TopUp
from distill.teachers.batch import RequestPending, WavePending
from distill.trajectory import Plan, PlanList, Trajectory, plan_column

__all__ = ["draining", "roll_and_top_up", "roll_plans"]

T = TypeVar("T")


def _progress(total: int, enabled: bool, label: str = "conversations") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="conv", disable=not enabled, dynamic_ncols=True)


def _bar_tally(tally: dict[str, int]) -> dict[str, int]:
    """The bar's counts: `validated` passed the strict validator; export's token and dedup checks come after it."""
    return {"validated": tally["accepted"], "rejected": tally["rejected"], "failed": tally["failed"]}


async def roll_plans(
    plans: PlanList, chunks: dict[str, Any], rollout: Rollout, progress: bool, run: RunSession | None = None,
    top_up: TopUp | None = None,
) -> int:
    """Roll out `plans` (the ones not finished before); every finished conversation goes to the run's spool as it
    finishes. With `top_up` (whose `plans` is `plans`), each goes to it in plan order as well, and the extra plans it
    decides join the queue while the rest are in flight (distill/generation/top_up.py). Returns how many
    conversations `plans` have now."""
    run = run or RunSession.ephemeral(rollout.config, rollout.teacher)
    run.add_plans(plans)
    ids = list(plan_column(plans, "id"))
    ordered = InOrder(ids, run.spool, top_up.add if top_up is not None else (lambda t: None))
    tally = {"accepted": 0, "rejected": 0, "failed": 0}
    waiting = 0  # batch mode: conversations waiting for their wave's batch (distill/generation/waves.py)
    bar = _progress(len(plans), progress)
    queue: deque[int] = deque()
    active: set[asyncio.Task[None]] = set()
    most = max(1, rollout.config.teacher.concurrency * 2)

    def finished(i: int, trajectory: Trajectory) -> None:
        ordered.done(i, trajectory)
        tally[trajectory.outcome] += 1
        bar.update(1)
        if top_up is None:
            return
        extra = top_up.take()
        if extra:  # a top-up decision: its plans are on disk before their conversations are
            run.add_plans(extra)
            ids.extend(plan_column(extra, "id"))
            bar.total = len(plans)
            bar.set_description(f"conversations (top-up +{top_up.used})", refresh=False)
            admit(len(plans) - len(extra))

    def admit(start: int) -> None:
        for i in range(start, len(plans)):
            done = run.done(plans[i])  # finished before a resume, or by an earlier wave
            if done is None:
                queue.append(i)
            else:
                finished(i, done)
        while queue and len(active) < most and run.stopped is None:
            task = asyncio.ensure_future(worker())
            active.add(task)
            task.add_done_callback(active.discard)

    async def worker() -> None:
        nonlocal waiting
        while queue and run.stopped is None:
            i = queue.popleft()
            plan = plans[i]
            try:
                trajectory = await run_conversation(plan, chunks[plan.chunk_id], rollout)
            except RunStopped as exc:  # circuit breaker or budget: the conversation resumes later
                run.stop(exc)
                return
            except RequestPending:  # batch mode: not failed, not finished; the next wave replays it
                waiting += 1
                continue
            run.record(trajectory)  # to the spool (the next wave, in batch mode, does not run it again)
            finished(i, trajectory)
            if bar.n % 25 == 0 or bar.n == len(plans) or run.metered:
                bar.set_postfix(run.postfix(_bar_tally(tally)), refresh=False)

    try:
        if top_up is not None:
            top_up.check()  # no conversation at all: the top-up ends here
            top_up.take()  # (admitted with the rest)
        admit(0)
        while active:
            await asyncio.gather(*active)
    except BaseException:
        for task in active:
            task.cancel()
        raise
    finally:
        bar.close()
    run.check_stopped()
    if waiting:
        raise WavePending(waiting)
    return sum(tally.values())


async def roll_and_top_up(
    plans: Sequence[Plan], chunks: list[Any], rollout: Rollout, progress: bool, run: RunSession | None = None,
    pilot: bool = False,
) -> Any:
    """Roll out the plans and, as they finish, extra conversations for kinds short of the mix
    (distill/generation/top_up.py), then judge. Returns the `TopUp` (its plans, its summary)."""
    from distill.generation.coverage import MixCount

    by_id = {c.id: c for c in chunks}
    run = run or RunSession.ephemeral(rollout.config, rollout.teacher)
    counted = MixCount(rollout.config, rollout.fmt)
    if not pilot:  # the tokenizer (0.5 s to load) before the first request, not at the first count, mid-run
        from distill.tokens import encoding_for

        encoding_for(counted.model)
    topped = TopUp(rollout.config, chunks, plans, counted)
    try:
        if pilot:  # distill estimate, a shard: these plans only, no top-up
            topped.pilot = len(plans)
            await roll_plans(topped.plans, by_id, rollout, progress, run)
        else:
            await roll_plans(topped.plans, by_id, rollout, progress, run, topped)
        await _judge(rollout, topped.plans, by_id, run)
        return topped
    finally:
        await rollout.teacher.aclose()


async def draining(run: RunSession, rollout: Rollout, work: Awaitable[T]) -> T:
    """`work`, during which the first Ctrl-C drains the requests in flight into the ledger (generation/interrupt.py)."""
    from distill.generation.interrupt import DrainOnInterrupt

    with DrainOnInterrupt(run, rollout.teacher, rollout.config.teacher.timeout_s):
        return await work


async def _judge(rollout: Rollout, plans: Sequence[Plan], chunks: dict[str, Any], run: RunSession) -> None:
    """The judge stage (distill/generation/judge.py): verdicts stored on the records (the spool's latest version);
    export applies the thresholds."""
    from distill.generation.judge import judge_stream

    if not rollout.config.judge.enabled:
        return
    spool = run.spool
    documents = {k: c.text for k, c in chunks.items()}
    judged = [0]
    try:
        async for t in judge_stream(rollout.config, spool.trajectories(plan_column(plans, "id")), documents,
                                    rollout.teacher, judged=judged):
            if t.meta.get("judge") is not None or t.outcome == "failed":
                spool.put(t)
    except RunStopped as exc:  # budget or breaker: the unjudged conversations are judged on resume
        run.stop(exc)
        run.check_stopped()
