"""The offline teacher's user messages: questions built from the structure of the chunk's own sentences.

A sentence is read shallowly (subject, auxiliary or verb, the rest; a leading "If/When ..." condition; "To ...,"
purposes; "you can ..." permissions) and turned into the question a user would ask about it: what/how/why/when,
does-it and can-I forms, "is it expected that ...?" troubleshooting, a comparison of two sentences' subjects, or one
question about two sentences that needs both. Each plan's seed picks the sentence (or pair), the form and the
phrasing, so many conversations on the same chunk ask different things. Follow-ups ask about a sentence whose
terms the first question did not touch; a chunk without a sentence to build on is asked about a quoted phrase of it.
Direct (no-tool) messages are in `distill.teachers.offline_direct`. Deterministic: only `random.Random(seed)` and
ordered containers decide anything.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

__all__ = [
    "STOP",
    "WORD",
        "first_question",
    "follow_up",
    "parts",
    "sentences",
    "terms",
]

def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


WORD = re.compile(r"[A-Za-z][A-Za-z0-9_'-]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(`])")
STOP = frozenset(
    """a about above after again all also am an and any are as at be because been before being below between both but
    by can could did do does doing down during each few for from further had has have having he her here hers him his
    how i if in into is it its itself just me more most my no nor not now of off on once only or other our out over own
    same she should so some such than that the their them then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you your yours use used using uses
    one two may might must shall each every many much well like make makes made get gets without within via per
    difference compare expected happens need way""".split()  # noqa: SIM905
)
_HEADING = re.compile(r"(^|\n)#+ [^\n]*")
_MARKUP = re.compile(r"\[([^\]]*)\]\([^)]*\)|(?<!\w)[*_`]{1,2}(?=\S)|(?<=\S)[*_`]{1,2}(?!\w)|\([^()]*\)")
_DET = _set("the a an each every your its this that these those no any all some their our")
_PRONOUN = _set("it this that they these those there he she we which what who here such one")
_AUX = {"is": "is", "are": "are", "was": "was", "were": "were", "can": "can", "must": "must", "should": "should",
        "will": "will", "may": "may", "has": "has", "have": "have", "cannot": "can", "does": "does", "do": "do"}
_VERBS = frozenset(
    """write read run return take keep send count check call hold show store add drop reject accept split print answer
    ask give need mean start stop load build list name save skip fail cover contain include require support create
    produce become let allow prevent export import pass match replace retry resume set find search ignore follow apply
    describe define handle make raise expect compute choose pick turn record cost change copy sort tell leave own open
    close wait wrap treat parse render validate grade score plan measure fit refuse limit report spend reach move
    remove point serve learn see cut join group map mark answer receive provide represent allocate accept convert
    emit yield generate implement override update encode decode""".split()  # noqa: SIM905
)
_PREP_END = _set("of to in on for with by from at as into and or than via while when if because but that which where so")

_REFERS = _set("its this that these those their our his her")  # they point back: no subject alone
_RELATIVE = _set("whose which who whom where")
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.'/-]*(?<!')")  # a word that reads in a question: no quotes, colons, >>>
_CODE = re.compile(r">>>|[{}<>=|\\]|\(\)|::|\$ ")
_CUT = _set("while because which whereas although though unless so but whose")
_LEADING = _set("in on for with by at from as after before during since because although while unlike like "
                     "besides for with without under over through")


@lru_cache(maxsize=65536)
def sentences(text: str) -> list[str]:
    """The chunk's sentences of six words or more, headings and Markdown markup dropped."""
    text = _HEADING.sub(" ", text)
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if len(s.split()) >= 6]


def terms(text: str, limit: int = 4) -> list[str]:
    """The first `limit` distinct content words of `text`, in order (search terms)."""
    return list(_terms(text, limit))


@lru_cache(maxsize=4096)
def _terms(text: str, limit: int) -> tuple[str, ...]:  # questions and sentences are asked about again and again
    seen: list[str] = []
    lows: set[str] = set()
    for word in WORD.findall(text):
        low = word.lower()
        if low not in STOP and len(low) > 1 and low not in lows:
            seen.append(word)
            lows.add(low)
        if len(seen) == limit:
            break
    return tuple(seen)


def _lemma(verb: str) -> str | None:
    """The base form of a third-person verb from the list ("writes" -> "write", "carries" -> "carry"), else None."""
    low = verb.lower()
    for cut, add in (("ies", "y"), ("es", ""), ("s", "")):
        if low.endswith(cut) and low[: -len(cut)] + add in _VERBS:
            return low[: -len(cut)] + add
    return None


def _subject_ok(words: list[str], lower_ok: bool = True) -> bool:
    """A subject a question can stand on: 1-7 words, no pronoun, led by a determiner or a name-like word."""
    if not 1 <= len(words) <= 7 or words[0].lower() in _PRONOUN or words[-1].lower() in _PRONOUN | _PREP_END:
        return False
    first = words[0]
    if first.lower() in _REFERS or len(words) == 1 and first.lower() in _DET or len(words) > 6:
        return False
    if any(w.lower() in _RELATIVE or not _PLAIN.fullmatch(w) for w in words):
        return False
    named = first[:1].islower() and lower_ok or any(c.isupper() or c.isdigit() or c in "_.-" for c in first[1:])
    return first.lower() in _DET or named or len(words) >= 2 and words[1][:1].islower() and first.istitle()


def _lower_first(words: list[str]) -> str:
    text = " ".join(words)
    first = words[0]
    if first.lower() in _DET or (first.istitle() and not any(c.isupper() for c in first[1:]) and len(words) > 1):
        return text[0].lower() + text[1:]
    return text


def _clean(sentence: str) -> list[str]:
    text = _MARKUP.sub(lambda m: m.group(1) or "", sentence)
    text = re.sub(r"\s+([,;:])", r"\1", text.rstrip(".!?:; "))
    return [w for w in text.split() if w not in ("-", "--", "—")]


def _clip(words: list[str], most: int = 9) -> list[str]:
    """The rest of a clause up to its first comma/semicolon, at most `most` words, not ending on a preposition."""
    out: list[str] = []
    for word in words:
        out.append(word.rstrip(",;:."))
        if word[-1:] in ",;:." or len(out) == most:
            break
    cut = next((k for k, w in enumerate(out) if k >= 2 and w.lower() in _CUT), None)
    out = out[:cut] if cut is not None else out
    while out and out[-1].lower() in _PREP_END | _DET | set(_AUX) | {"such", "not", "also"}:
        out.pop()
    return out


def _clause_forms(words: list[str], starts: bool = True) -> list[str]:
    """Questions from a "subject verb rest" clause (empty when the clause is not one)."""
    for i in range(1, min(len(words) - 1, 8)):
        low = words[i].lower().rstrip(",")
        aux, lemma = _AUX.get(low), None if low in _AUX else _lemma(words[i])
        if aux is None and lemma is None:
            continue
        if lemma is not None and any(w.lower() in _AUX for w in _clip(words[i + 1 : i + 7], 6)):
            continue  # "earlier answers in the chat history are ...": a noun, the verb comes later
        subject = words[:i]
        if not _subject_ok(subject, lower_ok=starts):
            return []
        subj, rest = _lower_first(subject), words[i + 1 :]
        negated = bool(rest) and rest[0].lower() in ("not", "never") or low == "cannot"
        if negated and low != "cannot":
            rest = rest[1:]
        short, full = _clip(rest, 5), _clip(rest, 10)
        if len(short) < 2:
            return []
        s, f = " ".join(short), " ".join(full)
        tail = words[i:i + 1 + len(full) + (1 if negated and low != 'cannot' else 0)]
        clause = f"{subj} {' '.join(tail)}".rstrip(",;:")
        if rest[0].lower() in ("that", "also", "only", "then", "there"):
            return []
        when = [] if {"when", "if", "after", "before", "once"} & {w.lower() for w in full} else [None]
        expected = f"Is it expected that {clause}?"
        if lemma is not None:
            return [f"Does {subj} {lemma} {f}?", f"Why does {subj} {lemma} {s}?", f"How does {subj} {lemma} {s}?",
                    *(f"When does {subj} {lemma} {s}?" for _ in when), expected]
        if negated:
            neg = {"is": "isn't", "are": "aren't", "can": "can't", "does": "doesn't", "do": "don't", "will": "won't",
                   "was": "wasn't", "were": "weren't", "should": "shouldn't", "must": "mustn't", "has": "hasn't",
                   "have": "haven't", "may": "may not"}[aux or "is"]
            mine = subject[0].lower() in _DET and len(subject) > 1
            troubled = f"My {' '.join(subject[1:])} {neg.replace('may not', 'might not')} {s}. Is that expected?"
            return [f"Why {neg} {subj} {f}?", *([troubled] if mine else []), expected]
        if aux in ("is", "are", "was", "were"):
            passive = short[0].lower().endswith(("ed", "en", "wn", "ne", "lt", "pt"))
            forms = [f"{aux.title()} {subj} {f}?", f"Why {aux} {subj} {s}?",
                     *(f"When {aux} {subj} {s}?" for _ in when if passive)]
            if short[0].lower() in ("a", "an", "the"):
                forms.append(f"What {aux if aux in ('is', 'are') else 'is'} {subj}?")
            return [*forms, expected]
        if aux in ("has", "have"):
            return [f"Does {subj} have {f}?", f"What does {subj} have {s}?" if short[0].endswith(("ed", "en")) else
                    f"Why does {subj} have {s}?", expected]
        if aux in ("does", "do"):
            return [f"{aux.title()} {subj} {f}?", f"How {aux} {subj} {s}?"]
        if subj.lower() == "you" and aux in ("can", "may", "should", "must"):
            verb = {"can": "Can I", "may": "Can I", "should": "Should I", "must": "Do I have to"}[aux]
            return [f"{verb} {f}?", f"How do I {s}?", f"When should I {s}?"]
        if aux == "must":
            return [f"Does {subj} have to {f}?", f"Why must {subj} {s}?", expected]
        return [f"{aux.title()} {subj} {f}?", f"How {aux} {subj} {s}?", f"Why {aux} {subj} {s}?", expected]  # type: ignore[union-attr]
    return []


@lru_cache(maxsize=65536)
def _forms(sentence: str) -> tuple[str, ...]:
    """Every question the sentence supports (possibly none)."""
    words = _clean(sentence)
    if len(words) < 4 or _CODE.search(sentence):
        return ()
    head, starts = words[0].lower(), True
    out: list[str] = []
    comma = next((k for k, w in enumerate(words) if w.endswith(",")), None)
    if head in _LEADING and comma is not None and comma <= 8 and len(words) - comma >= 5:  # "In X, subject verb ..."
        words, head, comma, starts = words[comma + 1 :], words[comma + 1].lower(), None, False
    if head in ("if", "when", "unless", "once") and comma is not None and 2 <= comma <= 12:
        cond = _lower_first(words[1 : comma + 1]).rstrip(",")
        out.append(f"What happens {'if' if head in ('if', 'unless') else 'when'} {cond}?")
        out.extend(_clause_forms(words[comma + 1 :], starts=False))
    elif head == "to" and comma is not None and 2 <= comma <= 10:
        out.append(f"How do I {' '.join(words[1 : comma + 1]).rstrip(',')}?")
        out.append(f"What's the way to {' '.join(words[1 : comma + 1]).rstrip(',')}?")
    elif words[0].lower() in _VERBS and words[0][:1].isupper():  # an imperative: "Set the key ..."
        rest = _clip(words[1:], 8)
        if len(rest) >= 2:
            out.append(f"Do I need to {head} {' '.join(rest)}?")
            out.append(f"Should I {head} {' '.join(rest)}?")
    else:
        out.extend(_clause_forms(words, starts))
    return tuple(q for q in out if 4 <= len(q.split()) <= 24)


def _subject(sentence: str) -> str | None:
    forms = [q for q in _forms(sentence) if q.startswith(("What is ", "What are "))]
    return forms[0].split(" ", 2)[2].rstrip("?") if forms else None


_OPENERS = ("", "", "", "", "Hi, ", "Quick one: ", "Hey, ", "In distill, ")
_PAIR = (
    "{a} And {b}",
    "Two things: {a_low} Also, {b}",
    "{a} Related: {b}",
)


def _opened(question: str, rng: random.Random) -> str:
    opener = rng.choice(_OPENERS)
    if not opener or question.startswith("I "):
        return f"{opener}{question}"
    return f"{opener}{question[0].lower()}{question[1:]}"


_QUOTED = ('What do the docs say about "{p}"?', 'What does "{p}" mean here?', 'I keep reading "{p}". What is that about?',
           'Can you find where the docs mention "{p}"?', 'Where is "{p}" explained, and what does it say?')


def _span(sentence: str, rng: random.Random) -> str | None:
    """A run of 2-5 words of the sentence that starts and ends on a content word (quoted, it reads as a quotation)."""
    read = _spans(sentence)
    if read is None:
        return None
    words, first, spans = read
    start, end = rng.choice(spans) if spans else (first, first)
    return " ".join(words[start : end + 1])


@lru_cache(maxsize=4096)
def _spans(sentence: str) -> tuple[tuple[str, ...], int, tuple[tuple[int, int], ...]] | None:
    """The sentence's words, its first content word and the spans `_span` draws from; None without content words."""
    words = [w.strip(",;:.!?()\"'`*") for w in sentence.split()]
    content = [k for k, w in enumerate(words) if w.lower() not in STOP and _PLAIN.fullmatch(w or "-")]
    if not content:
        return None
    spans = tuple((a, b) for a in content for b in content
                  if a < b <= a + 4 and all(_PLAIN.fullmatch(w or "-") for w in words[a : b + 1]))
    return tuple(words), content[0], spans


def _quoted(pool: list[str], rng: random.Random) -> str:
    phrase = _span(rng.choice(pool), rng)
    if phrase is None:
        return "What do the docs say about this?"
    return rng.choice(_QUOTED).format(p=phrase)


def first_question(text: str, rng: random.Random) -> str:
    """A user's first question about the chunk `text`: a sentence's question, a pair, a comparison or a quotation."""
    pool = sentences(text) or [text]
    roll = rng.random()
    if len(pool) >= 2 and roll < 0.3:
        i, j = sorted(rng.sample(range(len(pool)), 2))
        a, b = _forms(pool[i]), _forms(pool[j])
        if a and b:
            second = rng.choice(b)
            second = second if second.startswith("I ") else second[0].lower() + second[1:]
            first = rng.choice(a)
            return rng.choice(_PAIR).format(a=first, a_low=first[0].lower() + first[1:], b=second)
    if len(pool) >= 2 and roll < 0.4:
        subjects = list(dict.fromkeys(s for s in map(_subject, pool) if s))
        if len(subjects) >= 2:
            x, y = rng.sample(subjects, 2)
            form = rng.choice(("What's the difference between {x} and {y}?", "How does {x} compare with {y}?",
                               "How do {x} and {y} relate?"))
            return form.format(x=x, y=y)
    if roll >= 0.5 and (asked := _asked(text)):
        return _opened(rng.choice(asked), rng)
    return _quoted(pool, rng)


@lru_cache(maxsize=4096)
def _asked(text: str) -> tuple[str, ...]:
    """Every question the chunk's sentences support, sentence by sentence."""
    return tuple(f for s in (sentences(text) or [text]) for f in _forms(s))


_FOLLOW = ("And {q}", "Thanks. {Q}", "One more: {q}", "Follow-up: {q}", "OK, and {q}", "Got it. {Q}")


def follow_up(text: str, earlier: list[str], rng: random.Random) -> str:
    """A later question about a sentence none of whose search terms the earlier questions used."""
    used = {t.lower() for q in earlier for t in terms(q, limit=12)}
    pool = sentences(text) or [text]
    fresh = [s for s in pool if not {t.lower() for t in terms(s, limit=6)} & used] or \
        sorted(pool, key=lambda s: len({t.lower() for t in terms(s, limit=6)} & used))[:2]
    choices = [f for s in fresh for f in _forms(s)]
    question = rng.choice(choices) if choices else _quoted(fresh, rng)
    lower = question if question.startswith("I ") else question[0].lower() + question[1:]
    return rng.choice(_FOLLOW).format(q=lower, Q=question)


def parts(question: str) -> list[str]:
    """The parts of a question that asks two things (each needs its own evidence); else [question]."""
    return list(_parts(question))


@lru_cache(maxsize=4096)
def _parts(question: str) -> tuple[str, ...]:  # each step of a conversation asks again
    between = re.search(r"difference between (.+) and (.+)\?$", question)
    if between:
        return between.group(1), between.group(2)
    for pattern in (r" compare with ", r"^How do (.+) and (.+) relate\?$", r"\? (?:And|Also,|Related:) "):
        found = re.search(pattern, question)
        if found and found.groups():
            return found.group(1), found.group(2)
        if found:
            return question[: found.start() + (1 if found.group().startswith("?") else 0)], question[found.end():]
    return (question,)
