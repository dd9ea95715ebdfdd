"""The judge stage (`judge.enabled`): a model grades each accepted conversation; verdicts are stored; export applies them.

Every accepted conversation gets one `stage="judge"` request, sent as soon as the conversation has finished (in plan
order, beside the rollouts still running: distill/generation/scheduler.py), through the same teacher object (engine, ledger, meter, budget): the system prompt `prompts/judge.system.md`, the conversation, its
document passage, the tools and the rubric of each criterion (`prompts/judge.<criterion>.md`), answered with
structured output (a JSON schema: a score 1-5 and a one-sentence reason per criterion). `judge.model` other than the
teacher's is sent as the request's `model` (the same endpoint; priced at the teacher's price). When the teacher is
offline, `OfflineJudge` (word overlap, labelled `offline-lexical`) stands in.

The verdict is stored in the trajectory record (`meta["judge"]`: the judge, the request key, the scores), so a
resumed run does not ask again and `distill export` re-applies the thresholds with zero calls: `apply_verdicts`
rejects a conversation below a criterion's threshold with reason `judge_<criterion>` (stage `judge`) and the judge's
reason as detail. A judge call that gets no answer fails the conversation (stage `judge`; a resume asks again); an
answer that cannot be read is stored as such and rejects the conversation as `judge_unreadable`.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any

from distill.config import Config
from distill.generation.offline_judge import OFFLINE_JUDGE, OFFLINE_JUDGE_NOTE, OfflineJudge
from distill.judge_config import SCORE_MAX, SCORE_MIN
from distill.teachers.base import TeacherCallError, TeacherReply, TeacherRequest
from distill.teachers.batch import RequestPending, WavePending
from distill.templates import template
from distill.trajectory import Trajectory

__all__ = ["Verdicts", "apply_verdicts", "judge_all", "judge_request", "judge_stream", "read_verdict", "transcript"]

UNREADABLE = "judge_unreadable"


def _schema(criteria: Sequence[str]) -> dict[str, Any]:
    item = {
        "type": "object",
        "properties": {"score": {"type": "integer"}, "reason": {"type": "string"}},
        "required": ["score", "reason"],
        "additionalProperties": False,
    }
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "verdict",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {c: item for c in criteria},
                "required": list(criteria),
                "additionalProperties": False,
            },
        },
    }


def transcript(trajectory: Trajectory) -> str:
    """The conversation as the judge reads it: user messages, tool calls with what they returned, final answers."""
    lines: list[str] = []
    for turn in trajectory.turns:
        lines.append(f"User: {turn.question}")
        for step in turn.steps:
            if step.is_final:
                lines.append(f"Assistant (final answer): {step.action_input}")
            else:
                lines.append(f"Assistant called the tool {step.action} with input: {step.action_input}")
                lines.append(f"The tool returned: {step.observation or ''}")
    return "\n".join(lines)


def judge_request(config: Config, trajectory: Trajectory, document: str, *,
                  criteria: Sequence[str] | None = None) -> TeacherRequest:
    """The structured-output request that grades one conversation (stage `judge`) on `criteria` (default: the
    config's `judge.criteria`; `distill eval --judge` asks only those that grade an answer)."""
    criteria = list(config.judge.criteria if criteria is None else criteria)
    rubrics = "\n\n".join(template(f"judge.{c}.md").template.strip() for c in criteria)
    user = template("judge.user.md").substitute(
        tools="\n".join(f"- {t.name}: {t.description}" for t in config.tools),
        document=document,
        conversation=transcript(trajectory),
        criteria=rubrics,
        names=", ".join(criteria),
    )
    params: dict[str, Any] = {"temperature": 0, "max_tokens": config.judge.max_tokens, "seed": 0}
    if config.judge.model and config.judge.model != config.teacher.model:
        params["model"] = config.judge.model
    return TeacherRequest(
        stage="judge",
        messages=[
            {"role": "system", "content": template("judge.system.md").template.strip()},
            {"role": "user", "content": user},
        ],
        params=params,
        response_format=_schema(criteria),
        context={"trajectory": trajectory, "document": document},
    )


class VerdictError(ValueError):
    """The judge's answer is not a verdict on every criterion."""


def read_verdict(reply: TeacherReply, criteria: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{criterion: {"score", "reason"}} from the judge's reply; VerdictError when it is not that."""
    if reply.finish_reason != "stop":
        raise VerdictError(f"the judge's answer was cut off (finish_reason={reply.finish_reason})")
    try:
        data = json.loads(reply.text or "")
    except ValueError as exc:
        raise VerdictError(f"the judge's answer is not JSON: {exc}") from None
    out: dict[str, dict[str, Any]] = {}
    for criterion in criteria:
        item = data.get(criterion) if isinstance(data, dict) else None
        score = item.get("score") if isinstance(item, dict) else None
        reason = item.get("reason") if isinstance(item, dict) else None
        if isinstance(score, bool) or not isinstance(score, int) or not SCORE_MIN <= score <= SCORE_MAX:
            raise VerdictError(f"no score {SCORE_MIN}-{SCORE_MAX} for {criterion!r} in the judge's answer")
        out[criterion] = {"score": score, "reason": reason.strip() if isinstance(reason, str) else ""}
    return out


def _judge_name(config: Config, teacher: Any) -> str:
    if getattr(teacher, "provider", None) == "offline":
        return OFFLINE_JUDGE
    return config.judge.model or config.teacher.model


async def judge_all(config: Config, trajectories: Sequence[Trajectory], documents: dict[str, str], teacher: Any) -> int:
    """Judge every accepted conversation without a current verdict (stored in `meta["judge"]`); returns how many
    were judged now. RunStopped (budget, breaker) propagates; what was judged before it is kept in the records."""
    counted = [0]
    async for _ in judge_stream(config, trajectories, documents, teacher, judged=counted, window=len(trajectories)):
        pass
    return counted[0]


async def _each(items: Iterable[Trajectory] | AsyncIterable[Trajectory]) -> AsyncIterator[Trajectory]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def judge_stream(
    config: Config, trajectories: Iterable[Trajectory] | AsyncIterable[Trajectory], documents: dict[str, str],
    teacher: Any, *,
    judged: list[int] | None = None, window: int | None = None,
) -> AsyncIterator[Trajectory]:
    """`trajectories` (or an async stream of them, e.g. as the rollouts finish), in their order, each accepted one
    judged (verdict in `meta["judge"]`) unless it has a current verdict; at most `window` (default 4 x
    judge.concurrency, at least 64) are held at a time. `judged[0]` counts the ones judged now. Batch mode: the ones
    waiting for their wave raise WavePending after the last is yielded."""
    if not config.judge.enabled:
        async for t in _each(trajectories):
            yield t
        return
    name = _judge_name(config, teacher)
    offline = OfflineJudge() if name == OFFLINE_JUDGE else None
    gate = asyncio.Semaphore(config.judge.concurrency)
    criteria = list(config.judge.criteria)
    waiting: list[str] = []
    counted = judged if judged is not None else [0]

    def ask(t: Trajectory) -> tuple[TeacherRequest, dict[str, Any], str] | None:
        document = documents.get(t.chunk_id, "")
        request = judge_request(config, t, document)
        key = request.key(name)
        stored = t.meta.get("judge")
        if isinstance(stored, dict) and stored.get("key") == key:
            return None  # judged before with this very request
        return request, {"judge": name, "key": key}, document

    async def one(t: Trajectory, request: TeacherRequest, verdict: dict[str, Any]) -> None:
        async with gate:
            try:
                reply = await teacher.complete(request)
            except TeacherCallError as exc:
                t.fail("judge", exc.reason, exc.detail)
                counted[0] += 1
                return
            except RequestPending:  # batch mode: judged in a later wave (distill/generation/waves.py)
                waiting.append(t.id)
                return
        try:
            verdict["scores"] = read_verdict(reply, criteria)
        except VerdictError as exc:
            verdict["error"], verdict["raw"] = str(exc), reply.text
        t.meta["judge"] = verdict
        counted[0] += 1

    def grade(t: Trajectory) -> asyncio.Task[None] | None:  # the judge's request in flight, if one is
        asked = ask(t) if t.outcome == "accepted" else None
        if asked is None:
            return None
        request, verdict, document = asked
        if offline is None:
            return asyncio.ensure_future(one(t, request, verdict))
        verdict["scores"] = offline.verdict(t, document, criteria)
        t.meta["judge"] = verdict
        counted[0] += 1
        return None

    # A graded conversation is yielded as soon as it and every one before it are graded, even while the source has
    # nothing new (an async source waits on the rollouts, which may wait on what is yielded).
    held: deque[tuple[Trajectory, asyncio.Task[None] | None]] = deque()
    size = max(1, window if window is not None else max(64, 4 * config.judge.concurrency))
    source = _each(trajectories).__aiter__()
    reading: asyncio.Future[Trajectory] | None = None
    ended = False
    try:
        while True:
            while held and (held[0][1] is None or held[0][1].done()):
                first, task = held.popleft()
                if task is not None:
                    task.result()  # what the judge call raised (the budget, the breaker) goes on from here
                yield first
            head = held[0][1] if held else None
            if ended or len(held) >= size:
                if head is None:
                    break
                await asyncio.wait({head})
                continue
            if head is None and reading is None:  # nothing in flight: read the next one directly
                try:
                    t = await source.__anext__()
                except StopAsyncIteration:
                    ended = True
                    continue
            else:
                if reading is None:
                    reading = asyncio.ensure_future(source.__anext__())
                waits: set[asyncio.Future[Any]] = {reading} if head is None else {reading, head}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    continue
                got, reading = reading, None
                try:
                    t = got.result()
                except StopAsyncIteration:
                    ended = True
                    continue
            held.append((t, grade(t)))
    finally:
        if reading is not None and not reading.done():
            reading.cancel()
        for _, pending in held:
            if pending is not None and not pending.done():
                pending.cancel()
    if waiting:
        raise WavePending(len(waiting))


class Verdicts:
    """Applies the stored verdicts one conversation at a time (`apply`) and counts them for the manifest's `judge`
    section (`section`; None when the judge is off)."""

    def __init__(self, config: Config) -> None:
        self.judge = config.judge
        self.criteria = list(self.judge.criteria)
        self.scores: dict[str, Counter[int]] = {c: Counter() for c in self.criteria}
        self.rejected: Counter[str] = Counter()
        self.judges: Counter[str] = Counter()
        self.unjudged = 0

    def apply(self, t: Trajectory, *, count: bool = True) -> None:
        """Reject `t` (stage `judge`) when its stored verdict is below a threshold or unreadable."""
        judge, criteria = self.judge, self.criteria
        if not judge.enabled:
            return
        stored = t.meta.get("judge")
        if t.outcome != "accepted" or not isinstance(stored, dict):
            self.unjudged += int(count and t.outcome == "accepted")
            return
        if count:
            self.judges[str(stored.get("judge"))] += 1
        if "error" in stored:
            t.reject("judge", UNREADABLE, str(stored["error"]), stored.get("raw"))
            if count:
                self.rejected[UNREADABLE] += 1
            return
        verdict = stored.get("scores") or {}
        if any(c not in verdict for c in criteria):  # judged on other criteria: judge again with `distill generate`
            self.unjudged += int(count)
            return
        if count:
            for c in criteria:
                self.scores[c][int(verdict[c]["score"])] += 1
        failing = next((c for c in criteria if int(verdict[c]["score"]) < judge.threshold_of(c)), None)
        if failing is not None:
            detail = f"{failing} scored {verdict[failing]['score']} < {judge.threshold_of(failing)}: " \
                     f"{verdict[failing]['reason']}"
            t.reject("judge", f"judge_{failing}", detail, None)
            if count:
                self.rejected[f"judge_{failing}"] += 1

    def rejects(self, t: Trajectory) -> bool:
        """True when `apply` would reject `t` (nothing counted, `t` left as it is)."""
        stored = t.meta.get("judge")
        if not self.judge.enabled or t.outcome != "accepted" or not isinstance(stored, dict):
            return False
        if "error" in stored:
            return True
        verdict = stored.get("scores") or {}
        if any(c not in verdict for c in self.criteria):
            return False
        return any(int(verdict[c]["score"]) < self.judge.threshold_of(c) for c in self.criteria)

    def section(self) -> dict[str, Any] | None:
        if not self.judge.enabled:
            return None
        criteria = self.criteria
        section: dict[str, Any] = {
            "judges": dict(self.judges.most_common()),
            "criteria": criteria,
            "thresholds": {c: self.judge.threshold_of(c) for c in criteria},
            "judged": sum(self.judges.values()),
            "unjudged": self.unjudged,
            "rejected_by_reason": dict(self.rejected.most_common()),
            "scores": {c: {str(s): self.scores[c][s] for s in range(SCORE_MIN, SCORE_MAX + 1)} for c in criteria},
        }
        if OFFLINE_JUDGE in self.judges:
            section["note"] = OFFLINE_JUDGE_NOTE
        return section


def apply_verdicts(config: Config, trajectories: Iterable[Trajectory]) -> dict[str, Any] | None:
    """Reject the accepted conversations whose stored verdict is below a threshold; the manifest's `judge` section
    (None when the judge is off)."""
    verdicts = Verdicts(config)
    for t in trajectories:
        verdicts.apply(t)
    return verdicts.section()
