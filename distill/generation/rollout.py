"""Rollouts: the teacher plays the agent, turn by turn, step by step; the tools really run.

The step loop is the shared agent loop (`distill.agent.loop.AgentLoop`): at each step the teacher receives exactly
the messages the agent runtime would send (the format renders them), its answer is checked strictly before anything
else happens, tool calls run for real, and the turn ends at a Final Answer or after `agent.max_steps` model calls
(LangChain's `max_iterations`); one reply may hold several parallel tool calls. This module owns what is particular
to generation: the user's questions are synthesized first, each step is seeded with the plan's seed and carries the
plan as context, a `kind: simulated` tool's observation is written by the teacher (`distill.agent.simulated`),
later turns carry earlier turns as the runtime's memory holds them, and the loop's turn endings become the
conversation's outcome: accepted, rejected (with reason and raw text) or failed.

Step resampling (`generation.step_retries`): a step whose answer the strict reader rejects is asked again with the
next seeds (stage `resample`) before the conversation is rejected; the rejected answers are kept on the accepted
step (`Step.attempts`) or, when every attempt was rejected (or the last re-ask was cut off), in the conversation's
`meta.attempts`. Cut-off answers are not resampled: they stay failed calls, which a resume asks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.agent.loop import CUT_OFF, AgentLoop, run_tool
from distill.agent.simulated import read_simulation, simulation_request
from distill.agent.tools import ToolBox
from distill.config import Config, SimulatedTool
from distill.formats.base import Format
from distill.generation.questions import QuestionError, parse_questions, question_request
from distill.generation.sources import Chunk
from distill.teachers.base import Teacher, TeacherCallError, TeacherRequest
from distill.trajectory import Plan, Step, Trajectory, Turn

__all__ = ["Rollout", "run_conversation"]


def _cut_detail(reply: Any) -> str:
    return f"the teacher's answer was cut off (finish_reason={reply.finish_reason}); it is never used as data"


@dataclass
class Rollout:
    """Everything a conversation needs besides its plan."""

    config: Config
    teacher: Teacher
    fmt: Format
    tools: ToolBox

    def loop(self, plan: Plan) -> AgentLoop:
        """The agent loop of one conversation: the teacher plays, simulated tools are written by the teacher."""
        teacher = self.config.teacher

        async def observe(question: str, step: Step) -> None:
            await self.observe(plan, question, step)

        return AgentLoop(self.fmt, self.teacher, self.tools, self.config.agent.max_steps,
                         {"temperature": teacher.temperature, "max_tokens": teacher.max_tokens}, observe=observe,
                         retries=self.config.generation.step_retries)

    def step_request(self, plan: Plan, earlier: list[Turn], question: str, steps: list[Step]) -> TeacherRequest:
        """The request for the next agent step: the runtime's messages, its stop sequences or tools, the plan as
        context."""
        return self.loop(plan).request(earlier, question, steps, seed=plan.seed, context={"plan": plan})

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
            observation = await run_tool(self.tools, step.action, step.action_input)
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
        if reply.finish_reason in CUT_OFF:
            return trajectory.fail("questions", CUT_OFF[reply.finish_reason], _cut_detail(reply), reply.text)
        questions = parse_questions(reply, plan)
    except TeacherCallError as exc:
        return trajectory.fail("questions", exc.reason, exc.detail)
    except QuestionError as exc:
        return trajectory.reject("questions", exc.reason, exc.detail, reply.text)

    loop = rollout.loop(plan)
    for question in questions:
        played = await loop.play_turn(list(trajectory.turns), question, seed=plan.seed, context={"plan": plan})
        simulated = sum(step.simulated for step in played.turn.steps)
        if simulated:
            trajectory.meta["simulated_calls"] = trajectory.meta.get("simulated_calls", 0) + simulated
        if played.attempts:  # every answer at the last step was rejected (resampling gave up), or cut off
            trajectory.meta["attempts"] = [a.model_dump() for a in played.attempts]
        if played.end == "failed":  # no answer: the turn is not kept
            return trajectory.fail("rollout", str(played.reason), played.detail)
        trajectory.turns.append(played.turn)
        if played.end == "cut_off":  # a failed teacher call, never data; the raw text is kept
            return trajectory.fail("rollout", str(played.reason), played.detail, played.raw)
        if played.end != "answered":
            return trajectory.reject("rollout", str(played.reason), played.detail, played.raw)
    return trajectory
