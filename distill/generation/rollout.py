"""Rollouts: the teacher plays the agent, turn by turn, step by step; the tools really run.

At each step the teacher receives exactly the messages the agent runtime would send (the format renders them),
its answer is checked strictly before anything else happens, tool calls run for real, and the turn ends at a
Final Answer or after `agent.max_steps` model calls (LangChain's `max_iterations`). The format drives each step: it
renders the request (`messages_for_step`, `stop`, `tools`) and reads the reply into steps (`read`), so the loop is
format-agnostic; one reply may hold several parallel tool calls. A `kind: simulated` tool's observation is written by
the teacher (`distill.agent.simulated`). Later turns carry earlier turns as the runtime's memory holds them. A
conversation ends accepted, rejected (with reason and raw text) or failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.agent.simulated import SimulationError, read_simulation, simulation_request
from distill.agent.tools import ToolBox
from distill.config import Config, SimulatedTool
from distill.generation.questions import QuestionError, parse_questions, question_request
from distill.generation.sources import Chunk
from distill.teachers.base import Teacher, TeacherCallError, TeacherRequest
from distill.trajectory import Plan, Reason, Step, Trajectory, Turn

__all__ = ["Rollout", "run_conversation"]

# Answers the endpoint cut off: failed teacher calls with their reason (the validator's reasons of the same name).
_CUT_OFF = {"length": str(Reason.TRUNCATED), "content_filter": str(Reason.CONTENT_FILTER)}


def _cut_detail(reply: Any) -> str:
    return f"the teacher's answer was cut off (finish_reason={reply.finish_reason}); it is never used as data"


@dataclass
class Rollout:
    """Everything a conversation needs besides its plan."""

    config: Config
    teacher: Teacher
    fmt: Any
    tools: ToolBox

    def step_request(self, plan: Plan, earlier: list[Turn], question: str, steps: list[Step]) -> TeacherRequest:
        """The request for the next agent step: the runtime's messages, its stop sequences or tools, the plan as
        context."""
        teacher = self.config.teacher
        params: dict[str, Any] = {"temperature": teacher.temperature, "max_tokens": teacher.max_tokens}
        if self.fmt.stop is not None:
            params["stop"] = self.fmt.stop
        params["seed"] = plan.seed
        return TeacherRequest(
            stage="rollout",
            messages=self.fmt.messages_for_step(earlier, question, steps),
            params=params,
            context={"plan": plan, "question": question, "steps": steps, "turn": len(earlier)},
            tools=getattr(self.fmt, "tools", None),  # native tool-calling formats
            parallel_tool_calls=getattr(self.fmt, "parallel_tool_calls", None),
        )

    async def observe(self, plan: Plan, question: str, step: Step) -> None:
        """Fill in a tool call's observation: the tool runs, or (kind: simulated) the teacher writes it.

        Raises TeacherCallError or SimulationError when a simulated observation cannot be had.
        """
        if self.tools.is_simulated(step.action):
            tool = self.config.tool_named(step.action)
            assert isinstance(tool, SimulatedTool)  # is_simulated said so
            reply = await self.teacher.complete(simulation_request(self.config, tool, plan, question, step))
            observation = read_simulation(reply, tool)
            step.simulated = True
        else:
            observation = await self.tools.arun(step.action, step.action_input)
        step.observation, step.tool_error = observation.text, observation.error


async def run_conversation(plan: Plan, chunk: Chunk, rollout: Rollout) -> Trajectory:
    """Synthesize the user's questions, then play every turn; the outcome is recorded on the trajectory."""
    teacher = rollout.teacher
    trajectory = Trajectory(
        id=plan.id,
        kind=plan.kind,
        doc_id=plan.doc_id,
        chunk_id=plan.chunk_id,
        teacher={"provider": teacher.provider, "model": teacher.model},
        meta={"tool": plan.tool, "format": rollout.config.agent.format},
    )
    request = question_request(rollout.config, plan, chunk)
    try:
        reply = await teacher.complete(request)
        if reply.finish_reason in _CUT_OFF:
            return trajectory.fail("questions", _CUT_OFF[reply.finish_reason], _cut_detail(reply), reply.text)
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
            if reply.finish_reason in _CUT_OFF:  # a failed teacher call, never data; the raw text is kept
                trajectory.turns.append(turn)
                return trajectory.fail("rollout", _CUT_OFF[reply.finish_reason], _cut_detail(reply), reply.text)
            reading = rollout.fmt.read(reply)
            if not reading.ok:
                trajectory.turns.append(turn)
                return trajectory.reject("rollout", str(reading.reason), reading.detail, reading.raw)
            for step in reading.steps:
                if not step.is_final:
                    try:
                        await rollout.observe(plan, question, step)
                    except TeacherCallError as exc:
                        return trajectory.fail("rollout", exc.reason, exc.detail)
                    except SimulationError as exc:
                        trajectory.turns.append(turn)
                        return trajectory.reject("rollout", str(exc.reason), exc.detail, exc.raw)
                    if step.simulated:
                        trajectory.meta["simulated_calls"] = trajectory.meta.get("simulated_calls", 0) + 1
                turn.steps.append(step)
            if reading.final:
                break
        trajectory.turns.append(turn)
        if turn.answer is None:
            detail = f"no Final Answer within max_steps={max_steps} model calls"
            return trajectory.reject("rollout", str(Reason.NO_FINAL_ANSWER), detail, turn.steps[-1].raw)
    return trajectory
