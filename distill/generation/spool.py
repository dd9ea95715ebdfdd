"""The spool: a run's finished conversations on disk as they finish, so no stage holds them all in memory.

`Spool` appends each finished conversation (one JSON line, the record `trajectories.jsonl` will hold) to a file in
the run folder (`run_folder.PARTS`; a temp file for a run without one) and keeps only where its latest version
starts (conversation id -> byte offset). A later version of a conversation (the judge's verdict added) is appended
again and the offset moves. `lines(ids)` reads them back in any order asked, e.g. plan order for
`trajectories.jsonl`, byte for byte as written.

`InOrder` hands the conversations of a round to a consumer in plan order while they finish in any order: it holds
the ones that finished ahead of the first unfinished one (at most `cap` of them in memory; past that only their ids,
read back from the spool when their turn comes).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from distill.trajectory import Trajectory

__all__ = ["InOrder", "Spool"]


class Spool:
    """Finished conversations on disk, by id (see the module doc)."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            fd, name = tempfile.mkstemp(prefix="distill-spool-", suffix=".jsonl")
            os.close(fd)
            path = Path(name)
        self.path = Path(path)
        self._fh = self.path.open("w+b")
        self._end = 0
        self.at: dict[str, int] = {}

    def __contains__(self, trajectory_id: object) -> bool:
        return trajectory_id in self.at

    def __len__(self) -> int:
        return len(self.at)

    def put(self, trajectory: Trajectory) -> None:
        """Append `trajectory` (its latest version wins)."""
        data = (trajectory.model_dump_json() + "\n").encode("utf-8")
        self._fh.seek(self._end)
        self._fh.write(data)
        self.at[trajectory.id] = self._end
        self._end += len(data)

    def line(self, trajectory_id: str) -> bytes:
        """The stored line of a conversation (with its newline)."""
        self._fh.seek(self.at[trajectory_id])
        return self._fh.readline()

    def get(self, trajectory_id: str) -> Trajectory:
        """The stored conversation."""
        return Trajectory.model_validate_json(self.line(trajectory_id))

    def lines(self, ids: Iterable[str]) -> Iterator[bytes]:
        """The stored lines of `ids` that are here, in that order (blocks of about 1 MB)."""
        block: list[bytes] = []
        size = 0
        for trajectory_id in ids:
            if trajectory_id in self.at:
                block.append(self.line(trajectory_id))
                size += len(block[-1])
                if size >= 1 << 20:
                    yield b"".join(block)
                    block, size = [], 0
        yield b"".join(block)

    def trajectories(self, ids: Iterable[str]) -> Iterator[Trajectory]:
        """The stored conversations of `ids` that are here, in that order."""
        for trajectory_id in ids:
            if trajectory_id in self.at:
                yield self.get(trajectory_id)

    def close(self) -> None:
        """Close and remove the file."""
        if not self._fh.closed:
            self._fh.close()
        self.path.unlink(missing_ok=True)


class InOrder:
    """Feeds `sink` the conversations of `ids` in that order as they finish in any order (see the module doc)."""

    def __init__(self, ids: Sequence[str], spool: Spool, sink: Callable[[Trajectory], None], cap: int = 256) -> None:
        self.ids, self.spool, self.sink, self.cap = ids, spool, sink, cap
        self.next = 0
        self._ahead: dict[int, Trajectory | None] = {}

    def done(self, position: int, trajectory: Trajectory | None) -> None:
        """The conversation at `position` finished (None: read it from the spool when its turn comes)."""
        self._ahead[position] = trajectory if len(self._ahead) < self.cap else None
        while self.next in self._ahead:
            got = self._ahead.pop(self.next)
            self.sink(got if got is not None else self.spool.get(self.ids[self.next]))
            self.next += 1
