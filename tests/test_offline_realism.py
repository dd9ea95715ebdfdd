"""The embedded default reads like real data: the offline teacher's questions, follow-ups and distinct conversations."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from distill.generation.pipeline import generate, load_trajectories
from distill.teachers.offline import OfflineTeacher

from .conftest import CORPUS, REPO

# the old teacher's templates: a bare phrase pasted into a fixed sentence ("Quick question: what about never trained?");
# a quoted phrase ("What do the docs say about \"API key\"?") is a form users write
_OLD_TEMPLATES = re.compile(
    r"^(Quick question: what about|What is there to know about|What do the docs say about|Could you look up"
    r"|Where can I read about|I'm trying to understand) (?!\")|^How does .+ work\?$"
)


def _run(make_config, tmp_path: Path, conversations: int, **export):
    config = make_config(
        generation={"conversations": conversations, "seed": 3}, chunking={"max_chars": 600},
        export={"validation_fraction": 0.2, **export},
    )
    generate(config, tmp_path / "run", progress=False)
    return load_trajectories(tmp_path / "run")


def test_questions_are_varied_and_not_the_old_templates(make_config, tmp_path: Path) -> None:
    trajectories = _run(make_config, tmp_path, 200, dedup={"enabled": False})
    firsts = [t.turns[0].question for t in trajectories if t.kind != "direct"]
    assert len(firsts) >= 100
    assert not [q for q in firsts if _OLD_TEMPLATES.match(q)]
    assert len(set(firsts)) >= 0.9 * len(firsts)  # distinct questions, not a few forms repeated
    openers = {q.split()[0] for q in firsts}
    assert len(openers) >= 6  # what / how / why / when / does / is / can ... not one template's first word


def test_a_question_about_terms_the_first_search_missed_searches_again() -> None:
    class _Step:
        def __init__(self, query: str, observation: str) -> None:
            self.action_input, self.observation = query, observation

    searches = [_Step("bm25 ranking", "['BM25 ranks passages by query terms.']")]
    question = "What's the difference between BM25 ranking and gradient checkpointing memory?"
    again = OfflineTeacher._second_search(question, searches)
    assert again is not None and "checkpointing" in again and "bm25" not in again.lower()
    covered = [_Step("bm25 gradient", "['BM25 ranking. Gradient checkpointing saves memory.']")]
    assert OfflineTeacher._second_search(question, covered) is None


def test_runs_make_second_searches(make_config, tmp_path: Path) -> None:
    trajectories = _run(make_config, tmp_path, 200, dedup={"enabled": False})
    twice = [t for t in trajectories for turn in t.turns if sum(1 for s in turn.steps if s.observation) >= 2]
    assert twice  # some questions ask about two things and need a second search


def test_many_conversations_per_chunk_are_mostly_distinct(make_config, tmp_path: Path) -> None:
    # 600 conversations over corpus/ cut into ~40 chunks, dedup and top-up on: the old teacher lost 392 of 900
    # conversations (300 of them top-up) to dedup here; today 86 of 675
    trajectories = _run(make_config, tmp_path, 600, dedup={"enabled": True})
    dropped = json.loads((tmp_path / "run" / "manifest.json").read_text())["duplicates"]["dropped"]
    assert 600 <= len(trajectories) <= 720  # the top-up asks for little
    assert dropped <= 130, dropped


def test_output_does_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    source = (REPO / "configs" / "multi_tool_agent.yaml").read_text(encoding="utf-8")  # a calculator: numbers vary
    cfg = tmp_path / "multi.yaml"
    cfg.write_text(source.replace("conversations: 120", "conversations: 60").replace("../corpus/", str(CORPUS)),
                   encoding="utf-8")
    shutil.copy(REPO / "configs" / "agent_tools.py", tmp_path / "agent_tools.py")
    script = ("import sys; from distill.config import load_config; from distill.generation.pipeline import generate; "
              "generate(load_config(sys.argv[1]), sys.argv[2], progress=False)")
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = tmp_path / f"run{seed}"
        subprocess.run([sys.executable, "-c", script, str(cfg), str(out)], check=True, env=env, cwd=tmp_path)
        outputs.append((out / "train.jsonl").read_bytes() + (out / "trajectories.jsonl").read_bytes())
    assert outputs[0] and outputs[0] == outputs[1]
