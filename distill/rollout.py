"""Rollouts: the teacher plays the agent, turn by turn, step by step; the tools really run.

At each step the teacher receives exactly the messages the agent runtime would send (the format renders them),
its answer is checked strictly before anything else happens, tool calls run for real, and the turn ends at a
Final Answer or after `agent.max_steps` model calls (LangChain's `max_iterations`). Later turns carry earlier turns
as the runtime's memory holds them. A conversation ends accepted, rejected (with reason and raw text) or failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.config import Config
from distill.questions import QuestionError, parse_questions, question_request
from distill.sources import Chunk
from distill.teachers.base import Teacher, TeacherCallError, TeacherRequest
from distill.tools import ToolBox
from distill.trajectory import Plan, Step, Trajectory, Turn
from distill.validator import Reason

__all__ = ["Rollout", "run_conversation"]


@dataclass
class Rollout:
    """Everything a conversation needs besides its plan."""

    config: Config
    teacher: Teacher
    fmt: Any
    tools: ToolBox

    def step_request(self, plan: Plan, earlier: list[Turn], question: str, steps: list[Step]) -> TeacherRequest:
        """The request for the next agent step: the runtime's messages, its stop sequences, the plan as context."""
        teacher = self.config.teacher
        return TeacherRequest(
            stage="rollout",
            messages=self.fmt.messages_for_step(earlier, question, steps),
            params={
                "temperature": teacher.temperature,
                "max_tokens": teacher.max_tokens,
                "stop": self.fmt.stop,
                "seed": plan.seed,
            },
            context={"plan": plan, "question": question, "steps": steps, "turn": len(earlier)},
        )


async def run_conversation(plan: Plan, chunk: Chunk, rollout: Rollout) -> Trajectory:
    """Synthesize the user's questions, then play every turn; the outcome is recorded on the trajectory."""
    teacher = rollout.teacher
    trajectory = Trajectory(
        id=plan.id,
        kind=plan.kind,
        doc_id=plan.doc_id,
        chunk_id=plan.chunk_id,
        teacher={"provider": teacher.provider, "model": teacher.model},
        meta={"tool": plan.tool},
    )
    request = question_request(rollout.config, plan, chunk)
    try:
        reply = await teacher.complete(request)
        questions = parse_questions(reply, plan)
    except TeacherCallError as exc:
        return trajectory.fail("questions", exc.reason, exc.detail)
    except QuestionError as exc:
        return trajectory.reject("questions", exc.reason, exc.detail, reply.text)

    max_steps = rollout.config.agent.max_steps
    for question in questions:
        earlier = list(trajectory.turns)
        turn = Turn(question=question)
        for _ in range(max_steps):
            request = rollout.step_request(plan, earlier, question, turn.steps)
            try:
                reply = await teacher.complete(request)
            except TeacherCallError as exc:
                return trajectory.fail("rollout", exc.reason, exc.detail)
            verdict = rollout.fmt.check(reply.text, reply.finish_reason)
            if not verdict.ok:
                trajectory.turns.append(turn)
                return trajectory.reject("rollout", str(verdict.reason), verdict.detail, reply.text)
            action = verdict.action
            step = Step(action=action.action, action_input=action.action_input, raw=reply.text or "")
            if not action.is_final:
                observation = rollout.tools.run(action.action, action.action_input)
                step.observation, step.tool_error = observation.text, observation.error
            turn.steps.append(step)
            if action.is_final:
                break
        trajectory.turns.append(turn)
        if turn.answer is None:
            detail = f"no Final Answer within max_steps={max_steps} model calls"
            return trajectory.reject("rollout", str(Reason.NO_FINAL_ANSWER), detail, turn.steps[-1].raw)
    return trajectory
