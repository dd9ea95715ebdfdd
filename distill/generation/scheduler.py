"""The rollouts of a run: a queue of plans, worker tasks (up to 2 x `teacher.concurrency`), every finished
conversation to the run's spool and, in plan order, to the judge, which grades it while the rollouts go on
(distill/generation/judge.py), then to the mix top-up's count, whose extra plans join the queue while the last
conversations are in flight (distill/generation/top_up.py). Nothing waits for the rollouts to drain. One progress
bar to the end.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from distill.errors import RunStopped
from distill.generation.resume import RunSession
from distill.generation.rollout import Rollout, run_conversation
from distill.generation.spool import InOrder
from distill.generation.top_up import TopUp, TopUpResult
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
    top_up: TopUp | None = None, sink: Callable[[Trajectory], None] | None = None, judged: _Judged | None = None,
) -> int:
    """Roll out `plans` (the ones not finished before); every finished conversation goes to the run's spool as it
    finishes, and to `sink` in plan order. With `top_up` (whose `plans` is `plans`), the extra plans it decides join
    the queue while the rest are in flight (distill/generation/top_up.py): it counts what `sink` hands it, or, with
    `judged`, what the judge hands it once graded (then the rollouts end when the judge has counted the last one).
    Returns how many conversations `plans` have now."""
    run = run or RunSession.ephemeral(rollout.config, rollout.teacher)
    run.add_plans(plans)
    ids = list(plan_column(plans, "id"))
    ordered = InOrder(ids, run.spool, sink or (lambda t: None))
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
        if judged is None:
            counted()

    def counted() -> None:  # after the top-up counted a conversation: its decision, if one is due
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
        spawn()

    def spawn() -> None:  # workers for the queue (one that returned may still be in `active` a moment)
        live = sum(not task.done() for task in active)
        while queue and live < most and run.stopped is None:
            task = asyncio.ensure_future(worker())
            active.add(task)
            task.add_done_callback(active.discard)
            live += 1

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
        if judged is not None:
            judged.on_count = counted
        admit(0)
        while True:
            spawn()  # extra plans the judge's count admitted after the workers had returned
            if active:
                await asyncio.gather(*active)
            elif judged is not None and judged.pending() and run.stopped is None:
                judged.wake.clear()  # the judge still has conversations to count: they may bring extra plans
                if judged.pending():
                    await judged.wake.wait()
            else:
                break
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
) -> TopUpResult:
    """Roll out the plans; as they finish, in plan order, the judge grades them (distill/generation/judge.py) and the
    mix top-up counts them, the judge's verdicts included (its extra conversations join the rollouts,
    distill/generation/top_up.py), so neither waits for the rollouts to drain. Returns the plans (the extra ones
    included) and the manifest's `top_up`."""
    from distill.generation.coverage import MixCount

    config = rollout.config
    by_id = {c.id: c for c in chunks}
    run = run or RunSession.ephemeral(config, rollout.teacher)
    counted = MixCount(config, rollout.fmt)
    if not pilot:  # the tokenizer (0.5 s to load) before the first request, not at the first count, mid-run
        from distill.tokens import encoding_for

        encoding_for(counted.model)
    topped = TopUp(config, chunks, plans, counted)
    if pilot:  # distill estimate, a shard: these plans only, no top-up
        topped.pilot = len(plans)
    judged = _Judged(rollout, by_id, run, None if pilot else topped) if config.judge.enabled else None
    sink = judged.feed.put if judged is not None else None if pilot else topped.add

    waiting = 0
    try:
        try:
            await roll_plans(topped.plans, by_id, rollout, progress, run, None if pilot else topped, sink, judged)
        except WavePending as pending:  # batch mode: the judge's requests of this wave are still to be collected
            waiting += pending.count
        except RunStopped:  # the judge's requests in flight finish and are stored too
            if judged is not None:
                judged.feed.close()
                await asyncio.gather(judged.task, return_exceptions=True)
            raise
        if judged is not None:
            judged.feed.close()
            try:
                await judged.task
            except WavePending as pending:
                waiting += pending.count
        run.check_stopped()  # the judge stopped by the budget or the breaker: judged on resume
        if waiting:
            raise WavePending(waiting)
        return topped.result()  # the count and its dedup index go: export builds its own
    finally:
        if judged is not None and not judged.task.done():
            judged.task.cancel()
        await rollout.teacher.aclose()


class _Feed:
    """The finished conversations in plan order, from the rollouts to the judge: an async stream that ends at
    `close()`. It holds up to `cap` conversations; past that only ids, read back from the spool when their turn comes."""

    def __init__(self, spool: Any, cap: int = 256) -> None:
        self.spool, self.cap = spool, cap
        self.queue: asyncio.Queue[Trajectory | str | None] = asyncio.Queue()
        self.closed = False
        self.fed = 0

    def put(self, t: Trajectory) -> None:
        self.fed += 1
        self.queue.put_nowait(t if self.queue.qsize() < self.cap else t.id)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Trajectory]:
        return self._items()

    async def _items(self) -> AsyncIterator[Trajectory]:
        while (item := await self.queue.get()) is not None:
            yield self.spool.get(item) if isinstance(item, str) else item


async def draining(run: RunSession, rollout: Rollout, work: Awaitable[T]) -> T:
    """`work`, during which the first Ctrl-C drains the requests in flight into the ledger (generation/interrupt.py)."""
    from distill.generation.interrupt import DrainOnInterrupt

    with DrainOnInterrupt(run, rollout.teacher, rollout.config.teacher.timeout_s):
        return await work


class _Judged:
    """The judge between the rollouts and the top-up's count: the conversations in plan order (`feed`) are graded
    (distill/generation/judge.py; verdicts stored on the records, the spool's latest version; export applies the
    thresholds) and then counted, so the top-up counts what export will accept, the judge's thresholds included.
    Batch mode: at the first conversation whose verdict waits for its wave, the count stops for this wave."""

    def __init__(self, rollout: Rollout, chunks: dict[str, Any], run: RunSession, top_up: TopUp | None) -> None:
        self.spool, self.top_up = run.spool, top_up
        self.feed = _Feed(run.spool)
        self.seen = 0
        self.stalled = False
        self.wake = asyncio.Event()
        self.on_count: Callable[[], None] = lambda: None
        self.task = asyncio.ensure_future(self._grade(rollout, chunks, run))

    def pending(self) -> bool:
        """True while conversations handed to the judge are still to be counted."""
        return self.top_up is not None and not self.stalled and self.seen < self.feed.fed and not self.task.done()

    async def _grade(self, rollout: Rollout, chunks: dict[str, Any], run: RunSession) -> None:
        from distill.generation.judge import judge_stream

        documents = {k: c.text for k, c in chunks.items()}
        try:
            async for t in judge_stream(rollout.config, self.feed, documents, rollout.teacher, judged=[0]):
                if t.meta.get("judge") is not None or t.outcome == "failed":
                    self.spool.put(t)
                self.seen += 1
                if self.top_up is not None and not self.stalled:
                    if t.outcome == "accepted" and t.meta.get("judge") is None:
                        self.stalled = True  # batch mode: its verdict comes with a later wave, and its count
                    else:
                        self.top_up.add(t)
                        self.on_count()
                self.wake.set()
        except RunStopped as exc:  # budget or breaker: the unjudged conversations are judged on resume
            run.stop(exc)
        finally:
            self.wake.set()
