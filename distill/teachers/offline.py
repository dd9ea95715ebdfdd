"""The offline teacher: a deterministic, chunk-grounded policy that plays the agent without any model.

It exists so that distill runs end to end on a fresh machine with no key (the demo, the tests' pipeline runs). It
writes questions from the structure of the planned chunk's sentences (distill.teachers.offline_questions), searches
with the question's key terms, searches again when the question asks about terms no search has returned yet (a
question about two passages), and answers with the retrieved sentence that best matches each part of the question;
it answers small talk and general-knowledge messages directly and asks follow-ups about sentences the earlier
questions did not touch. Same config and seed, same output. The manifest says plainly that it wrote the data.
The same policy answers in either agent format: a LangChain JSON blob, or native `tool_calls` when the request
carries `tools` (two parallel searches for some questions when `parallel_tool_calls` is allowed); it also writes
simulated tools' observations deterministically (`distill.teachers.sampler.simulate_offline`). Real tools of any kind
(python, MCP, LangChain) are called with the example input for the question, else arguments sampled from their
schema; a tool that searches documents (the retriever, a LangChain retriever) is played like the retriever.
"""

from __future__ import annotations

import ast
import json
import random
import re
from functools import lru_cache
from typing import Any

from distill.config import Config, LangchainTool, PythonTool
from distill.formats.langchain_actions import render_action
from distill.teachers.base import TeacherReply, TeacherRequest
from distill.teachers.offline_direct import direct_answer, direct_message
from distill.teachers.offline_questions import (
    WORD,
    first_question,
    follow_up,
    parts,
    sentences,
    terms,
)
from distill.trajectory import FINAL_ANSWER

__all__ = ["OfflineTeacher"]


@lru_cache(maxsize=65536)
def _sentence_words(text: str) -> tuple[tuple[str, frozenset[str]], ...]:
    return tuple((s, frozenset(w.lower() for w in WORD.findall(s))) for s in (sentences(text) or [text]))


@lru_cache(maxsize=2048)  # bounded: observations can be long
def _words(text: str) -> frozenset[str]:
    """The lower-cased words of a text (an observation: search results repeat, so this is read once per text)."""
    return frozenset(w.lower() for w in WORD.findall(text))


def _observed_words(steps: Any) -> set[str]:
    seen: set[str] = set()
    for s in steps:
        seen |= _words(s.observation or "")
    return seen


@lru_cache(maxsize=2048)
def _documents(observation: str) -> tuple[Any, ...]:
    """The documents a search observation lists (its text is the repr of a list), else the observation itself."""
    try:
        found = ast.literal_eval(observation)
    except (ValueError, SyntaxError):
        found = [observation]
    return tuple(found) if isinstance(found, list) else ()


class OfflineTeacher:
    """Deterministic agent policy grounded in the chunks; never calls a model."""

    provider = "offline"

    def __init__(self, config: Config) -> None:
        self.model = "offline-deterministic"
        self._config = config
        self._tools: dict[str, Any] = {}  # config.tool(name), looked up at every step
        for t in config.tools:
            self._tools.setdefault(t.name, t)
        # A tool asked about numbers (a calculator): direct messages then ask no arithmetic (distill.teachers
        # .offline_direct), which that tool would answer in other conversations.
        self._computes = any(not t.searches and any(_DIGIT.search(e.question) for e in t.examples)
                             for t in config.tools)

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        """Answer a question-synthesis, rollout or simulated-tool request from its context."""
        if request.stage == "questions":
            text = json.dumps({"questions": self._questions(request.context)})
        elif request.stage == "simulate":
            from distill.teachers.sampler import simulate_offline

            text = simulate_offline(request.context)
        elif request.tools is not None:  # native tool calling: answer with tool_calls
            return self._native(request)
        else:
            text = self._act(request.context)
        return TeacherReply(text=text, finish_reason="stop", usage={}, model=self.model)

    async def aclose(self) -> None:
        """Nothing to release."""

    # -- questions -----------------------------------------------------------------------------------------------
    def _questions(self, ctx: dict[str, Any]) -> list[str]:
        plan, chunk, tool = ctx["plan"], ctx["chunk"], ctx["tool"]
        rng = random.Random(plan.seed)
        if plan.kind == "direct":
            return [direct_message(chunk.text, rng, arithmetic=not self._computes)]
        if tool is not None and not tool.searches and tool.examples:
            example = rng.choice(tool.examples)
            first = _vary(example, rng) if tool.structured else _vary_numbers(example, rng)
        else:
            first = first_question(chunk.text, rng)
        questions = [first]
        for _ in range(plan.turns - 1):
            questions.append(follow_up(chunk.text, questions, rng))
        return questions

    # -- acting ----------------------------------------------------------------------------------------------------
    def _act(self, ctx: dict[str, Any]) -> str:
        return render_action(*self._decide(ctx, parallel=False)[0])

    def _native(self, request: TeacherRequest) -> TeacherReply:
        """The same policy answered as native tool calls (agent.format openai-tools)."""
        ctx = request.context
        decided = self._decide(ctx, parallel=bool(request.parallel_tool_calls))
        if decided[0][0] == FINAL_ANSWER:
            return TeacherReply(text=decided[0][1], finish_reason="stop", usage={}, model=self.model)
        calls = []
        for k, (name, action_input) in enumerate(decided):
            tool = self._config.tool_named(name)
            arguments = action_input if tool.structured else json.dumps({"input": action_input}, ensure_ascii=False)
            call_id = f"call_{ctx['plan'].id}_{ctx['turn']}_{len(ctx['steps']) + k}"
            calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        return TeacherReply(text=None, finish_reason="tool_calls", usage={}, model=self.model, tool_calls=calls)

    def _decide(self, ctx: dict[str, Any], *, parallel: bool) -> list[tuple[str, str]]:
        """The next action(s) as (action, action_input): one, or two parallel searches when `parallel`."""
        plan, question, steps = ctx["plan"], ctx["question"], ctx["steps"]
        answer = direct_answer(question) if plan.kind == "direct" else None
        if answer is not None:
            return [(FINAL_ANSWER, answer)]
        tool = self._tools.get(plan.tool) if plan.tool else None
        if not steps:
            if tool is None:
                return [(FINAL_ANSWER, "I'm not sure; could you rephrase that?")]
            if not tool.searches:
                follow_up = ctx["turn"] > 0 and _example_input(tool, question) is None
                search = next((t for t in self._config.tools if t.searches), None)
                if not (follow_up and search is not None):  # follow-ups ask about the chunk: search it
                    return [(tool.name, self._tool_input(tool, plan, question))]
                tool = search
            asks, limit = parts(question), 4 + plan.seed % 3  # queries of 4-6 key terms, as the seed falls
            if parallel and len(asks) == 2:  # a question about two things: search both at once
                return [(tool.name, _query(asks[0], limit)), (tool.name, _query(asks[1], limit))]
            words = terms(question, limit=limit)
            if parallel and len(words) >= 3 and plan.seed % 2 == 0:  # split the search in two, run both at once
                half = len(words) // 2
                return [(tool.name, " ".join(words[:half])), (tool.name, " ".join(words[half:]))]
            return [(tool.name, _query(asks[0], limit) if len(asks) == 2 else " ".join(words) or question)]
        batch = [steps[-1]]
        while batch[0].parallel and len(batch) < len(steps):
            batch.insert(0, steps[-1 - len(batch)])
        last = batch[-1]
        failed = next((s for s in batch if s.tool_error), None)
        if failed is not None:
            return [(FINAL_ANSWER, f"I tried to use {failed.action}, but it failed: {failed.observation}")]
        tool = self._tools.get(last.action)
        if tool is None or tool.searches:
            searches = [s for s in steps if self._tools.get(s.action) is tool]
            again = self._second_search(question, searches)
            if again is not None and tool is not None and len(steps) + 1 < self._config.agent.max_steps:
                return [(tool.name, again)]
            return [(FINAL_ANSWER, self._answer_from(question, *(s.observation or "" for s in searches)))]
        if isinstance(tool, PythonTool | LangchainTool):
            return [(FINAL_ANSWER, f"The result is {last.observation}.")]
        return [(FINAL_ANSWER, f"Here is what {tool.name} returned: {_summary(last.observation or '')}")]

    @staticmethod
    def _tool_input(tool: Any, plan: Any, question: str) -> str:
        """The example's input for this question; else the question (string tools) or sampled arguments."""
        found = _example_input(tool, question)
        if found is not None:
            return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)
        if not tool.structured:
            return question
        from distill.teachers.sampler import sample_instance

        rng = random.Random(f"{plan.seed}:{tool.name}")
        arguments = sample_instance(tool.input_schema, rng, examples=[e.input for e in tool.examples])
        return json.dumps(arguments, ensure_ascii=False)

    @staticmethod
    def _second_search(question: str, searches: list[Any]) -> str | None:
        """The query of a further search when the question asks about terms no search so far returned, else None."""
        seen = _observed_words(searches)
        asked = {" ".join(s.action_input.casefold().split()) for s in searches}
        for ask in parts(question):
            missing = [t for t in terms(ask, limit=6) if t.lower() not in seen]
            query = " ".join(missing)
            if len(missing) >= 2 and query.casefold() not in asked:
                return query
        return None

    @staticmethod
    def _answer_from(question: str, *observations: str) -> str:
        docs: list[Any] = []
        for observation in observations:
            docs.extend(_documents(observation))
        if not docs:
            return "I couldn't find anything about that in the documents."
        chosen: list[str] = []
        for ask in parts(question):
            wanted = {t.lower() for t in terms(ask, limit=8)}
            best, best_score = "", 0
            for doc in docs:
                for sentence, words in _sentence_words(str(doc)):
                    score = len(wanted & words)
                    if score > best_score and sentence not in chosen:
                        best, best_score = sentence, score
            if best:
                chosen.append(best)
        if not chosen:
            return "I couldn't find anything specific about that in the documents."
        return f"According to the documentation: {' '.join(chosen)}"


def _query(ask: str, limit: int) -> str:
    return " ".join(terms(ask, limit=limit)) or ask


def _summary(observation: str) -> str:
    """A simulated tool's JSON output told in words: its top-level scalar fields, else the text itself."""
    try:
        value = json.loads(observation)
    except ValueError:
        return observation
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        if len(value) == 1:
            return _summary(json.dumps(value[0]))
        return f"{len(value)} results. The first: {_summary(json.dumps(value[0]))}"
    if isinstance(value, list) and not value:
        return "nothing (no results)."
    if not isinstance(value, dict):
        return observation
    words = {True: "yes", False: "no"}
    parts = [
        f"{k.replace('_', ' ')}: {words.get(v, v) if isinstance(v, bool) else v}"
        for k, v in value.items()
        if isinstance(v, str | int | float) and v != ""
    ]
    return "; ".join(parts) + "." if parts else observation


_DIGIT = re.compile(r"[0-9]")


def _ids(value: Any) -> list[str]:
    """The string values of a structured input that contain digits (ids such as INV-204518)."""
    if isinstance(value, str):
        return [value] if _DIGIT.search(value) else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _ids(v)]
    if isinstance(value, list):
        return [s for v in value for s in _ids(v)]
    return []


def _replace(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    return value


def _vary(example: Any, rng: random.Random) -> str:
    """The example's question with the ids it mentions given new digits (the call's input follows, _example_input)."""
    question = example.question
    for old in _ids(example.input):
        if old in question:
            question = question.replace(old, _DIGIT.sub(lambda _: str(rng.randrange(10)), old))
    return question


_NUMBER = re.compile(r"(?<![\w.])\d+(?!\w)")


def _vary_numbers(example: Any, rng: random.Random) -> str:
    """A string example's question with the numbers it shares with its input redrawn (same number of digits), so
    that "What is 17 times 23?" -> "17 * 23" also yields "What is 48 times 91?" -> "48 * 91" (_example_input)."""
    shared = sorted(set(_NUMBER.findall(example.input)) & set(_NUMBER.findall(example.question)))  # sorted: the draws
    if not shared:  # must not depend on PYTHONHASHSEED
        return example.question
    new = {n: str(rng.randrange(10 ** (len(n) - 1) if len(n) > 1 else 1, 10 ** len(n))) for n in shared}
    return _NUMBER.sub(lambda m: new.get(m.group(), m.group()), example.question)


def _numbers_input(example: Any, question: str) -> str | None:
    """The string input of `example` for a question that is its question with other numbers; else None."""
    if _NUMBER.sub("#", example.question) != _NUMBER.sub("#", question):
        return None
    shared = set(_NUMBER.findall(example.input))
    pairs = zip(_NUMBER.findall(example.question), _NUMBER.findall(question), strict=True)
    new = {old: now for old, now in pairs if old in shared}
    return _NUMBER.sub(lambda m: new.get(m.group(), m.group()), example.input)


def _example_input(tool: Any, question: str) -> Any:
    """The input of the example asked by `question`, ids included when the question varies them; else None."""
    for example in tool.examples:
        if example.question == question:
            return example.input
    for example in tool.examples:
        if isinstance(example.input, str):
            found = _numbers_input(example, question)
            if found is not None:
                return found
    for example in tool.examples:
        if not isinstance(example.input, dict) or len(example.question) != len(question):
            continue
        if _DIGIT.sub("#", example.question) != _DIGIT.sub("#", question):
            continue
        value = example.input
        for old in _ids(example.input):
            at = example.question.find(old)
            if at >= 0:
                value = _replace(value, old, question[at : at + len(old)])
        return value
    return None
