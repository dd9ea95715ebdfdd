"""The prompt templates shipped in `prompts/` (questions, simulated tools): where they are and a cached loader."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from string import Template

__all__ = ["PROMPTS_DIR", "template"]

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"


@lru_cache(maxsize=16)
def template(name: str) -> Template:
    """The `string.Template` in prompts/NAME."""
    return Template((PROMPTS_DIR / name).read_text(encoding="utf-8"))
