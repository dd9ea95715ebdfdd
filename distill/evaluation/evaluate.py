"""Student evaluation: held-out questions, each model playing the agent through the runtime prompt, strict verdicts.

Owns `evaluate`. The questions are the first turns of the run's validation-split conversations (their source
documents never fed the training split), with the reference answer and whether the reference used a tool; or a
questions file. Each model plays the agent in the shared agent loop (`distill.agent.loop`) as a policy behind the
same engine as the teacher (`distill.teachers.openai_teacher.OpenAIModel`: rate limits learned from headers and 429s,
Retry-After, back-off, the breaker), without a ledger or a meter: eval never writes into the run's teacher ledger
and never changes its cost figures, and an endpoint refusing a model (401 / 403 / 404) is that model's finding,
not a stopped run. Each model answers through exactly the request the agent runtime sends at each step (the format
renders the messages and adds its `stop`, or its `tools` and `parallel_tool_calls`), the tools really run, up to
`agent.max_steps` model calls. What goes back to the model is what it wrote (`Format.messages_as_written`): for
`langchain-chat` the scratchpad carries its raw output (the runtime's `action.log`); for `openai-tools` its assistant
message (content and native `tool_calls`, ids and argument text as returned), then one `tool` message per call with
the matching id. Every answer is read by the format's strict reader; every tool call of an accepted answer runs
(parallel calls too); the first rejected answer ends the question. Figures and files: `distill.evaluation.report`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.agent.loop import AgentLoop, StepResult
from distill.agent.tools import ToolBox
from distill.config import Config
from distill.endpoint import Endpoint, resolve_base_url, resolve_endpoint
from distill.errors import RunFolderError, RunStopped
from distill.evaluation.questions import EvalError, EvalQuestion, few_shot_demos, load_questions
from distill.evaluation.report import EvalReport, ModelResult, Transcript, TranscriptStep
from distill.formats.base import Format
from distill.teachers.base import PacedTeacher, Teacher
from distill.trajectory import FINAL_ANSWER, Step, Turn

__all__ = [
    "EvalError",
    "EvalQuestion",
    "Student",
    "evaluate",
    "few_shot_demos",
    "load_questions",
    "split_model_spec",
    "student_model",
]

_AT_URL = re.compile(r"^(?P<model>.+)@(?P<url>https?://\S+)$")


def split_model_spec(spec: str) -> tuple[str, str | None]:
    """"MODEL" or "MODEL@http://host:port/v1" (a model on its own endpoint) -> (model, url or None)."""
    match = _AT_URL.match(spec.strip())
    return (match["model"], match["url"]) if match else (spec.strip(), None)


def _local_policy(spec: str, config: Config) -> Teacher | None:
    """An in-process policy for a local model folder or .gguf file (distill[train]); None for anything else."""
    from distill.training.local_model import local_policy

    return local_policy(spec, config)


def student_model(config: Config, model: str, endpoint: Endpoint, concurrency: int) -> Teacher:
    """`model` at `endpoint` behind the engine, with the teacher section's retries, timeouts, back-off and breaker,
    `concurrency` requests in flight, limits learned from the endpoint (the teacher's rpm / tpm are its own), no
    ledger, no meter."""
    from distill.teachers.openai_teacher import OpenAIModel

    settings = config.teacher.model_copy(
        update={"concurrency": concurrency, "rpm": None, "tpm": None, "price": None, "base_url": endpoint.base_url}
    )
    return OpenAIModel.at(settings, model, endpoint, stop_on_refusal=False)


# -- one model playing the agent ---------------------------------------------------------------------------------------
@dataclass
class Student:
    """A policy playing the agent on eval questions: the shared loop, with eval's messages and its transcripts."""

    name: str
    policy: Teacher
    fmt: Format
    toolbox: ToolBox
    max_steps: int
    params: dict[str, Any]
    demos: list[dict[str, Any]] = field(default_factory=list)
    base_url: str | None = None
    tokens: int = 0

    def messages(self, earlier: Sequence[Turn], question: str, steps: Sequence[Step]) -> list[dict[str, Any]]:
        """The runtime's messages with the model's own output echoed (`messages_as_written`), and the few-shot
        demos after the system message."""
        messages = self.fmt.messages_as_written(earlier, question, steps)
        return messages[:1] + self.demos + messages[1:] if self.demos else messages

    def loop(self) -> AgentLoop:
        """The shared agent loop with eval's hooks: own output echoed, cut-off answers read (truncated) as rejects."""
        # retries=0: a student is never resampled; its first answer at each step is what eval measures
        return AgentLoop(self.fmt, self.policy, self.toolbox, self.max_steps, self.params, stage="eval",
                         messages=self.messages, stop_at_cut_off=False, retries=0)

    async def play(self, q: EvalQuestion) -> Transcript:
        """One question, played to its end; the transcript holds every model call and its verdict."""
        transcript = Transcript(question=q.question, id=q.id, reference=q.reference,
                                reference_used_tool=q.reference_used_tool)
        try:
            played = await self.loop().play_turn([], q.question)
        except RunStopped as exc:  # the breaker: nothing succeeded for teacher.breaker_s seconds
            transcript.error, transcript.error_detail = "stopped", exc.message
            return transcript
        self.tokens += sum(int(s.reply.usage.get("output", 0) or 0) for s in played.steps)
        transcript.steps = [self._transcript_step(s) for s in played.steps]
        if played.end == "failed":
            transcript.error, transcript.error_detail = played.reason, played.detail
        elif played.end == "answered":
            transcript.answer = played.turn.answer
        return transcript

    def _transcript_step(self, taken: StepResult) -> TranscriptStep:
        reply, reading = taken.reply, taken.reading
        raw = reading.raw if not reading.ok else (reading.steps[0].raw or None)
        step = TranscriptStep(raw=raw, finish_reason=reply.finish_reason, ok=reading.ok, reason=reading.reason,
                              detail=reading.detail)
        if not reading.ok:
            step.action, step.known_action = self._rejected_action(taken)
            return step
        step.action = ", ".join(s.action for s in reading.steps)
        step.known_action = all(s.is_final or s.action in self.toolbox for s in reading.steps)
        if reading.final:
            step.action_input = reading.steps[-1].action_input
            return step
        if self.fmt.tools is not None:  # native tool calls: each with its own id
            step.calls = [{"id": c.call_id, "action": c.action, "action_input": c.action_input,
                           "observation": c.observation} for c in reading.steps]
        if len(reading.steps) == 1:
            step.action_input, step.observation = reading.steps[0].action_input, reading.steps[0].observation
        return step

    def _rejected_action(self, taken: StepResult) -> tuple[str | None, bool]:
        """The action(s) a rejected answer named, when its structure could be read, and whether all are configured."""
        names = self.fmt.named_actions(taken.reply, str(taken.reading.reason))
        if names is None:
            return None, False
        known = all(n is not None and (n == FINAL_ANSWER or n in self.toolbox) for n in names)
        return ", ".join(str(n) for n in names), known


async def _run_model(student: Student, questions: list[EvalQuestion], concurrency: int,
                     progress: bool) -> list[Transcript]:
    from tqdm.auto import tqdm

    slots = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(questions), desc=student.name, unit="q", disable=not progress, dynamic_ncols=True)

    async def one(q: EvalQuestion) -> Transcript:
        async with slots:
            result = await student.play(q)
        bar.update(1)
        return result

    try:
        return list(await asyncio.gather(*(one(q) for q in questions)))
    finally:
        bar.close()
        await student.policy.aclose()


def _result(student: Student, transcripts: list[Transcript], seconds: float) -> ModelResult:
    limits = student.policy.limits() if isinstance(student.policy, PacedTeacher) else None
    return ModelResult(student.name, transcripts, seconds=seconds, completion_tokens=student.tokens,
                       base_url=student.base_url, limits=limits)


def evaluate(
    config: Config,
    models: Sequence[str],
    *,
    run: str | Path | None = None,
    questions: str | Path | None = None,
    n: int | None = 100,
    base_url: str | None = None,
    out: str | Path | None = None,
    few_shot: int = 0,
    temperature: float = 0.0,
    max_tokens: int = 512,
    concurrency: int = 4,
    progress: bool = False,
    judge: bool = False,
    judge_policy: Teacher | None = None,
) -> EvalReport:
    """Evaluate each model as the agent on held-out questions; writes report.json, report.md and transcripts to
    `out` (default RUN/eval/) and returns the report. `judge`: the config's judge grades every final answer
    (distill/evaluation/judging.py; `judge_policy` answers its requests instead of the config's teacher)."""
    from distill.formats import get_format
    from distill.generation.index import ChunkIndex
    from distill.run_folder import RunFolder, default_run_dir, output_folder

    if not models:
        raise EvalError("no model to evaluate", hint="pass --model NAME (repeat it to compare models)")
    for name, value, least in (("concurrency", concurrency, 1), ("max_tokens", max_tokens, 1),
                               ("few_shot", few_shot, 0), ("n", n or 0, 0)):
        if value < least:
            raise EvalError(f"{name} must be at least {least}, got {value}")
    specs = [split_model_spec(m) for m in models]
    dupes = sorted(m for m, c in Counter(name for name, _ in specs).items() if c > 1)
    if dupes:
        raise EvalError(f"model(s) given twice: {', '.join(dupes)}")
    run_dir = Path(run) if run is not None else default_run_dir(config)
    if out is not None:
        output_folder(out)  # before any call: a folder the report cannot be written to fails now, not at the end
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder", hint="run `distill generate CONFIG` or pass --run DIR")
    held_out = load_questions(run_dir, questions, n)
    if judge:
        from distill.evaluation.judging import answer_criteria

        answer_criteria(config)  # before any call: a judge without answer criteria fails now
    needs_index = any(t.kind == "retriever" for t in config.tools) or judge  # the judge reads the passages
    index = ChunkIndex.load(RunFolder(run_dir).index) if needs_index else None
    toolbox = ToolBox(config, index)
    fmt = get_format(config)
    demos = few_shot_demos(run_dir, few_shot) if few_shot else []
    params = {"temperature": temperature, "max_tokens": max_tokens}
    report = EvalReport(
        config=str(config.path or config.name), run=str(run_dir),
        questions_source=str(questions) if questions else "validation split of the run",
        questions=len(held_out), settings={"max_steps": config.agent.max_steps, "few_shot": few_shot,
                                            "base_url": resolve_base_url(base_url), **params},
    )
    policies: list[tuple[str, Teacher | None, Endpoint | None]] = []
    for name, url in specs:  # a local model folder or .gguf plays in-process; anything else is an endpoint's model
        local = _local_policy(name, config) if url is None and Path(name).exists() else None
        endpoint = None if local else resolve_endpoint(url or base_url, needed_by=f"model {name!r}", error=EvalError)
        policies.append((name, local, endpoint))
    for model, local, endpoint in policies:
        if local is not None:
            policy = local
        else:
            assert endpoint is not None  # resolved above for every model that is not local
            policy = student_model(config, model, endpoint, concurrency)
        where = endpoint.base_url if endpoint is not None else "in-process"
        student = Student(model, policy, fmt, toolbox, config.agent.max_steps, params, demos, where)
        started = time.perf_counter()
        transcripts = asyncio.run(_run_model(student, held_out, concurrency, progress))
        report.models[model] = _result(student, transcripts, time.perf_counter() - started)
    if judge:
        from distill.evaluation.judging import judge_students

        documents = {c.id: c.text for c in index.chunks} if index is not None else {}
        report.settings["judge"] = judge_students(config, list(report.models.values()), held_out, documents,
                                                  judge_policy)
    report.write(Path(out) if out is not None else RunFolder(run_dir).eval)
    return report

