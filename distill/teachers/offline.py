"""The offline teacher: a deterministic, chunk-grounded policy that plays the agent without any model.

It exists so that distill runs end to end on a fresh machine with no key (the demo, the tests' pipeline runs). It
writes questions from sentences of the planned chunk, searches with the question's key terms, and answers with the
retrieved sentence that best matches the question; it answers small talk directly and asks follow-ups about other
sentences of the same chunk. Same config and seed, same output. The manifest says plainly that it wrote the data.
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
from distill.trajectory import FINAL_ANSWER

__all__ = ["OfflineTeacher"]

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_'-]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(`])")
_STOP = frozenset(
    """a about above after again all also am an and any are as at be because been before being below between both but
    by can could did do does doing down during each few for from further had has have having he her here hers him his
    how i if in into is it its itself just me more most my no nor not now of off on once only or other our out over own
    same she should so some such than that the their them then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you your yours use used using uses
    one two may might must shall each every many much well like make makes made get gets without within via per""".split()  # noqa: SIM905
)
# Words of the question templates: never search terms.
_ASKING = frozenset(
    ("docs", "say", "explain", "work", "trying", "understand", "know", "look", "quick", "question", "read",
     "thanks", "also", "tell", "related", "fit", "thing", "there", "could")
)
_ASK = (
    "What do the docs say about {t}?",
    "Can you explain {t}?",
    "How does {t} work?",
    "I'm trying to understand {t}. What should I know?",
    "Could you look up {t} for me?",
    "What is there to know about {t}?",
    "Quick question: what about {t}?",
    "Where can I read about {t}, and what does it say?",
)
_FOLLOW = (
    "And what about {t}?",
    "Thanks. Can you also tell me about {t}?",
    "Related to that, how does {t} fit in?",
    "One more thing: what about {t}?",
)
_DIRECT = (
    ("Hi! What can you help me with?", "Hi! I can answer questions about the documents I have access to. What would you like to know?"),
    ("Thanks, that's all I needed.", "You're welcome! Feel free to come back if you have more questions."),
    ("Good morning!", "Good morning! How can I help you today?"),
    ("Who are you?", "I'm an assistant that can look things up in the documentation for you and answer questions about it."),
    ("Can you keep your answers short, please?", "Sure, I'll keep my answers short."),
    ("What's the capital of France?", "The capital of France is Paris."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("Please say hello in Spanish.", "Hola!"),
    ("That was helpful, thank you!", "I'm glad it helped! Let me know if there's anything else."),
    ("What is 12 times 12?", "12 times 12 is 144."),
    ("Can you answer in a friendly tone?", "Of course! I'll keep things friendly."),
    ("Bye for now.", "Goodbye! Have a great day."),
    ("Do you remember what we talked about?", "This is the start of our conversation, so there's nothing earlier to remember yet."),
    ("How do I spell 'necessary'?", "It's spelled n-e-c-e-s-s-a-r-y."),
    ("What's a good way to start learning a new library?", "Start with its quick start, run the examples, then read the reference for the parts you use."),
    ("Is it OK if I ask you several questions?", "Absolutely, ask as many as you like."),
)
# Small talk is varied the way people vary it: an opener and a closer around the request.
_OPENERS = ("", "Hi! ", "Hey there. ", "Hello, ", "Quick one: ", "Sorry to bother you. ", "Before we start: ", "Hmm, ")
_CLOSERS = ("", " Thanks!", " Thank you.", " Cheers.")


def _small_talk(rng: random.Random) -> str:
    core = rng.choice(_DIRECT)[0]
    opener, closer = rng.choice(_OPENERS), rng.choice(_CLOSERS)
    if opener and core[0].isupper() and not core.startswith(("I ", "I'", "Is ")):
        core = core[0].lower() + core[1:] if opener.endswith(", ") else core
    return f"{opener}{core}{closer}"


def _small_talk_answer(question: str) -> str | None:
    low = question.lower()
    return next((answer for core, answer in _DIRECT if core.lower() in low), None)


_HEADING = re.compile(r"(^|\n)#+ [^\n]*")


@lru_cache(maxsize=65536)
def _sentences(text: str) -> list[str]:
    text = _HEADING.sub(" ", text)
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if len(s.split()) >= 6]


@lru_cache(maxsize=65536)
def _sentence_words(text: str) -> tuple[tuple[str, frozenset[str]], ...]:
    return tuple((s, frozenset(w.lower() for w in _WORD.findall(s))) for s in (_sentences(text) or [text]))


def _terms(text: str, limit: int = 4) -> list[str]:
    seen: list[str] = []
    for word in _WORD.findall(text):
        low = word.lower()
        if low not in _STOP and low not in _ASKING and len(low) > 1 and low not in (w.lower() for w in seen):
            seen.append(word)
        if len(seen) == limit:
            break
    return seen


def _topic(sentence: str, rng: random.Random) -> str:
    """A phrase of the sentence: a run of 2-3 adjacent content words, else its first content words."""
    runs: list[list[str]] = [[]]
    for word in sentence.split():
        clean = word.strip(".,;:!?()\"'`")
        if clean and clean.lower() not in _STOP and _WORD.fullmatch(clean):
            runs[-1].append(clean)
            if word[-1] in ".,;:!?)":
                runs.append([])
        elif runs[-1]:
            runs.append([])
    good = [r for r in runs if len(r) >= 2]
    if good:
        run = rng.choice(good)
        start = rng.randrange(max(1, len(run) - 2))
        return " ".join(run[start : start + 3])
    terms = _terms(sentence, limit=3)
    return " ".join(terms) if terms else sentence[:40]


class OfflineTeacher:
    """Deterministic agent policy grounded in the chunks; never calls a model."""

    provider = "offline"

    def __init__(self, config: Config) -> None:
        self.model = "offline-deterministic"
        self._config = config

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
            return [_small_talk(rng)]
        if tool is not None and not tool.searches and tool.examples:
            example = rng.choice(tool.examples)
            first = _vary(example, rng) if tool.structured else _vary_numbers(example, rng)
        else:
            sentences = _sentences(chunk.text) or [chunk.text]
            first = rng.choice(_ASK).format(t=_topic(rng.choice(sentences), rng))
        questions = [first]
        sentences = _sentences(chunk.text) or [chunk.text]
        for _ in range(plan.turns - 1):
            questions.append(rng.choice(_FOLLOW).format(t=_topic(rng.choice(sentences), rng)))
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
        answer = _small_talk_answer(question) if plan.kind == "direct" else None
        if answer is not None:
            return [(FINAL_ANSWER, answer)]
        tool = self._config.tool(plan.tool) if plan.tool else None
        if not steps:
            if tool is None:
                return [(FINAL_ANSWER, "I'm not sure; could you rephrase that?")]
            if not tool.searches:
                follow_up = ctx["turn"] > 0 and _example_input(tool, question) is None
                search = next((t for t in self._config.tools if t.searches), None)
                if not (follow_up and search is not None):  # follow-ups ask about the chunk: search it
                    return [(tool.name, self._tool_input(tool, plan, question))]
                tool = search
            terms = _terms(question, limit=6)
            if parallel and len(terms) >= 3 and plan.seed % 2 == 0:  # split the search in two, run both at once
                half = len(terms) // 2
                return [(tool.name, " ".join(terms[:half])), (tool.name, " ".join(terms[half:]))]
            return [(tool.name, " ".join(terms) or question)]
        batch = [steps[-1]]
        while batch[0].parallel and len(batch) < len(steps):
            batch.insert(0, steps[-1 - len(batch)])
        last = batch[-1]
        failed = next((s for s in batch if s.tool_error), None)
        if failed is not None:
            return [(FINAL_ANSWER, f"I tried to use {failed.action}, but it failed: {failed.observation}")]
        tool = self._config.tool(last.action)
        if tool is None or tool.searches:
            return [(FINAL_ANSWER, self._answer_from(question, *(s.observation or "" for s in batch)))]
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
    def _answer_from(question: str, *observations: str) -> str:
        docs: list[Any] = []
        for observation in observations:
            try:
                found = ast.literal_eval(observation)
            except (ValueError, SyntaxError):
                found = [observation]
            docs.extend(found if isinstance(found, list) else [])
        if not docs:
            return "I couldn't find anything about that in the documents."
        wanted = {t.lower() for t in _terms(question, limit=8)}
        best, best_score = "", -1
        for doc in docs:
            for sentence, words in _sentence_words(str(doc)):
                score = len(wanted & words)
                if score > best_score:
                    best, best_score = sentence, score
        if best_score <= 0:
            return "I couldn't find anything specific about that in the documents."
        return f"According to the documentation: {best}"


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
    shared = set(_NUMBER.findall(example.input)) & set(_NUMBER.findall(example.question))
    if not shared:
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
