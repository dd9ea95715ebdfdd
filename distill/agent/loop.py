"""The agent loop: a policy plays the agent, step by step, through a format; the tools really run.

One loop for every player: the teacher during generation (`distill.generation.rollout`), a student behind the same
engine during `distill eval`, a local in-process model. The policy is anything that implements the `Teacher`
protocol (`complete(TeacherRequest) -> TeacherReply`); the format renders what the runtime sends and reads the
answers strictly, so the loop is format-agnostic.

A step is one function, `AgentLoop.step`: request -> reply -> reading. It builds the request (`request`: the
format's messages, its `stop` or its `tools` and `parallel_tool_calls`, the sampling parameters and the step's
`seed`), asks the policy and reads the reply with the format. A retry of the same step with another seed (step
resampling, `retries`; `distill.agent.resample`) wraps exactly this function: a rejected reading is asked again up
to `retries` times, each re-ask with the next seed and the request stage `resample_stage` (so the ledger and the
meter price re-asks apart); the rejected attempts are kept on the accepted step (`Step.attempts`) or, when none was
accepted, on the `TurnResult`. A reply cut off by the endpoint is never re-asked (it is a failed call, as below), nor
is a refused simulated observation. `retries` is 0 unless the caller asks: only generation resamples; eval measures
a student's first answer. `AgentLoop.play_turn` runs the steps of one user turn: after each accepted
reading its tool calls are observed (`observe`: by default the tool runs, through `run_tool`), and the turn ends at
the final answer, at the first rejected or cut-off reading, at a failed call, or after `max_steps` model calls. What
the caller makes of the end (a rejected trajectory, a transcript) is the caller's; the loop only reports it in a
`TurnResult`, with every step's request, reply and reading.

Hooks, for what differs between players: `messages` (what is sent for a step: by default the format's canonical
`messages_for_step`; eval sends the model's own output back with `messages_as_written`, plus few-shot demos) and
`observe` (generation lets the teacher write a simulated tool's observation).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from distill.agent.resample import Resampled, resample
from distill.agent.simulated import SimulationError
from distill.agent.tools import Observation, ToolBox
from distill.formats.base import Format, Reading
from distill.teachers.base import Teacher, TeacherCallError, TeacherReply, TeacherRequest
from distill.trajectory import Attempt, Reason, Step, Turn

__all__ = ["CUT_OFF", "AgentLoop", "StepResult", "TurnEnd", "TurnResult", "run_tool"]

# Answers the endpoint cut off (finish reasons): failed calls for generation, with the validator's reason of the name.
CUT_OFF = {"length": str(Reason.TRUNCATED), "content_filter": str(Reason.CONTENT_FILTER)}

MessagesFn = Callable[[Sequence[Turn], str, Sequence[Step]], list[dict[str, Any]]]
ObserveFn = Callable[[str, Step], Awaitable[None]]
TurnEnd = Literal["answered", "no_final_answer", "rejected", "cut_off", "failed"]


async def run_tool(tools: ToolBox, name: str, action_input: str) -> Observation:
    """The one place the loop runs a tool: off the event loop, bounded by the tool's timeout (`ToolBox.arun`)."""
    return await tools.arun(name, action_input)


@dataclass(slots=True)
class StepResult:
    """One model call of a turn: what was asked, what came back, how the format read it."""

    request: TeacherRequest
    reply: TeacherReply
    reading: Reading

    @property
    def cut_off(self) -> bool:
        """True when the endpoint cut the answer off (finish_reason length / content_filter)."""
        return self.reply.finish_reason in CUT_OFF


@dataclass
class TurnResult:
    """How a turn ended: `turn` holds the accepted steps (observed), `steps` every model call in order.

    `end`: answered (a final answer), no_final_answer (max_steps calls without one), rejected (a reading, or a
    simulated observation, the strict checks refused: `reason`, `detail`, `raw`), cut_off (the last reply was cut
    off by the endpoint; it was still read, see `steps[-1]`), failed (a call got no answer: `reason`, `detail`).
    `attempts` (step resampling): the rejected answers at the step that ended the turn, in order: all of them when
    every attempt was rejected and there was more than one (the last is also `raw`, `reason`, `detail`), or those
    before a re-ask that was cut off or got no answer; empty otherwise.
    """

    turn: Turn
    end: TurnEnd = "answered"
    steps: list[StepResult] = field(default_factory=list)
    reason: str | None = None
    detail: str = ""
    raw: str | None = None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def last(self) -> StepResult | None:
        """The turn's last model call."""
        return self.steps[-1] if self.steps else None


@dataclass
class AgentLoop:
    """A policy playing the agent through a format, with the tools (see the module doc)."""

    fmt: Format
    policy: Teacher
    tools: ToolBox
    max_steps: int
    params: Mapping[str, Any]  # sampling parameters of every step (temperature, max_tokens)
    stage: str = "rollout"  # the requests' stage (the ledger's and the meter's)
    messages: MessagesFn | None = None  # None: the format's canonical messages_for_step
    observe: ObserveFn | None = None  # None: the tool runs (run_tool)
    stop_at_cut_off: bool = True  # a cut-off reply ends the turn before its reading counts
    retries: int = 0  # step resampling: re-asks of a rejected step (generation.step_retries); eval keeps 0
    resample_stage: str = "resample"  # the stage of the re-asks

    def request(
        self, earlier: Sequence[Turn], question: str, steps: Sequence[Step], *, seed: int | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> TeacherRequest:
        """The request for the next step: the runtime's messages, its stop sequences or tools, the parameters and
        the seed; `context` (never sent) gets the question, the steps so far and the turn number."""
        params: dict[str, Any] = dict(self.params)
        if self.fmt.stop is not None:
            params["stop"] = self.fmt.stop
        if seed is not None:
            params["seed"] = seed
        render = self.messages or self.fmt.messages_for_step
        return TeacherRequest(
            stage=self.stage,
            messages=render(earlier, question, steps),
            params=params,
            context={**(context or {}), "question": question, "steps": steps, "turn": len(earlier)},
            tools=self.fmt.tools,  # native tool-calling formats
            parallel_tool_calls=self.fmt.parallel_tool_calls,
        )

    async def step(
        self, earlier: Sequence[Turn], question: str, steps: Sequence[Step], *, seed: int | None = None,
        context: Mapping[str, Any] | None = None, stage: str | None = None,
    ) -> StepResult:
        """One step: request -> reply -> reading (`stage`: the request's, default the loop's). Raises
        TeacherCallError when the call got no answer."""
        request = self.request(earlier, question, steps, seed=seed, context=context)
        if stage is not None:
            request.stage = stage
        reply = await self.policy.complete(request)
        return StepResult(request, reply, self.fmt.read(reply))

    async def _resampled_step(
        self, earlier: Sequence[Turn], question: str, steps: Sequence[Step], seed: int | None,
        context: Mapping[str, Any] | None, taken: list[StepResult],
    ) -> Resampled:
        """`step`, asked again while rejected (up to `retries` times); every model call is appended to `taken`."""
        asked = 0

        async def ask(attempt_seed: int | None) -> StepResult:
            nonlocal asked
            stage = self.resample_stage if asked else None  # a re-ask: priced apart in the ledger and the meter
            asked += 1
            one = await self.step(earlier, question, steps, seed=attempt_seed, context=context, stage=stage)
            taken.append(one)
            return one

        def settled(one: StepResult) -> bool:  # a cut-off answer is a failed call: never re-asked (see the doc)
            return self.stop_at_cut_off and one.cut_off

        return await resample(ask, lambda one: one.reading, seed, self.retries, settled)

    async def _observe(self, question: str, step: Step) -> None:
        if self.observe is not None:
            await self.observe(question, step)
            return
        observation = await run_tool(self.tools, step.action, step.action_input)
        step.observation, step.tool_error = observation.text, observation.error

    async def play_turn(
        self, earlier: Sequence[Turn], question: str, *, seed: int | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> TurnResult:
        """Play one user turn (see the module doc); every accepted step is in `result.turn.steps`, observed."""
        turn = Turn(question=question)
        result = TurnResult(turn=turn)
        for _ in range(self.max_steps):
            asked_before = len(result.steps)
            try:
                out = await self._resampled_step(earlier, question, turn.steps, seed, context, result.steps)
            except TeacherCallError as exc:  # a re-ask got no answer: the rejected answers before it are kept
                result.attempts = [_attempt(s) for s in result.steps[asked_before:]]
                return _end(result, "failed", exc.reason, exc.detail)
            taken: StepResult = out.reply
            reply, reading = taken.reply, taken.reading
            if self.stop_at_cut_off and taken.cut_off:  # a failed call, never data; the raw text is kept
                result.attempts = list(out.attempts)
                detail = f"the teacher's answer was cut off (finish_reason={reply.finish_reason}); it is never used as data"
                return _end(result, "cut_off", CUT_OFF[str(reply.finish_reason)], detail, reply.text)
            if out.reading is None:  # every attempt rejected
                if len(out.attempts) > 1:
                    result.attempts = list(out.attempts)
                return _end(result, "rejected", str(reading.reason), reading.detail, reading.raw)
            if out.attempts:  # recovered: the rejected answers at this prompt stay with the accepted one
                reading.steps[0].attempts = list(out.attempts)
            for step in reading.steps:
                if not step.is_final:
                    try:
                        await self._observe(question, step)
                    except TeacherCallError as exc:
                        return _end(result, "failed", exc.reason, exc.detail)
                    except SimulationError as exc:
                        return _end(result, "rejected", str(exc.reason), exc.detail, exc.raw)
                turn.steps.append(step)
            if reading.final:
                return result
        detail = f"no Final Answer within max_steps={self.max_steps} model calls"
        return _end(result, "no_final_answer", str(Reason.NO_FINAL_ANSWER), detail, turn.steps[-1].raw)


def _attempt(taken: StepResult) -> Attempt:
    reading = taken.reading
    return Attempt(raw=reading.raw, reason=str(reading.reason), detail=reading.detail, seed=taken.request.params.get("seed"))


def _end(result: TurnResult, end: TurnEnd, reason: str, detail: str, raw: str | None = None) -> TurnResult:
    result.end, result.reason, result.detail, result.raw = end, reason, detail, raw
    return result
