"""What linting a file found: one `Problem` per thing wrong, the `LintReport` of a file, and its printed form."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from distill.tokens import default_epochs, token_stats

__all__ = ["LintReport", "Problem", "format_report"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one line; `message` is the index into its "messages" list, when one is to blame."""

    line: int
    reason: str
    detail: str
    message: int | None = None


@dataclass
class LintReport:
    """The outcome of linting one file."""

    path: str
    lines: int
    ok_lines: int
    problems: list[Problem] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no line has a problem."""
        return not self.problems

    def by_reason(self) -> dict[str, int]:
        """Problem counts per reason, most frequent first."""
        return dict(Counter(p.reason for p in self.problems).most_common())


def format_report(report: LintReport, *, max_lines: int = 50) -> str:
    """The problems as "path:LINE: reason: detail" lines, then a summary with token stats and default epochs."""
    out = []
    for p in report.problems[:max_lines]:
        where = f"message {p.message}: " if p.message is not None else ""
        out.append(f"{report.path}:{p.line}: {p.reason}: {where}{p.detail}")
    if len(report.problems) > max_lines:
        out.append(f"... and {len(report.problems) - max_lines} more problem(s)")
    bad = report.lines - report.ok_lines
    out.append(f"{report.path}: {report.lines} lines, {report.ok_lines} ok, {bad} with problems")
    if report.problems:
        out.append("problems by reason: " + ", ".join(f"{r}={n}" for r, n in report.by_reason().items()))
    stats = token_stats(report.token_counts)
    if stats["n"]:
        out.append(
            "tokens per example: min {min}, mean {mean}, median {median}, p95 {p95}, max {max}; total {total}".format(
                **stats
            )
        )
    epochs = default_epochs(report.lines)
    out.append(
        f"default epochs for {report.lines} examples: {epochs} "
        f"(~{int(stats['total']) * epochs} billed training tokens)"
    )
    return "\n".join(out)
