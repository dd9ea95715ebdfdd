"""The shared agent loop (distill.agent.loop): one step is request -> reply -> reading; a turn's endings.

The policy here is an in-process script implementing the `Teacher` protocol, so each ending is exact: an answered
turn with a real tool run, a rejected reading, a reply cut off by the endpoint, a call without an answer, and
`max_steps` calls without a final answer. A wrapper around `step` is used by the turn; the loop's own resampling
(`retries`) re-asks a rejected step with the next seeds, never a cut-off one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from distill.agent.loop import AgentLoop, StepResult
from distill.agent.tools import ToolBox
from distill.formats import get_format
from distill.formats.langchain_actions import render_action
from distill.teachers.base import TeacherCallError, TeacherReply, TeacherRequest
from distill.trajectory import Step, Turn

run = asyncio.run
CALC = render_action("Calculator", "17 * 23")
FINAL = render_action("Final Answer", "391")


class _Script:
    provider, model = "script", "script"

    def __init__(self, *answers: Any) -> None:
        self.answers, self.requests = list(answers), []  # type: ignore[var-annotated]

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, TeacherReply) else TeacherReply(text=answer)

    async def aclose(self) -> None:
        pass


@pytest.fixture
def make_loop(make_config, calculator_tool, configs_on_path):
    def _make(*answers: Any, **options: Any) -> tuple[AgentLoop, _Script]:
        config = make_config(tools=[calculator_tool])
        policy = _Script(*answers)
        loop = AgentLoop(get_format(config), policy, ToolBox(config), 3, {"temperature": 0.5}, **options)
        return loop, policy

    return _make


def test_a_turn_runs_the_tool_and_ends_at_the_final_answer(make_loop) -> None:
    loop, policy = make_loop(CALC, FINAL)
    played = run(loop.play_turn([], "What is 17 times 23?", seed=7, context={"plan": "p"}))
    assert played.end == "answered" and played.turn.answer == "391"
    assert [s.action for s in played.turn.steps] == ["Calculator", "Final Answer"]
    assert played.turn.steps[0].observation == "391" and len(played.steps) == 2
    first = policy.requests[0]
    assert first.params == {"temperature": 0.5, "stop": loop.fmt.stop, "seed": 7}
    assert first.context["plan"] == "p" and first.context["turn"] == 0 and first.stage == "rollout"
    assert policy.requests[1].messages[-1]["content"].startswith("TOOL RESPONSE")


def test_turn_endings(make_loop) -> None:
    loop, _ = make_loop("prose")
    played = run(loop.play_turn([], "q"))
    assert (played.end, played.reason, played.raw) == ("rejected", "no_json_block", "prose")
    cut = TeacherReply(text=CALC[:10], finish_reason="length")
    loop, _ = make_loop(cut)
    assert (run(loop.play_turn([], "q"))).end == "cut_off"
    loop, _ = make_loop(cut, stop_at_cut_off=False)  # eval: the reader judges it (truncated)
    played = run(loop.play_turn([], "q"))
    assert (played.end, played.reason) == ("rejected", "truncated")
    loop, _ = make_loop(CALC, TeacherCallError("http_500", "boom"))
    played = run(loop.play_turn([], "q"))
    assert (played.end, played.reason, len(played.turn.steps)) == ("failed", "http_500", 1)
    loop, _ = make_loop(CALC, CALC, CALC)
    played = run(loop.play_turn([], "q"))
    assert (played.end, played.reason, played.raw) == ("no_final_answer", "no_final_answer", CALC)


def test_a_wrapped_step_is_what_the_turn_uses(make_loop) -> None:
    """Step resampling wraps `step`: a rejected reading is asked again with the next seed."""

    class Resampling(AgentLoop):
        async def step(self, earlier: Sequence[Turn], question: str, steps: Sequence[Step], *,
                       seed: int | None = None, context: Any = None, stage: str | None = None) -> StepResult:
            taken = await super().step(earlier, question, steps, seed=seed, context=context, stage=stage)
            if not taken.reading.ok and seed is not None:
                return await super().step(earlier, question, steps, seed=seed + 1, context=context)
            return taken

    loop, policy = make_loop("prose", FINAL)
    resampling = Resampling(loop.fmt, policy, loop.tools, loop.max_steps, loop.params)
    played = run(resampling.play_turn([], "q", seed=1))
    assert played.end == "answered" and [r.params["seed"] for r in policy.requests] == [1, 2]


def test_retries_re_ask_a_rejected_step_with_the_next_seeds_and_keep_the_attempts(make_loop) -> None:
    loop, policy = make_loop("prose", "Thought: x " + CALC, CALC, FINAL, retries=2)
    played = run(loop.play_turn([], "q", seed=10))
    assert played.end == "answered" and played.turn.answer == "391" and played.attempts == []
    assert [r.params["seed"] for r in policy.requests] == [10, 11, 12, 10]  # the next step starts at the plan seed
    assert [r.stage for r in policy.requests] == ["rollout", "resample", "resample", "rollout"]
    assert policy.requests[0].messages == policy.requests[2].messages  # the same prompt, asked again
    first = played.turn.steps[0]
    assert [(a.raw, a.reason, a.seed) for a in first.attempts] == [
        ("prose", "no_json_block", 10), ("Thought: x " + CALC, "text_outside_block", 11)]
    assert played.turn.steps[1].attempts == [] and len(played.steps) == 4


def test_retries_give_up_after_the_last_seed_and_the_turn_keeps_every_attempt(make_loop) -> None:
    loop, policy = make_loop("a", "b", "c", retries=2)
    played = run(loop.play_turn([], "q", seed=1))
    assert (played.end, played.reason, played.raw) == ("rejected", "no_json_block", "c")
    assert [(a.raw, a.seed) for a in played.attempts] == [("a", 1), ("b", 2), ("c", 3)] and len(policy.requests) == 3


def test_a_cut_off_answer_is_not_re_asked(make_loop) -> None:
    cut = TeacherReply(text=CALC[:10], finish_reason="length")
    loop, policy = make_loop("prose", cut, FINAL, retries=2)
    played = run(loop.play_turn([], "q", seed=1))
    assert played.end == "cut_off" and len(policy.requests) == 2  # the cut-off re-ask ends the turn: a failed call
    assert [a.raw for a in played.attempts] == ["prose"]


def test_a_re_ask_without_answer_fails_the_turn_and_keeps_the_rejected_answers(make_loop) -> None:
    loop, _ = make_loop("prose", TeacherCallError("http_500", "boom"), retries=2)
    played = run(loop.play_turn([], "q", seed=1))
    assert (played.end, played.reason) == ("failed", "http_500") and [a.raw for a in played.attempts] == ["prose"]


def test_no_retries_by_default_and_none_without_a_seed(make_loop) -> None:
    loop, policy = make_loop("prose", FINAL)
    assert loop.retries == 0 and run(loop.play_turn([], "q", seed=1)).end == "rejected" and len(policy.requests) == 1
    loop, _ = make_loop("prose", FINAL, retries=1)
    with pytest.raises(ValueError, match="needs a seed"):
        run(loop.play_turn([], "q"))
