"""The `judge:` section of the config: which model grades the conversations, on which criteria, with which thresholds.

Kept beside `config.py` (which re-exports it) the way the tool section is. The judge itself lives in
`distill.generation.judge`; the rubric of each criterion is the template `prompts/judge.<criterion>.md`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distill.tool_config import StrictModel

__all__ = ["CRITERIA", "Criterion", "JudgeConfig"]

Criterion = Literal["supported", "answers", "answerable", "tool_choice"]
CRITERIA: tuple[Criterion, ...] = ("supported", "answers", "answerable", "tool_choice")
SCORE_MIN, SCORE_MAX = 1, 5


class JudgeConfig(StrictModel):
    """An LLM judge between the rollouts and the export (off unless `enabled`); verdicts are stored, so changing a
    threshold and running `distill export` again costs no call."""

    enabled: bool = False
    model: str | None = Field(default=None, description="null = the teacher's model (same endpoint and key)")
    criteria: list[Criterion] = Field(default_factory=lambda: list(CRITERIA), min_length=1)
    threshold: int = Field(default=3, ge=SCORE_MIN, le=SCORE_MAX, description="lowest passing score (1-5)")
    thresholds: dict[Criterion, int] = Field(default_factory=dict, description="per criterion; else `threshold`")
    concurrency: int = Field(default=8, ge=1, le=1024, description="judge requests in flight")
    max_tokens: int = Field(default=400, ge=16, description="of the judge's answer")

    @model_validator(mode="after")
    def _check(self) -> JudgeConfig:
        if len(set(self.criteria)) != len(self.criteria):
            raise ValueError("criteria lists a criterion twice")
        for name, value in self.thresholds.items():
            if not SCORE_MIN <= value <= SCORE_MAX:
                raise ValueError(f"thresholds.{name} must be between {SCORE_MIN} and {SCORE_MAX} (got {value})")
            if name not in self.criteria:
                raise ValueError(f"thresholds.{name} is set but {name!r} is not in criteria")
        return self

    def threshold_of(self, criterion: str) -> int:
        """The lowest passing score of a criterion."""
        return self.thresholds.get(criterion, self.threshold)  # type: ignore[call-overload]
