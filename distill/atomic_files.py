"""Atomic file writes for the run folder and other outputs: a temp file in the same folder, fsync, replace; on any
error (a full disk included) the temp file is removed, the old file stays as it was, and the error is a
`RunFolderError` naming the file and the fix. `Appender` appends whole lines (O_APPEND); `output_folder` creates and
probes an output folder; `sha256_of` digests a file. distill/run_folder.py re-exports the writers and names the files
they write.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from distill.errors import RunFolderError

__all__ = ["Appender", "output_folder", "sha256_of", "write_json", "write_jsonl", "write_lines", "write_text"]

_BUFFER = 1 << 20


def _cannot(path: Path, exc: OSError, what: str = "write") -> RunFolderError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space (or choose another output folder) and rerun; the files already there are unchanged"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "make the folder writable, or choose another output folder (--out)"
    else:
        hint = "check the output folder and rerun"
    return RunFolderError(f"cannot {what} {path}: {reason}", hint=hint)


def output_folder(path: str | os.PathLike[str], *, option: str = "--out") -> Path:
    """Create `path` (and its parents) as an output folder and check that a file can be written in it; a path that
    names a file, or a folder that cannot be written, is a RunFolderError that says so."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{option} {folder} is a file, not a folder", hint=f"give {option} a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a parent is a file
        raise RunFolderError(f"{option} {folder}: a parent of it is a file", hint=f"give {option} a folder path") from None
    except OSError as exc:
        raise _cannot(folder, exc, "create") from None
    probe = folder / f".distill-probe-{os.getpid()}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except OSError as exc:
        raise _cannot(folder, exc, "write in") from None
    finally:
        probe.unlink(missing_ok=True)
    return folder


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Write `chunks` to a temp file next to `path`, fsync, replace; on any error remove the temp file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        raise _cannot(path, exc) from None
    try:
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _cannot(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see the module doc)."""
    _atomic(path, [text.encode("utf-8")])


def write_lines(path: Path, lines: Iterable[bytes]) -> None:
    """Write encoded lines (each with its newline) or blocks of them to `path` atomically."""
    _atomic(path, lines)


def _encoded(pieces: Iterable[str]) -> Iterator[bytes]:
    """Text pieces joined into UTF-8 blocks of about `_BUFFER` characters (the whole text is never built)."""
    block: list[str] = []
    size = 0
    for piece in pieces:
        block.append(piece)
        size += len(piece)
        if size >= _BUFFER:
            yield "".join(block).encode("utf-8")
            block, size = [], 0
    yield "".join(block).encode("utf-8")


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON (UTF-8, no ASCII escaping) atomically, encoded in blocks as it is written
    (json's indented encoder is pure Python, a string a token: a large manifest's text is never built whole)."""
    pieces = json.JSONEncoder(indent=2, ensure_ascii=False).iterencode(data)
    _atomic(path, _encoded(itertools.chain(pieces, ["\n"])))


def write_jsonl(path: Path, rows: Iterable[Any]) -> int:
    """Write rows (dicts, or pydantic models) as JSON lines atomically; returns the number written."""
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for row in rows:
            count += 1
            yield (row.model_dump_json() if isinstance(row, BaseModel) else json.dumps(row, ensure_ascii=False)) + "\n"

    _atomic(path, _encoded(lines()))
    return count


class Appender:
    """Append whole lines to a file, one `write` each (O_APPEND): a kill leaves the file whole or short of its last
    line, never with a line written twice."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise _cannot(self.path, exc) from None

    def append(self, line: str) -> None:
        """Append `line` (a newline is added)."""
        if self._fd is None:
            raise ValueError(f"{self.path}: the appender is closed")
        try:
            os.write(self._fd, (line + "\n").encode("utf-8"))
        except OSError as exc:
            raise _cannot(self.path, exc) from None

    def close(self) -> None:
        """Release the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
