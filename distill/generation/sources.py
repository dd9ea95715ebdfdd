"""Sources: load the configured documents (files, folders, globs, Hugging Face datasets) and cut them into chunks.

Owns `Document`, `Chunk`, `SkippedSource`, `load_documents` and `chunk_documents`. A file that cannot be used
(empty, binary, not UTF-8, an unsupported extension, an unreadable PDF, a bad JSONL line) is skipped and recorded
as a `SkippedSource` with a short reason, never a crash; a Hugging Face dataset that cannot be loaded at all
raises `SourceError`. Everything is deterministic: folders are walked sorted, ids derive from paths and positions.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from distill.config import ChunkingConfig, Config, SourceConfig, resolve_source_path
from distill.errors import SourceError

__all__ = ["Chunk", "Document", "SkippedSource", "chunk_documents", "load_documents"]

SUPPORTED_EXTENSIONS = frozenset({".txt", ".md", ".jsonl", ".pdf"})
_GLOB_CHARS = frozenset("*?[")
_FIRST_SPACE = re.compile(r"\s+")
# A sentence ends at the space after . ! ? (or after . ! ? and a closing quote or bracket); a line break ends one.
# The match's last character is that space or line break.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?\s|\n")


@dataclass(frozen=True, slots=True)
class Document:
    """One loaded document; `id` is stable across runs (path, path#L<line> or hf:<name>:<split>:<row>)."""

    id: str
    text: str
    source: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable piece of a document; `id` is f"{doc_id}#c{n}"."""

    id: str
    doc_id: str
    text: str
    n: int


@dataclass(frozen=True, slots=True)
class SkippedSource:
    """A file, line or row that was not loaded, and a short machine-friendly reason."""

    path: str
    reason: str


def load_documents(config: Config) -> tuple[list[Document], list[SkippedSource]]:
    """Every document of every configured source, in config order, and what was skipped (with reasons)."""
    documents: list[Document] = []
    skipped: list[SkippedSource] = []
    seen: set[str] = set()  # a file named by two sources loads once
    base = os.path.abspath(config.base_dir)
    for source in config.sources:
        if source.hf_dataset is not None:
            _load_hf(source, documents, skipped)
            continue
        for file in _expand(config, source.path or ""):
            rel = Path(os.path.relpath(os.path.abspath(file), base)).as_posix()
            if rel not in seen:
                seen.add(rel)
                problem = _load_file(Path(file), rel, source.text_field, documents, skipped)
                if problem:
                    skipped.append(SkippedSource(rel, problem))
    return documents, skipped


def _expand(config: Config, raw: str) -> Iterator[str]:
    """Files named by a source path: the file itself (even hidden), a folder's files (sorted) or a glob's matches.

    Hidden files and folders met while walking a folder or matching a glob are left out silently.
    """
    if not any(ch in raw for ch in _GLOB_CHARS):
        resolved = resolve_source_path(config, raw)
        yield from _walk(str(resolved)) if resolved.is_dir() else [str(resolved)]
        return
    parts = Path(os.path.expanduser(raw)).parts
    first = next(i for i, part in enumerate(parts) if any(ch in part for ch in _GLOB_CHARS))
    # only the pattern part is matched, so glob characters in the config folder's own path are harmless
    prefix = resolve_source_path(config, str(Path(*parts[:first]))) if first else config.base_dir
    matches = sorted(str(p) for p in prefix.glob(str(Path(*parts[first:]))))
    for match in matches:
        if not _is_hidden(os.path.relpath(match, prefix)):
            yield from _walk(match) if os.path.isdir(match) else [match]
    if not matches:
        yield str(resolve_source_path(config, raw))  # recorded as "not found"


def _walk(folder: str) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.join(root, name)


def _is_hidden(rel: str) -> bool:
    return any(part.startswith(".") and part not in (".", "..") for part in Path(rel).parts)


def _load_file(path: Path, rel: str, field: str, out: list[Document], skipped: list[SkippedSource]) -> str:
    """Load one file into `out`; returns why it was skipped ("" when it was not)."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        return f"unsupported extension {suffix}" if suffix else "no file extension"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "not found"
    except OSError as exc:
        return f"unreadable: {type(exc).__name__}"
    ok, text = _read_pdf(data) if suffix == ".pdf" else _decode(data)
    if not ok:
        return text
    if suffix == ".jsonl":
        _load_jsonl(text, rel, field, out, skipped)
    else:
        out.append(Document(id=rel, text=text, source=rel))
    return ""


def _decode(data: bytes) -> tuple[bool, str]:
    if b"\x00" in data:
        return False, "binary"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False, "not utf-8"
    if not text.strip():
        return False, "empty"
    return True, text.replace("\r\n", "\n").replace("\r", "\n")


def _read_pdf(data: bytes) -> tuple[bool, str]:
    from pypdf import PdfReader

    if not data.strip():
        return False, "empty"
    pypdf_logger = logging.getLogger("pypdf")
    level = pypdf_logger.level
    pypdf_logger.setLevel(logging.ERROR)  # pypdf logs recoverable damage as warnings; keep the CLI quiet
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                return False, "pdf is encrypted"
            pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except Exception as exc:  # noqa: BLE001 - any pypdf failure means "cannot read this pdf"
        return False, f"pdf unreadable: {type(exc).__name__}"
    finally:
        pypdf_logger.setLevel(level)
    text = "\n\n".join(page for page in pages if page)
    return (True, text) if text.strip() else (False, "pdf has no text")


def _load_jsonl(text: str, rel: str, field: str, out: list[Document], skipped: list[SkippedSource]) -> None:
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record, problem = None, "not valid JSON"
            else:
                problem = _jsonl_problem(record, field)
            if problem:
                skipped.append(SkippedSource(rel, f"jsonl line {number}: {problem}"))
            else:
                out.append(Document(id=f"{rel}#L{number}", text=record[field], source=rel))


def _jsonl_problem(record: object, field: str) -> str:
    if not isinstance(record, dict):
        return "not a JSON object"
    if field not in record:
        return f"no {field!r} field"
    if not isinstance(record[field], str):
        return f"{field!r} is not a string"
    return "" if record[field].strip() else "empty"


def _load_hf(source: SourceConfig, out: list[Document], skipped: list[SkippedSource]) -> None:
    name, split, field = source.hf_dataset or "", source.split, source.text_field
    from datasets import load_dataset  # a dependency, but slow to import: only when a config names a dataset

    try:
        dataset = load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 - network, auth, missing dataset or split: all the user's to fix
        detail = (str(exc).strip().splitlines() or [""])[0][:300]
        raise SourceError(
            f"cannot load Hugging Face dataset {name!r} (split {split!r}): {type(exc).__name__}: {detail}",
            hint="check the dataset name and split, set HF_TOKEN for a private or gated dataset, "
            "and check that this machine is online (or that the dataset is in the local cache)",
        ) from None
    columns = list(getattr(dataset, "column_names", None) or [])
    if field not in columns:
        raise SourceError(
            f"Hugging Face dataset {name!r} (split {split!r}) has no column {field!r}; "
            f"its columns are: {', '.join(columns) or '(none)'}",
            hint="set text_field to one of them",
        )
    for row, value in enumerate(dataset[field]):
        doc_id = f"hf:{name}:{split}:{row}"
        if not isinstance(value, str):
            skipped.append(SkippedSource(doc_id, f"{field!r} is not a string"))
        elif not value.strip():
            skipped.append(SkippedSource(doc_id, "empty"))
        else:
            out.append(Document(id=doc_id, text=value, source=name))


def chunk_documents(documents: Sequence[Document], chunking: ChunkingConfig) -> list[Chunk]:
    """Cut every document into chunks of at most `max_chars` characters.

    Paragraphs (blank-line separated) are packed whole; a longer one is cut at sentence ends, then at spaces, then
    anywhere. Each chunk after a document's first starts with up to `overlap` characters (at most max_chars // 2)
    of the previous chunk's tail, cut at a word boundary. Whitespace runs inside a line collapse to one space.
    """
    chunks: list[Chunk] = []
    for doc in documents:
        for n, text in enumerate(_chunk_text(doc.text, chunking.max_chars, chunking.overlap)):
            chunks.append(Chunk(id=f"{doc.id}#c{n}", doc_id=doc.id, text=text, n=n))
    return chunks


def _paragraphs(text: str) -> list[str]:
    """Paragraphs (separated by blank lines), with runs of whitespace inside each line collapsed."""
    paragraphs: list[str] = []
    lines: list[str] = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if line:
            lines.append(line)
        elif lines:
            paragraphs.append("\n".join(lines))
            lines = []
    if lines:
        paragraphs.append("\n".join(lines))
    return paragraphs


def _chunk_text(text: str, max_chars: int, overlap: int) -> list[str]:
    overlap = min(overlap, max_chars // 2)  # the carried tail must leave room for new text
    chunks: list[str] = []
    current: list[str] = []  # the chunk being filled: pieces with their separators
    size = 0  # len("".join(current))
    fresh = False  # whether `current` holds more than the carried-over tail
    # (piece, separator before it): "\n\n" between paragraphs; a split paragraph's rest continues with " ", "\n"
    # or "" (after a hard cut), so the carried tail reads on into it
    queue = deque((paragraph, "\n\n") for paragraph in _paragraphs(text))
    while queue:
        piece, joiner = queue.popleft()
        sep = joiner if current else ""
        if size + len(sep) + len(piece) <= max_chars:
            current += (sep, piece)
            size += len(sep) + len(piece)
            fresh = True
            continue
        if fresh:  # close the chunk; the piece goes into the next one
            done = "".join(current)
            chunks.append(done)
            tail = _tail(done, overlap)
            current, size, fresh = [tail] if tail else [], len(tail), False
            queue.appendleft((piece, joiner))
            continue
        head, rest, rest_joiner = _split(piece, max_chars - size - len(sep))  # too long even for a new chunk
        current += (sep, head)
        size += len(sep) + len(head)
        fresh = True
        if rest:
            queue.appendleft((rest, rest_joiner))
    if fresh:
        chunks.append("".join(current))
    return chunks


def _split(piece: str, room: int) -> tuple[str, str, str]:
    """Cut `piece` to at most `room` characters (at a sentence end, else a space, else anywhere): head, rest and
    the separator that joins them back."""
    window = piece[: room + 1]
    cut = 0
    joiner = " "
    for match in _SENTENCE_END.finditer(window):
        cut = match.end() - 1
    if cut > 0:
        joiner = "\n" if piece[cut] == "\n" else " "
    else:
        cut = window.rfind(" ")
        joiner = " "
    if cut <= 0:
        return piece[:room], piece[room:], ""
    return piece[:cut].rstrip(), piece[cut:].lstrip(), joiner


def _tail(text: str, overlap: int) -> str:
    """The last `overlap` characters of `text`, starting at a word boundary."""
    if overlap <= 0:
        return ""
    if len(text) <= overlap:
        return text.strip()
    tail = text[-overlap:]
    if not text[-overlap - 1].isspace():
        cut = _FIRST_SPACE.search(tail)
        tail = tail[cut.end() :] if cut else ""
    return tail.strip()
