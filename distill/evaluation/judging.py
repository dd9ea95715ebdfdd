"""`distill eval --judge`: the generation judge grades each student's final answers, next to the token F1.

A student can be well formatted and wrong; format adherence and the F1 against one reference answer do not show it.
Each question a student answered (a valid Final Answer) becomes a one-turn conversation (the question, the student's
accepted tool calls with what the tools returned, its final answer) and is graded by the same judge as generation
(`distill.generation.judge`: its request builder, its rubrics, its structured verdict), on the criteria that apply to
an answer: `supported` (by the tool observations) and `answers` (the question), those of them in `judge.criteria`.
The judge is the config's teacher (`judge.model`, else `teacher.model`, on the teacher's endpoint), without a ledger
or a meter (eval never writes into the run's ledger); with the offline teacher the lexical judge stands in. A
question without a final answer is not judged (it already fails completion); a judge call without an answer or a
reply that is not a verdict is counted, not scored. Verdicts go on the transcripts (`judge`) and into the metrics
(`judge`: the mean score per criterion).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from distill.config import Config
from distill.evaluation.questions import EvalError, EvalQuestion
from distill.evaluation.report import ModelResult, Transcript
from distill.generation.judge import VerdictError, judge_request, read_verdict
from distill.generation.offline_judge import OFFLINE_JUDGE, OfflineJudge
from distill.teachers.base import Teacher, TeacherCallError
from distill.trajectory import FINAL_ANSWER, ConversationKind, Step, Trajectory, Turn

__all__ = ["ANSWER_CRITERIA", "answer_criteria", "as_conversation", "judge_students"]

ANSWER_CRITERIA = ("supported", "answers")  # the judge's criteria that grade an answer (not the question, the plan)


def answer_criteria(config: Config) -> list[str]:
    """The criteria eval grades: `supported` and `answers`, those of them the config's judge has."""
    chosen: list[str] = [c for c in config.judge.criteria if c in ANSWER_CRITERIA]
    if not chosen:
        raise EvalError(
            f"--judge grades answers on {' and '.join(ANSWER_CRITERIA)}, and judge.criteria has neither",
            hint="add supported and/or answers to judge.criteria in the config",
        )
    return chosen


def as_conversation(q: EvalQuestion, t: Transcript) -> Trajectory | None:
    """The student's answered question as a one-turn conversation (None without a final answer)."""
    if t.answer is None:
        return None
    steps: list[Step] = []
    for s in t.steps:
        if not s.ok:
            break
        if s.action == FINAL_ANSWER:
            steps.append(Step(action=FINAL_ANSWER, action_input=t.answer, raw=s.raw or ""))
            break
        calls = s.calls or [{"action": s.action, "action_input": s.action_input, "observation": s.observation}]
        steps += [Step(action=str(c["action"]), action_input=str(c["action_input"] or ""), raw="",
                       observation=c.get("observation")) for c in calls]
    kind: ConversationKind = "tool" if any(not s.is_final for s in steps) else "direct"
    return Trajectory(id=q.id or t.id, kind=kind, doc_id=q.doc_id or "", chunk_id=q.chunk_id or "",
                      turns=[Turn(question=q.question, steps=steps)])


def judge_name(config: Config) -> str:
    """The judge eval uses: the lexical one with the offline teacher, else judge.model or teacher.model."""
    if config.teacher.resolved_provider() == "offline":
        return OFFLINE_JUDGE
    return config.judge.model or config.teacher.model


async def _judge_one(config: Config, judge: Teacher | None, conversation: Trajectory, document: str,
                     criteria: list[str], gate: asyncio.Semaphore, usage: dict[str, int]) -> dict[str, Any]:
    if judge is None:
        return {"scores": OfflineJudge().verdict(conversation, document, criteria)}
    request = judge_request(config, conversation, document, criteria=criteria)
    request.stage = "eval_judge"
    async with gate:
        try:
            reply = await judge.complete(request)
        except TeacherCallError as exc:
            return {"error": exc.reason, "detail": exc.detail}
    usage["requests"] += 1
    for key in ("input", "output"):
        usage[f"{key}_tokens"] += int(reply.usage.get(key, 0) or 0)
    try:
        return {"scores": read_verdict(reply, criteria)}
    except VerdictError as exc:
        return {"error": "judge_unreadable", "detail": str(exc), "raw": reply.text}


async def _judge_all(config: Config, jobs: list[tuple[Transcript, Trajectory, str]], criteria: list[str],
                     judge: Teacher | None, usage: dict[str, int]) -> None:
    gate = asyncio.Semaphore(config.judge.concurrency)
    try:
        verdicts = await asyncio.gather(*(_judge_one(config, judge, c, doc, criteria, gate, usage) for _, c, doc in jobs))
    finally:
        if judge is not None:
            await judge.aclose()
    for (transcript, _, _), verdict in zip(jobs, verdicts, strict=True):
        transcript.judge = verdict


def judge_students(config: Config, results: Sequence[ModelResult], questions: Sequence[EvalQuestion],
                   documents: dict[str, str], judge: Teacher | None = None) -> dict[str, Any]:
    """Grade every answered question of every model (verdicts on the transcripts); the report's `judge` settings.

    `judge`: the policy that answers the judge requests (default: the config's teacher; none when it is offline).
    """
    criteria = answer_criteria(config)
    name = judge_name(config)
    if judge is None and name != OFFLINE_JUDGE:
        from distill.teachers import make_teacher

        judge = make_teacher(config)
    by_id = {q.id: q for q in questions}
    jobs: list[tuple[Transcript, Trajectory, str]] = []
    for result in results:
        for t in result.transcripts:
            q = by_id.get(t.id) or EvalQuestion(t.id, t.question)
            conversation = as_conversation(q, t)
            if conversation is not None:
                jobs.append((t, conversation, documents.get(q.chunk_id or "", "")))
    usage = {"requests": 0, "input_tokens": 0, "output_tokens": 0}
    asyncio.run(_judge_all(config, jobs, criteria, judge if name != OFFLINE_JUDGE else None, usage))
    return {"judge": name, "criteria": criteria, **({} if name == OFFLINE_JUDGE else usage)}
