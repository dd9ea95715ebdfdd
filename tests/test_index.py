"""Tests for distill.generation.index: BM25 ranking, empty queries, save/load round trips and batched search."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from distill.errors import RunFolderError
from distill.generation.index import CHUNKS_FILE, ChunkIndex
from distill.generation.sources import Chunk

TEXTS = [
    "The quokka is a small marsupial found on Rottnest Island near Perth.",
    "Kangaroos are large marsupials that hop; they live across mainland Australia.",
    "Python is a programming language; its package index is called PyPI.",
    "The Eiffel Tower in Paris was completed in 1889 for the World's Fair.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Rust's borrow checker enforces memory safety without a garbage collector.",
    "Café culture in Vienna dates back to the seventeenth century.",
]


def make_chunks(texts: list[str] = TEXTS) -> list[Chunk]:
    return [Chunk(id=f"doc{i}.md#c0", doc_id=f"doc{i}.md", text=t, n=0) for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def index() -> ChunkIndex:
    return ChunkIndex.build(make_chunks())


QUERIES = [
    "Where do quokkas live?",
    "quokka",
    "borrow checker memory",
    "when was the eiffel tower built",
    "marsupials Australia",
    "café vienna",
    "the of and",  # only stopwords
    "zzzunknown qqqnothing",  # unknown tokens
    "",
    "sugar sugar sugar oxygen",
]


def test_distinctive_query_ranks_its_chunk_first(index: ChunkIndex) -> None:
    assert index.search("Where do quokkas live? Rottnest", 3)[0].id == "doc0.md#c0"
    assert index.search("borrow checker garbage collector", 3)[0].id == "doc5.md#c0"
    assert index.search("Eiffel Tower Paris", 1)[0].id == "doc3.md#c0"
    assert index.search("Café in Vienna", 2)[0].id == "doc6.md#c0"


def test_results_are_best_first_and_only_matching(index: ChunkIndex) -> None:
    results = index.search("marsupials", 5)
    assert [c.id for c in results] == ["doc1.md#c0"]  # tokens are not stemmed: "marsupial" != "marsupials"
    results = index.search("marsupials marsupial rottnest", 7)
    assert [c.id for c in results] == ["doc0.md#c0", "doc1.md#c0"]


def test_k_larger_than_corpus_returns_fewer(index: ChunkIndex) -> None:
    results = index.search("the island tower language checker light culture kangaroos", 100)
    assert 0 < len(results) <= len(TEXTS)
    assert len({c.id for c in results}) == len(results)


@pytest.mark.parametrize("query", ["the of and", "zzzunknown qqqnothing", "", "   ", "?!"])
def test_query_without_known_tokens_returns_nothing(index: ChunkIndex, query: str) -> None:
    assert index.search(query, 3) == []


def test_nonpositive_k_returns_nothing(index: ChunkIndex) -> None:
    assert index.search("quokka", 0) == []
    assert index.search_many(["quokka", "paris"], 0) == [[], []]


def test_search_many_equals_search(index: ChunkIndex) -> None:
    for k in (1, 3, 10):
        assert index.search_many(QUERIES, k) == [index.search(q, k) for q in QUERIES]
    assert index.search_many([], 3) == []


def test_save_load_round_trip(index: ChunkIndex, tmp_path: Path) -> None:
    folder = tmp_path / "run" / "index"
    index.save(folder)
    assert (folder / CHUNKS_FILE).is_file()
    loaded = ChunkIndex.load(folder)
    assert loaded.chunks == index.chunks
    for k in (1, 3, 7):
        assert loaded.search_many(QUERIES, k) == index.search_many(QUERIES, k)
    rows = [json.loads(line) for line in (folder / CHUNKS_FILE).read_text(encoding="utf-8").splitlines()]
    assert rows[6]["text"] == TEXTS[6]  # stored as UTF-8, not escaped


def test_load_missing_folder_raises_with_hint(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError) as info:
        ChunkIndex.load(tmp_path / "nowhere")
    assert info.value.hint


def test_load_missing_bm25_files_raises(index: ChunkIndex, tmp_path: Path) -> None:
    index.save(tmp_path)
    for file in tmp_path.glob("*.index.*"):
        file.unlink()
    with pytest.raises(RunFolderError):
        ChunkIndex.load(tmp_path)


def test_load_mismatched_chunks_raises(index: ChunkIndex, tmp_path: Path) -> None:
    index.save(tmp_path)
    lines = (tmp_path / CHUNKS_FILE).read_text(encoding="utf-8").splitlines()
    (tmp_path / CHUNKS_FILE).write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(RunFolderError):
        ChunkIndex.load(tmp_path)


def test_load_corrupt_chunks_raises(index: ChunkIndex, tmp_path: Path) -> None:
    index.save(tmp_path)
    (tmp_path / CHUNKS_FILE).write_text("{not json\n", encoding="utf-8")
    with pytest.raises(RunFolderError) as info:
        ChunkIndex.load(tmp_path)
    assert "line 1" in str(info.value)


def test_empty_index(tmp_path: Path) -> None:
    empty = ChunkIndex.build([])
    assert empty.search("anything", 3) == []
    assert empty.search_many(["a query", "another"], 3) == [[], []]
    empty.save(tmp_path)
    assert ChunkIndex.load(tmp_path).chunks == []


def test_single_chunk_and_tokenless_chunks() -> None:
    chunks = make_chunks(["Only one real chunk about zebras.", "the and of", "!!"])
    index = ChunkIndex.build(chunks)
    assert [c.id for c in index.search("zebras", 5)] == ["doc0.md#c0"]
    assert index.search("and", 5) == []
    single = ChunkIndex.build(make_chunks(["Lonely chunk about giraffes."]))
    assert [c.id for c in single.search("giraffes giraffes", 3)] == ["doc0.md#c0"]


def test_ties_are_ordered_by_chunk_position() -> None:
    chunks = make_chunks(["alpha beta", "gamma delta", "alpha beta", "alpha beta"])
    index = ChunkIndex.build(chunks)
    assert [c.id for c in index.search("alpha", 3)] == ["doc0.md#c0", "doc2.md#c0", "doc3.md#c0"]


def test_nothing_printed_or_logged(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    index = ChunkIndex.build(make_chunks())
    index.search("the of and", 3)
    index.search_many(["quokka", "zzz"], 3)
    index.save(tmp_path)
    ChunkIndex.load(tmp_path).search("quokka", 2)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert [r for r in caplog.records if r.name.startswith("bm25s")] == []


def test_query_tokens_match_bm25s_tokenize_on_the_corpus() -> None:
    import bm25s

    from distill.generation.index import query_tokens

    corpus = Path(__file__).resolve().parent.parent / "corpus"
    texts = [line for p in sorted(corpus.glob("*.md")) for line in p.read_text().splitlines() if line.strip()]
    texts += ["It's the API's 2nd-best BM25 ranking, n'est-ce pas? ÜBER café ß", "a an the", "x"]
    expected = bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)
    # bm25s puts "" for a text with no token at all; query_tokens returns no token.
    assert [query_tokens(t) for t in texts] == [[t for t in row if t] for row in expected]
