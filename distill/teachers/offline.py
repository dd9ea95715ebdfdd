"""The offline teacher: a deterministic, chunk-grounded policy that plays the agent without any model.

It exists so that distill runs end to end on a fresh machine with no key (the demo, the tests' pipeline runs). It
writes questions from sentences of the planned chunk, searches with the question's key terms, and answers with the
retrieved sentence that best matches the question; it answers small talk directly and asks follow-ups about other
sentences of the same chunk. Same config and seed, same output. The manifest says plainly that it wrote the data.
"""

from __future__ import annotations

import ast
import json
import random
import re
from functools import lru_cache
from typing import Any

from distill.config import Config, PythonTool
from distill.teachers.base import TeacherReply, TeacherRequest
from distill.validator import FINAL_ANSWER, render_action

__all__ = ["OfflineTeacher"]

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_'-]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(`])")
_STOP = frozenset(
    """a about above after again all also am an and any are as at be because been before being below between both but
    by can could did do does doing down during each few for from further had has have having he her here hers him his
    how i if in into is it its itself just me more most my no nor not now of off on once only or other our out over own
    same she should so some such than that the their them then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you your yours use used using uses
    one two may might must shall each every many much well like make makes made get gets without within via per""".split()
)
# Words of the question templates: never search terms.
_ASKING = frozenset(
    "docs say explain work trying understand know look quick question read thanks also tell related fit thing "
    "there could".split()
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
_DIRECT_ANSWERS = dict(_DIRECT)


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
        """Answer a question-synthesis or rollout request from its context."""
        if request.stage == "questions":
            text = json.dumps({"questions": self._questions(request.context)})
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
            return [rng.choice(_DIRECT)[0]]
        if isinstance(tool, PythonTool) and tool.examples:
            first = rng.choice(tool.examples).question
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
        plan, question, steps = ctx["plan"], ctx["question"], ctx["steps"]
        if question in _DIRECT_ANSWERS and plan.kind == "direct":
            return render_action(FINAL_ANSWER, _DIRECT_ANSWERS[question])
        tool = self._config.tool(plan.tool) if plan.tool else None
        if not steps:
            if tool is None:
                return render_action(FINAL_ANSWER, "I'm not sure; could you rephrase that?")
            if isinstance(tool, PythonTool):
                example = next((e for e in tool.examples if e.question == question), None)
                return render_action(tool.name, example.input if example else question)
            query = " ".join(_terms(question, limit=6)) or question
            return render_action(tool.name, query)
        last = steps[-1]
        if last.tool_error:
            return render_action(FINAL_ANSWER, f"I tried to use {last.action}, but it failed: {last.observation}")
        if isinstance(tool, PythonTool):
            return render_action(FINAL_ANSWER, f"The result is {last.observation}.")
        return render_action(FINAL_ANSWER, self._answer_from(question, last.observation or ""))

    @staticmethod
    def _answer_from(question: str, observation: str) -> str:
        try:
            docs = ast.literal_eval(observation)
        except (ValueError, SyntaxError):
            docs = [observation]
        if not isinstance(docs, list) or not docs:
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
