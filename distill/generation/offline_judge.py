"""The offline judge: a deterministic, lexical stand-in for the LLM judge when the teacher is offline (no key).

It reads no meaning, only words: `supported` is the share of the final answers' content words found in the tool
observations; `answers` the share of the questions' content words found in the answers or in what the tools returned
for them; `answerable` the share of the questions' content words found in the document passage; `tool_choice`
whether the conversation's planned tool was called (and no tool for a `direct` conversation). A share s scores
1 + round(4 s). The manifest labels its verdicts `offline-lexical`: they check wiring, not truth.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from distill.trajectory import Trajectory

__all__ = ["OFFLINE_JUDGE", "OFFLINE_JUDGE_NOTE", "OfflineJudge"]

OFFLINE_JUDGE = "offline-lexical"
OFFLINE_JUDGE_NOTE = (
    "Verdicts of distill's offline lexical judge (no language model): word overlap between answers, questions, tool "
    "observations and the document. Use a real teacher for a judge worth trusting."
)
_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = (
    "the and for are was were with that this from what which when where who how why does did can could would should "
    "you your about into than then there their them they have has had not but all any its it's our out use used also "
    "tell please know more some such only very just like much many been being will shall may might"
)
_STOP = frozenset(_STOP_WORDS.split())


@lru_cache(maxsize=1024)  # observations, questions and passages recur across conversations
def _text_terms(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOP)


def _terms(*texts: str) -> set[str]:
    """The content words of the texts joined by spaces: the union of each text's (a word never spans a space)."""
    out: set[str] = set()
    for text in texts:
        out |= _text_terms(text)
    return out


def _score(share: float) -> int:
    return 1 + round(4 * max(0.0, min(1.0, share)))


def _share(words: set[str], pool: set[str]) -> float:
    return len(words & pool) / len(words) if words else 1.0


class OfflineJudge:
    """Scores a conversation on the built-in criteria by word overlap; deterministic, free."""

    name = OFFLINE_JUDGE

    def verdict(self, trajectory: Trajectory, document: str, criteria: Sequence[str]) -> dict[str, dict[str, Any]]:
        """{criterion: {"score": 1-5, "reason": one sentence}} for each criterion asked."""
        steps = [s for turn in trajectory.turns for s in turn.steps]
        observed = _terms(*(s.observation or "" for s in steps if not s.is_final))
        answers = _terms(*(turn.answer or "" for turn in trajectory.turns))
        asked = _terms(*(turn.question for turn in trajectory.turns))
        used = {s.action for s in steps if not s.is_final}
        out: dict[str, dict[str, Any]] = {}
        for criterion in criteria:
            out[criterion] = getattr(self, f"_{criterion}")(trajectory, document, observed, answers, asked, used)
        return out

    @staticmethod
    def _supported(t: Trajectory, doc: str, observed: set[str], answers: set[str], asked: set[str],
                   used: set[str]) -> dict[str, Any]:
        if not observed:
            if t.kind == "direct":
                return {"score": 5, "reason": "A direct answer with no tool observation to check it against."}
            return {"score": 1, "reason": "No tool observation supports the answer."}
        share = _share(answers - asked, observed)
        return {"score": _score(share), "reason": f"{share:.0%} of the answer's content words appear in the tool "
                "observations."}

    @staticmethod
    def _answers(t: Trajectory, doc: str, observed: set[str], answers: set[str], asked: set[str],
                 used: set[str]) -> dict[str, Any]:
        if not answers:
            return {"score": 1, "reason": "The final answer has no content words."}
        share = _share(asked, answers | observed)
        return {"score": _score(share), "reason": f"{share:.0%} of the question's content words are addressed by the "
                "answer or its observations."}

    @staticmethod
    def _answerable(t: Trajectory, doc: str, observed: set[str], answers: set[str], asked: set[str],
                    used: set[str]) -> dict[str, Any]:
        if t.kind == "direct":
            return {"score": 5, "reason": "A direct message needs no document."}
        share = _share(asked, _terms(doc))
        return {"score": _score(share), "reason": f"{share:.0%} of the question's content words occur in the document "
                "passage."}

    @staticmethod
    def _tool_choice(t: Trajectory, doc: str, observed: set[str], answers: set[str], asked: set[str],
                     used: set[str]) -> dict[str, Any]:
        planned = t.meta.get("tool")
        if t.kind == "direct":
            if used:
                return {"score": 2, "reason": f"A direct message, yet the assistant called {sorted(used)}."}
            return {"score": 5, "reason": "No tool was called, and none was needed."}
        if planned in used:
            return {"score": 5, "reason": f"The assistant called {planned}, the tool this question needs."}
        if used:
            return {"score": 3, "reason": f"The assistant called {sorted(used)} instead of {planned}."}
        return {"score": 1, "reason": f"The assistant answered without calling {planned}."}
