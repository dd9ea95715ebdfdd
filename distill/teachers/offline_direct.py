"""The offline teacher's direct (no-tool) messages and their exact answers: small talk and general knowledge.

`direct_message` writes what a user says that needs no document: small talk, arithmetic, unit conversions, spelling
and letter counts of a word of the chunk, days of the week; `direct_answer` answers exactly those messages (the
arithmetic is computed), else None. Deterministic: only the `random.Random` passed in decides.
"""

from __future__ import annotations

import random
import re

from distill.teachers.offline_questions import WORD

__all__ = ["direct_answer", "direct_message"]

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_UNITS = (("hours", "minutes", 60), ("minutes", "seconds", 60), ("days", "hours", 24), ("weeks", "days", 7),
          ("kilometres", "metres", 1000), ("kilograms", "grams", 1000), ("metres", "centimetres", 100))
_SMALL = (
    ("Hi! What can you help me with?", "Hi! I can answer questions about the documents I have access to. What would you like to know?"),
    ("Thanks, that's all I needed.", "You're welcome! Feel free to come back if you have more questions."),
    ("Good morning!", "Good morning! How can I help you today?"),
    ("Who are you?", "I'm an assistant that can look things up in the documentation for you and answer questions about it."),
    ("Can you keep your answers short, please?", "Sure, I'll keep my answers short."),
    ("What's the capital of France?", "The capital of France is Paris."),
    ("That was helpful, thank you!", "I'm glad it helped! Let me know if there's anything else."),
    ("Can you answer in a friendly tone?", "Of course! I'll keep things friendly."),
    ("Bye for now.", "Goodbye! Have a great day."),
    ("Do you remember what we talked about?", "This is the start of our conversation, so there's nothing earlier to remember yet."),
    ("What's a good way to start learning a new library?", "Start with its quick start, run the examples, then read the reference for the parts you use."),
    ("Is it OK if I ask you several questions?", "Absolutely, ask as many as you like."),
)
_ARITH = (("What is {a} times {b}?", "{a} times {b} is {r}.", lambda a, b: a * b),
          ("What's {a} plus {b}?", "{a} plus {b} is {r}.", lambda a, b: a + b),
          ("What is {a} minus {b}?", "{a} minus {b} is {r}.", lambda a, b: a - b),
          ("Can you add {a} and {b} for me?", "{a} and {b} add up to {r}.", lambda a, b: a + b),
          ("How much is {a} multiplied by {b}?", "{a} multiplied by {b} is {r}.", lambda a, b: a * b))


_KINDS = ("small", "arith", "arith", "arith", "units", "spell", "letters", "day", "day", "units", "spell", "letters")


def direct_message(text: str, rng: random.Random, *, arithmetic: bool = True) -> str:
    """A message the assistant answers without a tool: small talk or general knowledge it can answer exactly.

    Without `arithmetic` (a tool of the config computes: its examples ask about numbers), no sums or conversions:
    the same kind of question must not be answered with the tool in one conversation and without it in another.
    """
    kind = rng.choice(_KINDS if arithmetic else tuple(k for k in _KINDS if k not in ("arith", "units")))
    if kind == "small":
        q = rng.choice(_SMALL)[0]
        opener = rng.choice(("", "Hi! ", "Hey there. ", "Hello! ", "Hi again. ", "Morning! "))
        return f"{opener}{q}{rng.choice(('', ' Thanks!', ' Cheers.', ' Thank you.', ' :)'))}"
    if kind == "arith":
        form = rng.choice(_ARITH)[0]
        return form.format(a=rng.randrange(2, 100), b=rng.randrange(2, 100))
    if kind == "units":
        big, small, _ = rng.choice(_UNITS)
        return rng.choice(("How many {s} are in {n} {b}?", "Convert {n} {b} to {s}, please.")).format(
            s=small, b=big, n=rng.randrange(2, 100))
    words = sorted({w.lower() for w in WORD.findall(text) if len(w) >= 6 and w.isalpha()}) or ["necessary"]
    word = rng.choice(words)
    if kind == "spell":
        return rng.choice(("How do you spell '{w}'?", "Can you spell '{w}' letter by letter?")).format(w=word)
    if kind == "letters":
        return rng.choice(("How many letters are in the word '{w}'?", "How many letters does '{w}' have?")).format(
            w=word)
    day, step = rng.choice(_DAYS), rng.randrange(1, 31)
    return f"If today is {day}, what day is it in {step} day{'s' if step > 1 else ''}?"


def direct_answer(question: str) -> str | None:
    """The exact answer to a message of `direct_message`, else None."""
    low = question.lower()
    for core, answer in _SMALL:
        if core.lower() in low:
            return answer
    for form, answer, op in _ARITH:
        found = re.fullmatch(re.escape(form).replace(r"\{a\}", r"(\d+)").replace(r"\{b\}", r"(\d+)"), question)
        if found:
            a, b = int(found.group(1)), int(found.group(2))
            return answer.format(a=a, b=b, r=op(a, b))
    units = re.search(r"(?:how many (\w+) are in (\d+) (\w+)|convert (\d+) (\w+) to (\w+))", low)
    if units:
        small, n, big = units.group(1, 2, 3) if units.group(1) else (units.group(6), units.group(4), units.group(5))
        factor = next((f for b, s, f in _UNITS if b == big and s == small), None)
        if factor is not None:
            return f"{n} {big} is {int(n) * factor:,} {small}."
    word = re.search(r"'([a-z]+)'", low)
    if word and "spell" in low:
        return f"'{word.group(1)}' is spelled {'-'.join(word.group(1))}."
    if word and "letters" in low:
        return f"The word '{word.group(1)}' has {len(word.group(1))} letters."
    day = re.search(r"today is (\w+), what day is it in (\d+) day", low)
    if day and day.group(1).title() in _DAYS:
        later = _DAYS[(_DAYS.index(day.group(1).title()) + int(day.group(2))) % 7]
        return f"If today is {day.group(1).title()}, in {day.group(2)} day{'s' if day.group(2) != '1' else ''} it " \
               f"will be {later}."
    return None
