"""Student evaluation: held-out questions, each model playing the agent through the runtime prompt, strict verdicts.

Owns `evaluate`. The questions are the first turns of the run's validation-split conversations (their source
documents never fed the training split), with the reference answer and whether the reference used a tool; or a
questions file. Each model answers through exactly the request the agent runtime sends at each step (the format
renders the messages and adds its `stop`, or its `tools` and `parallel_tool_calls`), the tools really run, up to
`agent.max_steps` model calls. What goes back to the model is what it wrote: for `langchain-chat` the scratchpad
carries its raw output (the runtime's `action.log`); for `openai-tools` its assistant message (content and native
`tool_calls`, ids and argument text as returned), then one `tool` message per call with the matching id. Every answer
is read by the format's strict reader (`read`: the raw text and finish reason, or the tool calls); every tool call
of an accepted answer runs (parallel calls too); the first rejected answer ends the question. Figures and files:
`distill.evaluation.report`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from distill.config import Config
from distill.errors import RunFolderError
from distill.evaluation.questions import EvalError, EvalQuestion, few_shot_demos, load_questions
from distill.evaluation.report import EvalReport, ModelResult, Transcript, TranscriptStep
from distill.teachers.base import TeacherReply
from distill.trajectory import FINAL_ANSWER, Step

__all__ = [
    "EvalError",
    "EvalQuestion",
    "ModelClient",
    "evaluate",
    "few_shot_demos",
    "load_questions",
    "split_model_spec",
]


# -- the model endpoint ----------------------------------------------------------------------------------------------
_AT_URL = re.compile(r"^(?P<model>.+)@(?P<url>https?://\S+)$")


def split_model_spec(spec: str) -> tuple[str, str | None]:
    """"MODEL" or "MODEL@http://host:port/v1" (a model on its own endpoint) -> (model, url or None)."""
    match = _AT_URL.match(spec.strip())
    return (match["model"], match["url"]) if match else (spec.strip(), None)


class ModelCallError(Exception):
    """A model call that got no answer after the SDK's retries; `reason` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class ModelClient:
    """A thin AsyncOpenAI chat-completions caller that keeps the raw text, tool calls and finish reason of every
    answer."""

    def __init__(self, model: str, base_url: str | None, *, max_retries: int, timeout_s: float) -> None:
        from openai import AsyncOpenAI

        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            if not self.base_url:
                raise EvalError(
                    "no endpoint: OPENAI_API_KEY is not set and no --base-url was given",
                    hint="export OPENAI_API_KEY=... for OpenAI, or pass --base-url http://127.0.0.1:8080/v1 "
                    "for a local OpenAI-compatible server",
                )
            key = "unused"  # local OpenAI-compatible servers (llama.cpp, vLLM, Ollama) ignore the key
        self._client = AsyncOpenAI(api_key=key, base_url=self.base_url, max_retries=max_retries, timeout=timeout_s)

    async def complete(self, messages: list[dict[str, Any]], **params: Any) -> tuple[TeacherReply, int]:
        """One chat completion: the reply (content, finish reason, native tool calls as plain dicts) and its
        completion tokens."""
        import openai
        from openai.types.chat import ChatCompletionMessageFunctionToolCall

        try:
            response = await self._client.chat.completions.create(model=self.model, messages=cast(Any, messages), **params)
        except openai.APIStatusError as exc:
            raise ModelCallError(f"http_{exc.status_code}", str(exc)[:300]) from None
        except openai.APITimeoutError as exc:
            raise ModelCallError("timeout", str(exc)[:300]) from None
        except openai.APIConnectionError as exc:
            raise ModelCallError("connection_error", f"{exc} ({self.base_url or 'api.openai.com'})"[:300]) from None
        if not response.choices:
            raise ModelCallError("no_choices", "the endpoint returned no choices")
        choice = response.choices[0]
        tokens = (getattr(response.usage, "completion_tokens", 0) or 0) if response.usage else 0
        calls = [
            {"id": call.id, "type": call.type or "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}
            for call in (choice.message.tool_calls or []) if isinstance(call, ChatCompletionMessageFunctionToolCall)
        ]
        reply = TeacherReply(text=choice.message.content, finish_reason=choice.finish_reason, model=self.model,
                             tool_calls=calls or None)
        return reply, tokens

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


# -- one model playing the agent ---------------------------------------------------------------------------------------
@dataclass
class _Player:
    config: Config
    fmt: Any
    toolbox: Any
    client: ModelClient
    params: dict[str, Any]
    demos: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0

    def messages(self, question: str, steps: Sequence[Step]) -> list[dict[str, Any]]:
        """The runtime's messages for the next step, with what the model itself wrote in place of the canonical
        rendering: its raw outputs in the langchain-chat scratchpad (action.log); its own assistant messages (content,
        tool-call ids and argument text) and the matching `tool_call_id`s for openai-tools."""
        messages = self.fmt.messages_for_step([], question, steps)
        if getattr(self.fmt, "name", None) == "langchain-chat":
            start = len(messages) - 2 * len(steps)
            for i, step in enumerate(steps):
                messages[start + 2 * i]["content"] = step.raw
        elif steps:
            _echo_tool_calls(messages, steps)
        return messages[:1] + self.demos + messages[1:] if self.demos else messages

    def request_params(self) -> dict[str, Any]:
        """What goes with the messages: the format's stop sequences, or its tools (as `Rollout.step_request`)."""
        params = dict(self.params)
        if self.fmt.stop is not None:
            params["stop"] = self.fmt.stop
        tools = getattr(self.fmt, "tools", None)
        if tools:  # native tool calling: parallel calls as agent.parallel_tool_calls says (the fine-tuning lines' value)
            params["tools"] = tools
            params["parallel_tool_calls"] = bool(self.fmt.parallel_tool_calls)
        return params

    async def play(self, q: EvalQuestion) -> Transcript:
        transcript = Transcript(question=q.question, id=q.id, reference=q.reference,
                                reference_used_tool=q.reference_used_tool)
        taken: list[Step] = []
        native = getattr(self.fmt, "tools", None) is not None  # tool calls of their own, with ids
        for _ in range(self.config.agent.max_steps):
            try:
                reply, tokens = await self.client.complete(self.messages(q.question, taken), **self.request_params())
            except ModelCallError as exc:
                transcript.error, transcript.error_detail = exc.reason, exc.detail
                return transcript
            self.tokens += tokens
            reading = self.fmt.read(reply)
            raw = reading.raw if not reading.ok else (reading.steps[0].raw or None)
            step = TranscriptStep(raw=raw, finish_reason=reply.finish_reason, ok=reading.ok, reason=reading.reason,
                                  detail=reading.detail)
            transcript.steps.append(step)
            if not reading.ok:
                step.action, step.known_action = _rejected_action(self.fmt, reply, str(reading.reason), self.toolbox)
                return transcript
            step.action = ", ".join(s.action for s in reading.steps)
            step.known_action = all(s.is_final or s.action in self.toolbox for s in reading.steps)
            if reading.final:
                step.action_input = transcript.answer = reading.steps[-1].action_input
                return transcript
            for call in reading.steps:
                observation = await self.toolbox.arun(call.action, call.action_input)
                call.observation, call.tool_error = observation.text, observation.error
                if native:
                    step.calls.append({"id": call.call_id, "action": call.action, "action_input": call.action_input,
                                       "observation": observation.text})
            if len(reading.steps) == 1:
                step.action_input, step.observation = reading.steps[0].action_input, reading.steps[0].observation
            taken.extend(reading.steps)
        return transcript


def _echo_tool_calls(messages: list[dict[str, Any]], steps: Sequence[Step]) -> None:
    """Put each model answer back as it came (content, tool-call ids, argument text) over the format's canonical
    rendering of its calls, and give the `tool` messages the matching ids (an answer without ids keeps call_N)."""
    calls = iter(steps)
    ids: dict[str, str] = {}
    for message in messages:
        if message.get("role") == "assistant" and message.get("tool_calls"):
            group = [next(calls) for _ in message["tool_calls"]]
            sent = json.loads(group[0].raw) if group[0].raw else {}
            raw_calls = sent.get("tool_calls") or []
            if len(raw_calls) == len(group):
                for rendered, original in zip(message["tool_calls"], raw_calls, strict=True):
                    ids[rendered["id"]] = original.get("id") or rendered["id"]
                    rendered["id"] = ids[rendered["id"]]
                    rendered["function"]["arguments"] = original["function"]["arguments"]
                message["content"] = sent.get("content")
        elif message.get("role") == "tool" and message.get("tool_call_id") in ids:
            message["tool_call_id"] = ids[message["tool_call_id"]]


# rejects that come after the action (or function names) could be read: the answer's tool choice is judged
_PARSED = {"unknown_action", "action_input_not_string", "action_input_schema", "empty_answer", "invalid_arguments",
           "arguments_schema"}


def _rejected_action(fmt: Any, reply: TeacherReply, reason: str, toolbox: Any) -> tuple[str | None, bool]:
    """The action(s) a rejected answer named, when its structure could be read, and whether all are configured."""
    if getattr(fmt, "name", None) == "langchain-chat":
        name = _action_name(reply.text, reason)
        return name, name == FINAL_ANSWER or name in toolbox
    if reason == "empty_answer":  # no tool call and no text: an empty final answer
        return FINAL_ANSWER, True
    if reason not in _PARSED or not reply.tool_calls:
        return None, False
    names = [(c.get("function") or {}).get("name") if isinstance(c, dict) else None for c in reply.tool_calls]
    return ", ".join(str(n) for n in names), all(isinstance(n, str) and n in toolbox for n in names)


def _action_name(text: str | None, reason: str) -> str | None:
    """The action named by a langchain-chat answer that passed the structure checks but failed on its content."""
    if reason not in _PARSED or not text:
        return None
    body = text.strip()
    try:
        data = json.loads(body[body.index("{") : body.rindex("}") + 1])
    except ValueError:
        return None
    action = data.get("action") if isinstance(data, dict) else None
    return action if isinstance(action, str) else None


async def _run_model(player: _Player, questions: list[EvalQuestion], concurrency: int, progress: bool) -> list[Transcript]:
    from tqdm.auto import tqdm

    slots = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(questions), desc=player.client.model, unit="q", disable=not progress, dynamic_ncols=True)

    async def one(q: EvalQuestion) -> Transcript:
        async with slots:
            result = await player.play(q)
        bar.update(1)
        return result

    try:
        return list(await asyncio.gather(*(one(q) for q in questions)))
    finally:
        bar.close()
        await player.client.aclose()


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
) -> EvalReport:
    """Evaluate each model as the agent on held-out questions; writes report.json, report.md and transcripts to
    `out` (default RUN/eval/) and returns the report."""
    from distill.agent.tools import ToolBox
    from distill.formats import get_format
    from distill.generation.index import ChunkIndex
    from distill.generation.pipeline import default_run_dir

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
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder", hint="run `distill generate CONFIG` or pass --run DIR")
    held_out = load_questions(run_dir, questions, n)
    needs_index = any(t.kind == "retriever" for t in config.tools)
    toolbox = ToolBox(config, ChunkIndex.load(run_dir / "index") if needs_index else None)
    fmt = get_format(config)
    demos = few_shot_demos(run_dir, few_shot) if few_shot else []
    params = {"temperature": temperature, "max_tokens": max_tokens}
    report = EvalReport(
        config=str(config.path or config.name), run=str(run_dir),
        questions_source=str(questions) if questions else "validation split of the run",
        questions=len(held_out), settings={"max_steps": config.agent.max_steps, "few_shot": few_shot,
                                            "base_url": base_url or os.environ.get("OPENAI_BASE_URL"), **params},
    )
    for model, url in specs:
        client = ModelClient(model, url or base_url, max_retries=config.teacher.max_retries,
                             timeout_s=config.teacher.timeout_s)
        player = _Player(config, fmt, toolbox, client, params, demos)
        started = time.perf_counter()
        transcripts = asyncio.run(_run_model(player, held_out, concurrency, progress))
        seconds = time.perf_counter() - started
        report.models[model] = ModelResult(model, transcripts, seconds=seconds, completion_tokens=player.tokens,
                                           base_url=client.base_url)
    report.write(Path(out) if out is not None else run_dir / "eval")
    return report

