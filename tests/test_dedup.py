"""Deduplication before export: seeded exact, near and trajectory duplicates are dropped, counted and named."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from pathlib import Path

from distill.config import DedupConfig
from distill.formats import get_format
from distill.formats.langchain_actions import render_action
from distill.generation.dedup import find_duplicates, normalize, question_key, shingles
from distill.generation.export import export_run
from distill.generation.pipeline import generate, reexport
from distill.trajectory import Step, Trajectory, Turn
from tests.fake_openai import FakeResponse

BASE = "How does the validator decide that a teacher answer must be rejected before export?"
NEAR = "How does the validator decide that the teacher answer must be rejected before export?"  # one word
REWORDED = "How does the validator decide that a teacher answer should be rejected before export?"


def _conv(cid: str, questions: list[str], search: str | None = None, kind: str = "tool") -> Trajectory:
    turns = []
    for q in questions:
        steps = []
        if search is not None:
            steps.append(Step(action="Vector Search Tool", action_input=search, raw="", observation="['BM25 ...']"))
        steps.append(Step(action="Final Answer", action_input=f"About: {q}", raw=""))
        turns.append(Turn(question=q, steps=steps))
    return Trajectory(id=cid, kind=kind, doc_id=f"doc{cid[-1]}.md", chunk_id=f"doc{cid[-1]}.md#c0", turns=turns)


def _jaccard(a: str, b: str, size: int = 5) -> float:
    x, y = shingles(normalize(a), size), shingles(normalize(b), size)
    return len(x & y) / len(x | y)


def _seeded() -> list[Trajectory]:
    return [
        _conv("c000000", [BASE], search="validator rejection"),
        _conv("c000001", ["What is BM25?"], search="BM25"),
        _conv("c000002", ["  what is BM25 ??"], search="bm25 scoring"),  # exact after normalization
        _conv("c000003", [NEAR], search="reject before export"),  # near-duplicate of c000000
        _conv("c000004", ["Which chunk size does distill use by default?"], search="Chunk  Size"),
        _conv("c000005", ["Tell me the default chunk size setting."], search="chunk size"),  # same tool call
        _conv("c000006", ["Hi there!"], kind="direct"),
        _conv("c000007", ["Thanks, bye."], kind="direct"),  # no tool call: never a trajectory duplicate
        _conv("c000008", [REWORDED], search="validator should reject"),
    ]


def test_seeded_exact_near_and_trajectory_duplicates_are_found_with_what_they_copy() -> None:
    assert _jaccard(BASE, NEAR) >= 0.85 > _jaccard(BASE, REWORDED)
    found = find_duplicates(_seeded(), DedupConfig())
    got = {(d.id, d.reason, d.duplicate_of) for d in found}
    assert got == {
        ("c000002", "duplicate_question", "c000001"),
        ("c000003", "duplicate_near_question", "c000000"),
        ("c000005", "duplicate_trajectory", "c000004"),
    }
    near = next(d for d in found if d.reason == "duplicate_near_question")
    assert near.similarity == round(_jaccard(BASE, NEAR), 4)
    assert "c000000" in near.detail() and "0.8" in near.detail()


def test_threshold_is_configurable_and_each_check_can_be_turned_off() -> None:
    seeded = _seeded()
    strict = {d.id for d in find_duplicates(seeded, DedupConfig(near_threshold=0.9))}
    assert strict == {"c000002", "c000005"}
    loose = find_duplicates(seeded, DedupConfig(near_threshold=0.75))
    assert {(d.id, d.duplicate_of) for d in loose if d.reason == "duplicate_near_question"} == {
        ("c000003", "c000000"),
        ("c000008", "c000000"),
    }
    exact_only = find_duplicates(seeded, DedupConfig(near_threshold=None, trajectories=False))
    assert [d.id for d in exact_only] == ["c000002"]
    assert find_duplicates(seeded, DedupConfig(enabled=False)) == []


def test_multi_turn_questions_are_compared_as_a_whole() -> None:
    a = _conv("c000000", ["What is BM25?", "And what about chunking?"], search="bm25")
    b = _conv("c000001", ["What is BM25?", "How are documents split into chunks?"], search="bm25 ranking")
    assert question_key(a) != question_key(b)
    assert find_duplicates([a, b], DedupConfig()) == []


def test_export_counts_duplicates_as_rejected_and_the_accounting_closes(make_config, tmp_path: Path) -> None:
    config = make_config(export={"validation_fraction": 0.0, "dedup": {"near_threshold": 0.85}})
    trajectories = _seeded()
    result = export_run(config, tmp_path, trajectories, get_format(config))
    manifest = json.loads(result.manifest.read_text())
    c = manifest["conversations"]
    assert c == {"requested": 9, "accepted": 6, "rejected": 3, "failed": 0}
    assert manifest["rejects_by_reason"] == {
        "duplicate_question": 1,
        "duplicate_near_question": 1,
        "duplicate_trajectory": 1,
    }
    dups = manifest["duplicates"]
    assert dups["dropped"] == 3 and dups["near_threshold"] == 0.85
    assert {(d["id"], d["duplicate_of"]) for d in dups["items"]} == {
        ("c000002", "c000001"),
        ("c000003", "c000000"),
        ("c000005", "c000004"),
    }
    rejected = {r["id"]: r for r in map(json.loads, (tmp_path / "rejected.jsonl").read_text().splitlines())}
    assert rejected["c000005"]["stage"] == "export"
    assert rejected["c000005"]["detail"] == "same tool calls and inputs as c000004"
    trained = (tmp_path / "train.jsonl").read_text()
    assert "what is BM25 ??" not in trained and NEAR not in trained and BASE in trained


def _duplicating_teacher() -> tuple[Callable[[dict], FakeResponse | str], list[str]]:
    """Questions from a fixed pool with one exact, one near and one tool-call duplicate seeded in."""
    pool = [
        BASE,
        NEAR,
        "What is BM25?",
        "WHAT IS BM25",
        "Which chunk size does distill use by default?",
        "Tell me the default chunk size setting.",
        "How are rejected answers written to the run folder?",
        "What does the manifest count?",
    ]
    taken = itertools.count()
    lock = threading.Lock()

    def script(body: dict) -> FakeResponse | str:
        if body.get("response_format"):
            with lock:
                question = pool[next(taken)]
            return json.dumps({"questions": [question]})
        last = body["messages"][-1]["content"]
        if last.startswith("TOOL RESPONSE"):
            return render_action("Final Answer", "It is in the documents.")
        asked = body["messages"][-1]["content"]
        search = "chunk size" if "chunk size" in asked else next(q for q in pool if q in asked)
        return render_action("Vector Search Tool", search)

    return script, pool


def test_generate_drops_seeded_duplicates_and_reexport_recomputes_them(fake_openai, make_config, tmp_path) -> None:
    fake_openai.chat_script, pool = _duplicating_teacher()
    config = make_config(
        teacher={"provider": "openai", "model": "gpt-4o", "max_retries": 0, "concurrency": 2},
        generation={"conversations": len(pool), "seed": 0, "mix": {"tool": 1.0, "direct": 0.0, "multi_turn": 0.0},
                    "max_extra_conversations": 0},
        export={"validation_fraction": 0.0},  # dedup on (the default)
    )
    result = generate(config, tmp_path / "run", progress=False)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["conversations"] == {"requested": 8, "accepted": 5, "rejected": 3, "failed": 0}
    assert manifest["duplicates"]["by_reason"] == {
        "duplicate_question": 1,
        "duplicate_near_question": 1,
        "duplicate_trajectory": 1,
    }
    questions = {
        json.loads(line)["id"]: json.loads(line)["turns"][0]["question"]
        for line in (tmp_path / "run" / "trajectories.jsonl").read_text().splitlines()
    }
    pairs = {frozenset((questions[d["id"]], questions[d["duplicate_of"]])) for d in manifest["duplicates"]["items"]}
    assert pairs == {
        frozenset((BASE, NEAR)),
        frozenset(("What is BM25?", "WHAT IS BM25")),
        frozenset(("Which chunk size does distill use by default?", "Tell me the default chunk size setting.")),
    }
    # dedup verdicts are export-stage verdicts: re-exporting without dedup brings every conversation back
    off = make_config(**{**config.model_dump(mode="json"), "export": {"validation_fraction": 0.0,
                                                                     "dedup": {"enabled": False}}})
    assert reexport(off, tmp_path / "run").conversations["accepted"] == 8
    assert reexport(config, tmp_path / "run").conversations["accepted"] == 5


def test_signatures_equal_datasketch_hashing_the_shingles_itself(monkeypatch) -> None:
    """The index hashes each shingle once (a kept table) and feeds MinHash the values: the signatures equal those
    of a MinHash that hashes the UTF-8 shingles with its default sha1_hash32, also once the table is full."""
    from datasketch import MinHash

    from distill.generation import dedup

    monkeypatch.setattr(dedup, "_SHINGLE_HASHES", 8)  # a table that overflows, and is cleared, along the way
    index = dedup.DedupIndex(DedupConfig())
    assert index.signatures is not None
    texts = ["how does the retriever rank passages", "ünïcodé questions ✓ too", "how does the retriever rank",
             "how does the retriever rank passages", "a", ""]
    for text in texts:
        grams = shingles(normalize(text), 5)
        expected = MinHash(num_perm=DedupConfig().num_perm, seed=1)
        expected.update_batch([g.encode("utf-8") for g in grams])
        got = index.signatures.of(grams)
        assert (got.hashvalues == expected.hashvalues).all() and got.hashvalues.dtype == expected.hashvalues.dtype
        assert len(index.signatures.hashes) <= 8


def test_bands_find_the_candidates_datasketch_finds() -> None:
    """distill's band table gives the same LSH candidates as datasketch's MinHashLSH on the same signatures."""
    import random

    from datasketch import MinHash, MinHashLSH

    from distill.generation.bands import Bands

    rng = random.Random(7)
    words = [f"w{i}" for i in range(60)]
    base = [set(rng.sample(words, 30)) for _ in range(40)]
    sets = base + [set(sorted(s)[:29]) | {"x"} for s in base[:20]]  # near copies (Jaccard 0.94)
    signatures = []
    for s in sets:
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([w.encode() for w in sorted(s)])
        signatures.append(m)
    ours, theirs = Bands(0.85, 128), MinHashLSH(threshold=0.85, num_perm=128)
    found = 0
    for number, m in enumerate(signatures):
        expected = set(theirs.query(m))
        assert ours.query(m.hashvalues) == expected
        found += bool(expected)
        ours.insert(number, m.hashvalues)
        theirs.insert(number, m)
    assert found >= 15  # most near copies are candidates (LSH misses some, in both)
