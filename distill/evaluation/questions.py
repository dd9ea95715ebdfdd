"""The held-out questions a student is evaluated on, and the few-shot demonstrations taken from a run.

The questions are the first turns of the run's validation-split conversations (their source documents never fed
the training split), with the reference answer and whether the reference used a tool; or a questions file (text, one
question a line, or JSONL with "question", "reference", "used_tool").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import DistillError
from distill.run_folder import RunFolder, load_trajectories, read_jsonl, read_manifest

__all__ = ["EvalError", "EvalQuestion", "few_shot_demos", "load_questions"]


class EvalError(DistillError):
    """An evaluation that cannot run (no questions, no endpoint, duplicate model names)."""


@dataclass(frozen=True, slots=True)
class EvalQuestion:
    """One held-out question, with the reference answer and whether the reference used a tool (when known)."""

    id: str
    question: str
    reference: str | None = None
    reference_used_tool: bool | None = None
    doc_id: str | None = None
    kind: str | None = None
    chunk_id: str | None = None  # the passage the reference conversation was planned from (the judge reads it)


def _validation_questions(run_dir: Path) -> list[EvalQuestion]:
    held_out = set(read_manifest(run_dir).split.validation_documents)
    if not held_out:
        raise EvalError(
            f"{RunFolder(run_dir).manifest}: split.validation_documents is empty: no held-out questions",
            hint="set export.validation_fraction above 0 and re-export, or pass --questions FILE",
        )
    questions = []
    for t in load_trajectories(run_dir):
        if t.outcome != "accepted" or t.doc_id not in held_out or not t.turns or t.turns[0].answer is None:
            continue
        first = t.turns[0]
        used_tool = any(not s.is_final for s in first.steps)
        questions.append(EvalQuestion(t.id, first.question, first.answer, used_tool, t.doc_id, t.kind, t.chunk_id))
    return questions


def _file_questions(path: Path) -> list[EvalQuestion]:
    if not path.is_file():
        raise EvalError(f"{path}: no such questions file", hint="give a .jsonl file or a text file, one question a line")
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            questions.append(EvalQuestion(f"q{number:04d}", line.strip()))
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise EvalError(f"{path}:{number}: not JSON: {exc}") from None
        question = row.get("question") if isinstance(row, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise EvalError(
                f"{path}:{number}: needs a non-empty \"question\" string",
                hint='lines look like {"question": "...", "reference": "...", "used_tool": true}',
            )
        used = row.get("used_tool")
        questions.append(
            EvalQuestion(str(row.get("id") or f"q{number:04d}"), question.strip(), row.get("reference") or None,
                         used if isinstance(used, bool) else None)
        )
    return questions


def load_questions(run_dir: Path, questions_file: str | Path | None = None, n: int | None = 100) -> list[EvalQuestion]:
    """The held-out questions: the run's validation split (first turns), or a questions file; the first `n`."""
    found = _file_questions(Path(questions_file)) if questions_file else _validation_questions(run_dir)
    if not found:
        where = questions_file or f"{run_dir} (validation split)"
        raise EvalError(f"no questions in {where}", hint="pass --questions FILE or generate a larger run")
    return found[:n] if n else found


def few_shot_demos(run_dir: Path, k: int) -> list[dict[str, Any]]:
    """k demonstrations from the run's train.jsonl (shortest tool-using and direct examples, alternating),
    as the messages after each example's system message; inserted after the system message when `few_shot` > 0."""
    folder = RunFolder(run_dir)
    path = folder.require(folder.train, purpose=" for --few-shot")
    pools: dict[bool, list[list[dict[str, Any]]]] = {True: [], False: []}
    rows: list[dict[str, Any]] = read_jsonl(path, hint="`distill export CONFIG --run RUN` rewrites it")
    for row in rows:
        messages = row["messages"]
        if any(m.get("weight") == 0 for m in messages):
            continue  # examples with chat history would show a conversation that is not this one
        body = [{key: value for key, value in m.items() if key != "weight"} for m in messages[1:]]
        pools[len(body) > 2].append(body)
    for pool in pools.values():
        pool.sort(key=lambda ms: sum(len(m["content"]) for m in ms))
    interleaved = [ex for pair in zip(pools[True], pools[False], strict=False) for ex in pair]
    shortest = min(len(pools[True]), len(pools[False]))
    interleaved += pools[True][shortest:] + pools[False][shortest:]
    if len(interleaved) < k:
        raise EvalError(f"{path} has fewer than {k} single-turn examples for --few-shot {k}")
    demos = [m for example in interleaved[:k] for m in example]
    return demos
