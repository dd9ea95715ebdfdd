"""Tests for distill.generation.sources: loading every source kind, skipping bad files with reasons, and chunking."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from distill.config import ChunkingConfig, Config, config_from_dict
from distill.errors import SourceError
from distill.generation.sources import Chunk, Document, SkippedSource, chunk_documents, load_documents

TOOLS = [{"name": "Vector Search Tool", "description": "Searches.", "kind": "retriever"}]


def make_config(tmp_path: Path, sources: list[dict[str, Any]] | None = None, **extra: Any) -> Config:
    (tmp_path / "docs").mkdir(exist_ok=True)
    data = {"name": "t", "tools": TOOLS, "sources": sources or [{"path": "docs"}], **extra}
    return config_from_dict(data, file="cfg.yaml", base_dir=tmp_path)


def make_pdf(lines: list[str]) -> bytes:
    """A minimal one-page PDF with a Helvetica text object (pypdf extracts its text)."""
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            "/Resources << /Font << /F1 5 0 R >> >> >>"
        ),
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def by_id(documents: list[Document]) -> dict[str, Document]:
    return {d.id: d for d in documents}


# ------------------------------------------------------------------------------------------------------- loading


def test_text_markdown_jsonl_and_pdf_load(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.txt", "Plain text file.\r\nSecond line.\n")
    write(docs / "guide.MD", "# Guide\n\nMarkdown body.")
    write(docs / "rows.jsonl", '{"text": "first row"}\n\n{"text": "third line", "x": 1}\n')
    write(docs / "paper.pdf", make_pdf(["Quokkas live on Rottnest Island.", "They are marsupials."]))
    documents, skipped = load_documents(make_config(tmp_path))
    assert skipped == []
    found = by_id(documents)
    assert list(found) == [
        "docs/a.txt",
        "docs/guide.MD",
        "docs/paper.pdf",
        "docs/rows.jsonl#L1",
        "docs/rows.jsonl#L3",
    ]
    assert found["docs/a.txt"].text == "Plain text file.\nSecond line.\n"
    assert found["docs/a.txt"].source == "docs/a.txt"
    assert "Markdown body." in found["docs/guide.MD"].text
    assert "Quokkas live on Rottnest Island." in found["docs/paper.pdf"].text
    assert "marsupials" in found["docs/paper.pdf"].text
    assert found["docs/rows.jsonl#L3"].text == "third line"
    assert found["docs/rows.jsonl#L3"].source == "docs/rows.jsonl"


def test_bad_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "good.md", "Good text.")
    write(docs / "empty.txt", "")
    write(docs / "blank.md", "  \n\n\t \n")
    write(docs / "nul.txt", b"abc\x00def")
    write(docs / "latin1.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"))
    write(docs / "image.png", b"\x89PNG\r\n")
    write(docs / "noext", "text without an extension")
    write(docs / "broken.pdf", b"%PDF-1.4 this is not really a pdf")
    documents, skipped = load_documents(make_config(tmp_path))
    assert [d.id for d in documents] == ["docs/good.md"]
    reasons = {s.path: s.reason for s in skipped}
    assert reasons["docs/empty.txt"] == "empty"
    assert reasons["docs/blank.md"] == "empty"
    assert reasons["docs/nul.txt"] == "binary"
    assert reasons["docs/latin1.txt"] == "not utf-8"
    assert reasons["docs/image.png"] == "unsupported extension .png"
    assert reasons["docs/noext"] == "no file extension"
    assert reasons["docs/broken.pdf"].startswith("pdf unreadable")
    assert all(isinstance(s, SkippedSource) for s in skipped)


def test_pdf_without_text_is_skipped(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    (tmp_path / "docs").mkdir()
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    with (tmp_path / "docs" / "blank.pdf").open("wb") as f:
        writer.write(f)
    documents, skipped = load_documents(make_config(tmp_path))
    assert documents == []
    assert skipped == [SkippedSource("docs/blank.pdf", "pdf has no text")]


def test_jsonl_bad_lines_and_custom_text_field(tmp_path: Path) -> None:
    lines = [
        json.dumps({"body": "kept", "text": "ignored"}),
        json.dumps({"text": "no body"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"body": 42}),
        json.dumps({"body": "   "}),
    ]
    write(tmp_path / "data" / "rows.jsonl", "\n".join(lines) + "\n")
    config = make_config(tmp_path, [{"path": "data/rows.jsonl", "text_field": "body"}])
    documents, skipped = load_documents(config)
    assert documents == [Document(id="data/rows.jsonl#L1", text="kept", source="data/rows.jsonl")]
    assert [s.reason for s in skipped] == [
        "jsonl line 2: no 'body' field",
        "jsonl line 3: not valid JSON",
        "jsonl line 4: not a JSON object",
        "jsonl line 5: 'body' is not a string",
        "jsonl line 6: empty",
    ]
    assert {s.path for s in skipped} == {"data/rows.jsonl"}


def test_folders_recurse_sorted_and_skip_hidden(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "b" / "z.md", "z")
    write(docs / "b" / "a.md", "a")
    write(docs / "a.txt", "top")
    write(docs / ".hidden.md", "hidden")
    write(docs / ".git" / "notes.md", "hidden folder")
    write(docs / "c" / "d" / "deep.txt", "deep")
    documents, skipped = load_documents(make_config(tmp_path))
    assert [d.id for d in documents] == ["docs/a.txt", "docs/b/a.md", "docs/b/z.md", "docs/c/d/deep.txt"]
    assert skipped == []


def test_globs_and_duplicate_sources(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "one.md", "one")
    write(docs / "two.md", "two")
    write(docs / "three.txt", "three")
    write(docs / "sub" / "four.md", "four")
    write(docs / ".secret.md", "hidden")
    sources = [{"path": "docs/*.md"}, {"path": "docs/**/*.md"}, {"path": "docs/one.md"}]
    documents, skipped = load_documents(make_config(tmp_path, sources))
    assert [d.id for d in documents] == ["docs/one.md", "docs/two.md", "docs/sub/four.md"]
    assert skipped == []


def test_explicit_file_and_absolute_path(tmp_path: Path) -> None:
    write(tmp_path / "docs" / "x.md", "x")
    absolute = tmp_path / "docs" / "x.md"
    documents, _ = load_documents(make_config(tmp_path, [{"path": str(absolute)}]))
    assert [d.id for d in documents] == ["docs/x.md"]


def test_unsupported_explicit_file_is_recorded(tmp_path: Path) -> None:
    write(tmp_path / "docs" / "sheet.csv", "a,b\n1,2\n")
    documents, skipped = load_documents(make_config(tmp_path, [{"path": "docs/sheet.csv"}]))
    assert documents == []
    assert skipped == [SkippedSource("docs/sheet.csv", "unsupported extension .csv")]


def test_ids_are_stable_across_runs(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    for i in range(5):
        write(docs / f"f{i}.md", f"Paragraph {i}.\n\n" + "Some words here. " * 200)
    config = make_config(tmp_path)
    first = chunk_documents(load_documents(config)[0], config.chunking)
    second = chunk_documents(load_documents(config)[0], config.chunking)
    assert first == second
    assert [c.id for c in first] == [f"{c.doc_id}#c{c.n}" for c in first]


# ------------------------------------------------------------------------------------------------- hugging face


def test_hf_dataset_loads_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[str, str]] = []

    def fake_load(name: str, split: str) -> datasets.Dataset:
        calls.append((name, split))
        return datasets.Dataset.from_dict({"content": ["row zero", "", "row two"], "label": [0, 1, 2]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    config = make_config(tmp_path, [{"hf_dataset": "owner/name", "split": "test", "text_field": "content"}])
    documents, skipped = load_documents(config)
    assert calls == [("owner/name", "test")]
    assert documents == [
        Document(id="hf:owner/name:test:0", text="row zero", source="owner/name"),
        Document(id="hf:owner/name:test:2", text="row two", source="owner/name"),
    ]
    assert skipped == [SkippedSource("hf:owner/name:test:1", "empty")]


def test_hf_missing_field_names_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda name, split: datasets.Dataset.from_dict({"body": ["x"], "title": ["t"]}),
    )
    config = make_config(tmp_path, [{"hf_dataset": "owner/name"}])
    with pytest.raises(SourceError) as info:
        load_documents(config)
    message = str(info.value)
    assert "'text'" in message and "body" in message and "title" in message and "owner/name" in message


def test_hf_failure_is_one_line_source_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def fail(name: str, split: str) -> None:
        raise ConnectionError("Couldn't reach the Hub\nsecond line of detail")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    config = make_config(tmp_path, [{"hf_dataset": "owner/missing"}])
    with pytest.raises(SourceError) as info:
        load_documents(config)
    message = str(info.value)
    assert "\n" not in message
    assert "owner/missing" in message and "Couldn't reach the Hub" in message
    assert info.value.hint is not None and "HF_TOKEN" in info.value.hint


# ------------------------------------------------------------------------------------------------------ chunking


def _doc(text: str, doc_id: str = "d.md") -> Document:
    return Document(id=doc_id, text=text, source=doc_id)


def test_short_document_is_one_normalised_chunk() -> None:
    chunks = chunk_documents(
        [_doc("Hello   world.\tTabs  too.\n\n\n\nNext   paragraph.  ")], ChunkingConfig()
    )
    assert chunks == [
        Chunk(id="d.md#c0", doc_id="d.md", text="Hello world. Tabs too.\n\nNext paragraph.", n=0)
    ]


def test_whitespace_document_has_no_chunks() -> None:
    assert chunk_documents([_doc(" \n\n \t ")], ChunkingConfig()) == []


def test_paragraphs_are_packed_within_max_chars() -> None:
    paragraphs = [f"Paragraph number {i} says something short." for i in range(40)]
    config = ChunkingConfig(max_chars=200, overlap=0)
    chunks = chunk_documents([_doc("\n\n".join(paragraphs))], config)
    assert len(chunks) > 1
    assert all(len(c.text) <= 200 for c in chunks)
    # no overlap: the chunks hold every paragraph exactly once, whole and in order
    assert [p for c in chunks for p in c.text.split("\n\n")] == paragraphs
    assert [c.n for c in chunks] == list(range(len(chunks)))


def test_long_paragraph_splits_on_sentences() -> None:
    sentences = [f"Sentence {i} talks about topic {i}." for i in range(60)]
    config = ChunkingConfig(max_chars=150, overlap=0)
    chunks = chunk_documents([_doc(" ".join(sentences))], config)
    assert all(len(c.text) <= 150 for c in chunks)
    for chunk in chunks:
        assert chunk.text.startswith("Sentence ") and chunk.text.endswith(".")
    assert " ".join(c.text for c in chunks) == " ".join(sentences)


def test_overlong_sentence_and_word_are_hard_cut() -> None:
    text = ("word " * 100).strip() + " " + "x" * 450
    config = ChunkingConfig(max_chars=100, overlap=0)
    chunks = chunk_documents([_doc(text)], config)
    assert all(0 < len(c.text) <= 100 for c in chunks)
    assert "".join(c.text.replace(" ", "") for c in chunks) == text.replace(" ", "")
    assert not any(c.text.startswith("ord") for c in chunks)  # words are cut at spaces while there are spaces


def test_overlap_prefixes_next_chunk_at_word_boundary() -> None:
    sentences = [f"Fact {i} concerns item{i} and nothing else." for i in range(50)]
    config = ChunkingConfig(max_chars=300, overlap=60)
    chunks = chunk_documents([_doc(" ".join(sentences)), _doc("Other document.", "e.md")], config)
    first_doc = [c for c in chunks if c.doc_id == "d.md"]
    assert len(first_doc) > 2
    assert all(len(c.text) <= 300 for c in chunks)
    for previous, current in itertools.pairwise(first_doc):
        # the carried text: the longest tail of the previous chunk (<= 60 chars) that starts this one
        carried = max(
            (previous.text[-n:] for n in range(1, 61) if current.text.startswith(previous.text[-n:])),
            key=len,
            default="",
        )
        assert len(carried) >= 30, "expected an overlap prefix"
        # the split sentence carries on after a space, not after a blank line
        assert current.text[len(carried)] == " "
        # cut at a word boundary: the carried text starts where a word starts in the previous chunk
        start = len(previous.text) - len(carried)
        assert start == 0 or previous.text[start - 1] == " "
    # the next document starts fresh
    assert [c.text for c in chunks if c.doc_id == "e.md"] == ["Other document."]


def test_overlap_larger_than_half_is_capped() -> None:
    config = ChunkingConfig(max_chars=100, overlap=500)
    text = " ".join(f"w{i}" for i in range(300))
    chunks = chunk_documents([_doc(text)], config)
    assert all(len(c.text) <= 100 for c in chunks)
    joined_words = {w for c in chunks for w in c.text.split()}
    assert joined_words == set(text.split())


def test_glob_under_a_folder_with_glob_characters(tmp_path: Path) -> None:
    base = tmp_path / "proj [draft]"
    write(base / "docs" / "a.md", "a")
    write(base / "docs" / "b.txt", "b")
    documents, skipped = load_documents(make_config(base, [{"path": "docs/*.md"}]))
    assert [d.id for d in documents] == ["docs/a.md"]
    assert skipped == []


def test_file_removed_after_config_check_is_recorded(tmp_path: Path) -> None:
    path = write(tmp_path / "docs" / "gone.md", "soon gone")
    config = make_config(tmp_path, [{"path": "docs/gone.md"}])
    path.unlink()
    assert load_documents(config) == ([], [SkippedSource("docs/gone.md", "not found")])
