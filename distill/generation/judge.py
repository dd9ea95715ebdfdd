"""The judge stage (`judge.enabled`): a model grades each accepted conversation; verdicts are stored; export applies them.

Between the rollouts and the export, every accepted conversation gets one `stage="judge"` request through the same
teacher object (engine, ledger, meter, budget): the system prompt `prompts/judge.system.md`, the conversation, its
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
from collections import Counter
from collections.abc import Sequence
from typing import Any

from distill.config import Config
from distill.generation.offline_judge import OFFLINE_JUDGE, OFFLINE_JUDGE_NOTE, OfflineJudge
from distill.judge_config import SCORE_MAX, SCORE_MIN
from distill.teachers.base import TeacherCallError, TeacherReply, TeacherRequest
from distill.teachers.batch import RequestPending, WavePending
from distill.templates import template
from distill.trajectory import Trajectory

__all__ = ["apply_verdicts", "judge_all", "judge_request", "read_verdict", "transcript"]

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
    if not config.judge.enabled:
        return 0
    name = _judge_name(config, teacher)
    offline = OfflineJudge() if name == OFFLINE_JUDGE else None
    gate = asyncio.Semaphore(config.judge.concurrency)
    criteria = list(config.judge.criteria)

    async def one(t: Trajectory) -> bool:
        document = documents.get(t.chunk_id, "")
        request = judge_request(config, t, document)
        key = request.key(name)
        stored = t.meta.get("judge")
        if isinstance(stored, dict) and stored.get("key") == key:
            return False  # judged before with this very request
        verdict: dict[str, Any] = {"judge": name, "key": key}
        if offline is not None:
            verdict["scores"] = offline.verdict(t, document, criteria)
        else:
            async with gate:
                try:
                    reply = await teacher.complete(request)
                except TeacherCallError as exc:
                    t.fail("judge", exc.reason, exc.detail)
                    return True
                except RequestPending:  # batch mode: judged in a later wave (distill/generation/waves.py)
                    waiting.append(t.id)
                    return False
            try:
                verdict["scores"] = read_verdict(reply, criteria)
            except VerdictError as exc:
                verdict["error"], verdict["raw"] = str(exc), reply.text
        t.meta["judge"] = verdict
        return True

    waiting: list[str] = []
    done = await asyncio.gather(*(one(t) for t in trajectories if t.outcome == "accepted"))
    if waiting:
        raise WavePending(len(waiting))
    return sum(done)


def apply_verdicts(config: Config, trajectories: Sequence[Trajectory]) -> dict[str, Any] | None:
    """Reject the accepted conversations whose stored verdict is below a threshold; the manifest's `judge` section
    (None when the judge is off)."""
    judge = config.judge
    if not judge.enabled:
        return None
    criteria = list(judge.criteria)
    scores: dict[str, Counter[int]] = {c: Counter() for c in criteria}
    rejected: Counter[str] = Counter()
    judges: Counter[str] = Counter()
    unjudged = 0
    for t in trajectories:
        stored = t.meta.get("judge")
        if t.outcome != "accepted" or not isinstance(stored, dict):
            unjudged += t.outcome == "accepted"
            continue
        judges[str(stored.get("judge"))] += 1
        if "error" in stored:
            t.reject("judge", UNREADABLE, str(stored["error"]), stored.get("raw"))
            rejected[UNREADABLE] += 1
            continue
        verdict = stored.get("scores") or {}
        if any(c not in verdict for c in criteria):  # judged on other criteria: judge again with `distill generate`
            unjudged += 1
            continue
        for c in criteria:
            scores[c][int(verdict[c]["score"])] += 1
        failing = next((c for c in criteria if int(verdict[c]["score"]) < judge.threshold_of(c)), None)
        if failing is not None:
            detail = f"{failing} scored {verdict[failing]['score']} < {judge.threshold_of(failing)}: " \
                     f"{verdict[failing]['reason']}"
            t.reject("judge", f"judge_{failing}", detail, None)
            rejected[f"judge_{failing}"] += 1
    section: dict[str, Any] = {
        "judges": dict(judges.most_common()),
        "criteria": criteria,
        "thresholds": {c: judge.threshold_of(c) for c in criteria},
        "judged": sum(judges.values()),
        "unjudged": unjudged,
        "rejected_by_reason": dict(rejected.most_common()),
        "scores": {c: {str(s): scores[c][s] for s in range(SCORE_MIN, SCORE_MAX + 1)} for c in criteria},
    }
    if OFFLINE_JUDGE in judges:
        section["note"] = OFFLINE_JUDGE_NOTE
    return section
