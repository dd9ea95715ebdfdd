"""Step resampling: the retry wrapper, the record of rejected attempts and the `generation.step_retries` key."""

from __future__ import annotations

import asyncio
import json

import pytest

from distill.agent.resample import attempt_seed, resample
from distill.errors import ConfigError
from distill.formats.base import Reading
from distill.trajectory import Attempt, Step, Trajectory, Turn

# The serialised form of a step as trajectories.jsonl held it before `attempts` existed.
OLD_STEP = (
    '{"action":"Final Answer","action_input":"BM25.","raw":"```json\\n{}\\n```","observation":null,'
    '"tool_error":false,"call_id":null,"parallel":false,"simulated":false}'
)


def _read(reply: str) -> Reading:
    if reply.startswith("ok"):
        return Reading(ok=True, steps=[Step(action="Final Answer", action_input=reply, raw=reply)])
    return Reading(ok=False, reason="invalid_json", detail=f"bad: {reply}", raw=reply)


def _asker(replies: list[str], seeds: list[int]):
    async def ask(seed: int) -> str:
        seeds.append(seed)
        return replies[len(seeds) - 1]

    return ask


def test_a_step_without_attempts_serialises_byte_for_byte_as_before() -> None:
    step = Step.model_validate_json(OLD_STEP)
    assert step.attempts == []
    assert step.model_dump_json() == OLD_STEP
    assert "attempts" not in step.model_dump()
    trajectory = Trajectory(id="c1", kind="direct", doc_id="d", chunk_id="c", turns=[Turn(question="q", steps=[step])])
    again = Trajectory.model_validate_json(trajectory.model_dump_json())
    assert again == trajectory and '"attempts"' not in trajectory.model_dump_json()


def test_attempts_round_trip_through_the_record() -> None:
    step = Step(action="Final Answer", action_input="x", raw="x",
                attempts=[Attempt(raw="{bad", reason="invalid_json", detail="Expecting value", seed=8)])
    text = step.model_dump_json()
    assert json.loads(text)["attempts"] == [{"raw": "{bad", "reason": "invalid_json", "detail": "Expecting value", "seed": 8}]
    assert Step.model_validate_json(text) == step


def test_first_answer_accepted_asks_once_with_the_plan_seed() -> None:
    seeds: list[int] = []
    out = asyncio.run(resample(_asker(["ok 1"], seeds), _read, 41, retries=2))
    assert seeds == [41] and out.ok and not out.recovered and out.attempts == [] and out.seed == 41


def test_rejected_answers_are_asked_again_with_new_seeds_and_kept() -> None:
    seeds: list[int] = []
    out = asyncio.run(resample(_asker(["{bad", "also bad", "ok third"], seeds), _read, 41, retries=2))
    assert seeds == [41, 42, 43] and len(set(seeds)) == 3
    assert out.ok and out.recovered and out.seed == 43
    assert out.reading is not None and out.reading.steps[0].action_input == "ok third"
    assert [(a.raw, a.reason, a.seed) for a in out.attempts] == [("{bad", "invalid_json", 41), ("also bad", "invalid_json", 42)]
    assert out.attempts[0].detail == "bad: {bad"


def test_every_attempt_rejected_gives_up_after_the_retries() -> None:
    seeds: list[int] = []
    out = asyncio.run(resample(_asker(["a", "b", "c", "ok never asked"], seeds), _read, 7, retries=2))
    assert seeds == [7, 8, 9]
    assert not out.ok and out.reading is None and out.reply == "c"
    assert out.last_rejection is not None and out.last_rejection.raw == "c" and len(out.attempts) == 3


def test_zero_retries_asks_exactly_once() -> None:
    seeds: list[int] = []
    out = asyncio.run(resample(_asker(["bad", "ok"], seeds), _read, 3, retries=0))
    assert seeds == [3] and not out.ok and len(out.attempts) == 1


def test_a_failed_call_propagates() -> None:
    async def ask(seed: int) -> str:
        raise RuntimeError("http 500")

    with pytest.raises(RuntimeError, match="http 500"):
        asyncio.run(resample(ask, _read, 1, retries=2))


def test_seeds_stay_in_the_32_bit_range() -> None:
    assert attempt_seed(2**31 - 1, 1) == 0 and attempt_seed(5, 0) == 5


def test_step_retries_config_key(make_config) -> None:
    assert make_config().generation.step_retries == 2
    gen = {"conversations": 4, "step_retries": 0}
    assert make_config(generation=gen).generation.step_retries == 0
    with pytest.raises(ConfigError, match="generation.step_retries"):
        make_config(generation={"conversations": 4, "step_retries": -1})
