"""The evaluation's records and figures: transcripts, per-model metrics with counts, the table, report files.

Owns what `distill eval` measures and writes. A step is one model call (one answer) judged by the format's strict
reader. Metrics, the same in every agent format: format adherence (valid steps / steps), valid tool choice (steps
naming only configured tools, or exactly "Final Answer" / steps that got past the structure checks: for
langchain-chat one ```json block, valid JSON, exactly the two keys; for openai-tools a final text answer or tool
calls that are not truncated, filtered or parallel where that is not allowed), action_input validity (valid steps /
structured steps with a valid tool choice: the action_input or the call arguments satisfy the tool; a non-empty final
answer), completion (valid Final Answer within max_steps / questions), tool use (questions with a valid tool call /
questions whose reference used a tool), direct answers (questions whose reference answered without a tool, answered
by a valid Final Answer as the first step) and over-calling (the same questions on which the model made a valid tool
call the reference did not make), answer token F1 vs the reference (mean over questions with a reference; no
answer scores 0) and, with `--judge` (distill/evaluation/judging.py), the judge's mean score per criterion over the
answered questions it graded. Files: report.json, report.md,
transcripts/<model>.jsonl and failures/<model>.jsonl (each failing question with its reason).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.run_folder import REPORT_JSON, output_folder, write_json, write_jsonl, write_text
from distill.trajectory import FINAL_ANSWER

__all__ = ["EvalReport", "ModelResult", "Transcript", "TranscriptStep", "model_slug", "token_f1"]

_STRUCTURED = {None, "unknown_action", "action_input_not_string", "action_input_schema", "empty_answer",
               "invalid_arguments", "arguments_schema"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1: lowercase, punctuation and articles removed, whitespace tokens, multiset overlap."""

    def tokens(text: str) -> list[str]:
        return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()

    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def model_slug(model: str) -> str:
    """A file-name-safe form of a model id (ft:gpt-4o-mini:org::id -> ft_gpt-4o-mini_org__id)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", model) or "model"


@dataclass
class TranscriptStep:
    """One model call: the raw answer, the strict verdict and, for a tool call, what the tool answered.

    An answer with several (parallel) tool calls names them all in `action` ("A, B") and lists each call, its input
    and its observation in `calls` (openai-tools steps list their calls there, one or more)."""

    raw: str | None
    finish_reason: str | None
    ok: bool
    reason: str | None = None
    detail: str = ""
    action: str | None = None
    known_action: bool = False
    action_input: str | None = None
    observation: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Transcript:
    """One question played by one model."""

    question: str
    id: str = ""
    reference: str | None = None
    reference_used_tool: bool | None = None
    steps: list[TranscriptStep] = field(default_factory=list)
    answer: str | None = None
    error: str | None = None
    error_detail: str | None = None
    judge: dict[str, Any] | None = None  # --judge: {"scores": {criterion: {score, reason}}} or {"error", "detail"}

    @property
    def failure(self) -> str | None:
        """Why the question failed (a validator reason, no_final_answer, or the call error); None when it passed."""
        if self.error:
            return self.error
        bad = next((s for s in self.steps if not s.ok), None)
        if bad is not None:
            return bad.reason
        return None if self.answer is not None else "no_final_answer"

    @property
    def f1(self) -> float | None:
        """Token F1 of the answer vs the reference (0 without an answer); None without a reference."""
        if self.reference is None:
            return None
        return token_f1(self.answer, self.reference) if self.answer is not None else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["judge"] is None:
            del data["judge"]  # eval without --judge writes transcripts as before
        for step in data["steps"]:
            if not step["calls"]:
                del step["calls"]  # langchain-chat steps: one action, already in action / action_input / observation
        return {**data, "failure": self.failure, "f1": self.f1}


def _called_a_tool(t: Transcript) -> bool:
    """True when some valid step of the transcript called a tool."""
    return any(s.ok and s.action != FINAL_ANSWER for s in t.steps)


def _judge_metric(transcripts: list[Transcript]) -> dict[str, Any] | None:
    """The judge's mean score per criterion over the graded answers (None when nothing was judged)."""
    judged = [t.judge for t in transcripts if t.judge is not None]
    if not judged:
        return None
    graded = [j["scores"] for j in judged if "scores" in j]
    criteria = list(dict.fromkeys(c for scores in graded for c in scores))
    means = {c: {"mean": round(sum(s[c]["score"] for s in graded if c in s) / len(graded), 3), "count": len(graded)}
             for c in criteria}
    return {**means, "judged": len(graded), "errors": len(judged) - len(graded), "answered": len(judged)}


def _rate(count: int, total: int) -> dict[str, Any]:
    return {"rate": round(count / total, 4) if total else None, "count": count, "total": total}


@dataclass
class ModelResult:
    """A model's transcripts and the figures computed from them."""

    model: str
    transcripts: list[Transcript]
    seconds: float = 0.0
    completion_tokens: int = 0
    base_url: str | None = None
    limits: dict[str, Any] | None = None  # the engine's rate limits in force and where they came from

    def metrics(self) -> dict[str, Any]:
        """Every metric as {rate, count, total} (answer_f1 as {mean, count, answered})."""
        steps = [s for t in self.transcripts for s in t.steps]
        structured = [s for s in steps if s.reason in _STRUCTURED]
        named = [s for s in structured if s.known_action]
        tool_questions = [t for t in self.transcripts if t.reference_used_tool]
        used = [t for t in tool_questions if _called_a_tool(t)]
        direct_questions = [t for t in self.transcripts if t.reference_used_tool is False]
        direct = [t for t in direct_questions if t.steps and t.steps[0].ok and t.steps[0].action == FINAL_ANSWER]
        over = [t for t in direct_questions if _called_a_tool(t)]
        scored = [t for t in self.transcripts if t.reference is not None]
        answered = [t for t in scored if t.answer is not None]
        judged = _judge_metric(self.transcripts)
        metrics: dict[str, Any] = {
            "format_adherence": _rate(sum(s.ok for s in steps), len(steps)),
            "tool_choice": _rate(len(named), len(structured)),
            "action_input": _rate(sum(s.ok for s in named), len(named)),
            "completion": _rate(sum(t.answer is not None for t in self.transcripts), len(self.transcripts)),
            "tool_use": _rate(len(used), len(tool_questions)),
            "direct_answer": _rate(len(direct), len(direct_questions)),
            "over_calling": _rate(len(over), len(direct_questions)),
            "answer_f1": {
                "mean": round(sum(t.f1 or 0.0 for t in scored) / len(scored), 4) if scored else None,
                "count": len(scored),
                "answered": len(answered),
            },
        }
        if judged is not None:  # --judge
            metrics["judge"] = judged
        return metrics

    def failures(self) -> list[Transcript]:
        """The questions that did not end in a valid Final Answer."""
        return [t for t in self.transcripts if t.failure is not None]

    def to_dict(self) -> dict[str, Any]:
        metrics = self.metrics()
        call_errors = Counter(t.error for t in self.transcripts if t.error)
        return {
            "model": self.model,
            "base_url": self.base_url,
            "format_adherence": metrics["format_adherence"]["rate"],
            "metrics": metrics,
            "failures_by_reason": dict(Counter(t.failure for t in self.failures()).most_common()),
            "call_errors": dict(call_errors.most_common()),
            "limits": self.limits,
            "timing": {
                "seconds": round(self.seconds, 2),
                "completion_tokens": self.completion_tokens,
                "tokens_per_s": round(self.completion_tokens / self.seconds, 1) if self.seconds else None,
            },
            "files": {
                "transcripts": f"transcripts/{model_slug(self.model)}.jsonl",
                "failures": f"failures/{model_slug(self.model)}.jsonl",
            },
        }


_ROWS = [
    ("format adherence (valid steps)", "format_adherence"),
    ("valid tool choice", "tool_choice"),
    ("action_input valid", "action_input"),
    ("completion (Final Answer)", "completion"),
    ("tool use (reference used one)", "tool_use"),
    ("direct answer (no tool needed)", "direct_answer"),
    ("over-calling (tool not needed)", "over_calling"),
]


def _cell(metric: dict[str, Any]) -> str:
    if metric["rate"] is None:
        return f"- ({metric['count']}/{metric['total']})"
    return f"{100 * metric['rate']:.1f}% ({metric['count']}/{metric['total']})"


@dataclass
class EvalReport:
    """Everything one `distill eval` measured; `models` is keyed by model id, in the order given."""

    config: str
    run: str
    questions_source: str
    questions: int
    settings: dict[str, Any]
    models: dict[str, ModelResult] = field(default_factory=dict)
    out_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report.json content."""
        return {
            "config": self.config,
            "run": self.run,
            "questions": {"source": self.questions_source, "count": self.questions},
            "settings": self.settings,
            "models": {name: result.to_dict() for name, result in self.models.items()},
        }

    def rows(self) -> list[list[str]]:
        """The side-by-side table: a header row, then one row per metric, one column per model."""
        dicts = [r.to_dict() for r in self.models.values()]
        rows = [["metric", *self.models]]
        for label, key in _ROWS:
            rows.append([label, *(_cell(d["metrics"][key]) for d in dicts)])
        f1 = [d["metrics"]["answer_f1"] for d in dicts]
        rows.append(["answer token F1 vs reference",
                     *("-" if m["mean"] is None else f"{m['mean']:.3f} (n={m['count']})" for m in f1)])
        judged = [d["metrics"].get("judge") for d in dicts]
        criteria = list(dict.fromkeys(c for j in judged if j for c in j if c not in ("judged", "errors", "answered")))
        for c in criteria:
            rows.append([f"judge: {c} (mean 1-5)",
                         *("-" if not j or c not in j else f"{j[c]['mean']:.2f} (n={j[c]['count']})" for j in judged)])
        rows.append(["top failure", *(_top_failure(d) for d in dicts)])
        rows.append(["tokens/s", *(str(d["timing"]["tokens_per_s"] or "-") for d in dicts)])
        return rows

    def table(self) -> str:
        """The side-by-side table as aligned plain text."""
        rows = self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        """The report.md content: settings, the table, and up to three failing transcripts per model."""
        rows = self.rows()
        out = [
            "# distill eval",
            "",
            (
                f"{self.questions} questions ({self.questions_source}) from run `{self.run}`; "
                f"max_steps={self.settings['max_steps']}, temperature={self.settings['temperature']}, "
                f"max_tokens={self.settings['max_tokens']}, few_shot={self.settings['few_shot']}."
            ),
            "",
            "| " + " | ".join(rows[0]) + " |",
            "|" + "---|" * len(rows[0]),
            *("| " + " | ".join(r) + " |" for r in rows[1:]),
        ]
        for name, result in self.models.items():
            failures = result.failures()
            reasons = ", ".join(f"{r} x{c}" for r, c in Counter(t.failure for t in failures).most_common())
            out += ["", f"## {name}", "", f"{len(failures)} failing question(s){': ' + reasons if reasons else ''}."]
            for t in failures[:3]:
                out += ["", f"**{t.question}** — `{t.failure}`", ""]
                for s in t.steps:
                    out += ["```text", (s.raw or "")[:600], "```"]
                    if not s.ok:
                        out.append(f"-> `{s.reason}`: {s.detail}")
                if t.error:
                    out.append(f"-> `{t.error}`: {t.error_detail}")
        return "\n".join(out) + "\n"

    def write(self, out_dir: Path) -> None:
        """Write report.json, report.md, transcripts/ and failures/ under out_dir."""
        self.out_dir = output_folder(out_dir)
        for sub in ("transcripts", "failures"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
            for stale in (out_dir / sub).glob("*.jsonl"):  # an earlier eval's models must not look like this one's
                stale.unlink()
        write_json(out_dir / REPORT_JSON, self.to_dict())
        write_text(out_dir / "report.md", self.markdown())
        for name, result in self.models.items():
            for sub, items in (("transcripts", result.transcripts), ("failures", result.failures())):
                write_jsonl(out_dir / sub / f"{model_slug(name)}.jsonl", (t.to_dict() for t in items))


def _top_failure(d: dict[str, Any]) -> str:
    reasons = d["failures_by_reason"]
    if not reasons:
        return "-"
    reason, count = next(iter(reasons.items()))
    return f"{reason} x{count}"
