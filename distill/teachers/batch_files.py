"""Batch state and files: what a batch run has submitted, kept in the run folder's `ledger.sqlite` before any wait.

Three tables beside the ledger's `responses`, written by `BatchStore` on its own connection (WAL, one transaction
per change, durable when the call returns):
- `batches`: one row per batch: its wave, the local state (`prepared` -> `uploaded` -> the provider's status), the
  provider's ids (input file, batch, output and error files), `request_counts`, the worst-case dollars reserved for
  it, and once ingested the rows answered / failed / expired and the dollars paid (at batch and at online prices).
- `batch_rows`: one row per request line: a short `custom_id` (`r<batch>-<n>`, plain and unique, within the 64
  characters other providers allow), the ledger key it stands for, the stage and the exact request body (zlib JSON
  bytes, the ones the online path would send); `outcome` is NULL while the batch runs, then answered / failed /
  expired / unanswered (a cancelled batch's rows that never ran).
- `batch_meta`: the wave counter and the retry floor (the ledger row id when the current batch run began: failed
  attempts after it count against `teacher.max_retries`; it is cleared when the run finishes).

`batch_lines` writes the JSONL input (`{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`, the
body spliced in as the stored bytes) and `split_rows` cuts a wave at the API's limits (50,000 requests, 200 MB).
`read_result_line` reads one line of an output or error file into (custom_id, status, body, error).
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ENDPOINT",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_REQUESTS",
    "TERMINAL",
    "BatchRecord",
    "BatchStore",
    "PendingRow",
    "batch_lines",
    "read_result_line",
    "split_rows",
]

ENDPOINT = "/v1/chat/completions"
MAX_BATCH_REQUESTS = 50_000  # OpenAI: requests per batch
MAX_BATCH_BYTES = 200_000_000  # OpenAI: 200 MB per input file
TERMINAL = ("completed", "expired", "failed", "cancelled")  # the provider's final states

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    local_id INTEGER PRIMARY KEY,
    wave INTEGER NOT NULL,
    state TEXT NOT NULL,            -- prepared | uploaded | validating | in_progress | finalizing | completed | ...
    requests INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    worst_usd REAL NOT NULL,        -- every row's input plus max_tokens of output, at batch prices
    input_file_id TEXT,
    batch_id TEXT,
    output_file_id TEXT,
    error_file_id TEXT,
    request_counts TEXT,            -- JSON {total, completed, failed}
    errors TEXT,                    -- JSON: the provider's errors of a failed batch
    ingested INTEGER NOT NULL DEFAULT 0,
    answered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,
    unanswered INTEGER NOT NULL DEFAULT 0,
    usd REAL NOT NULL DEFAULT 0,
    online_usd REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS batch_rows (
    custom_id TEXT PRIMARY KEY,
    local_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    stage TEXT NOT NULL,
    body BLOB NOT NULL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS batch_rows_by_batch ON batch_rows (local_id);
CREATE INDEX IF NOT EXISTS batch_rows_by_key ON batch_rows (key, outcome);
CREATE TABLE IF NOT EXISTS batch_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A request a wave needs: its ledger key, stage and exact body bytes."""

    key: str
    stage: str
    body: bytes
    worst_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One batch as the run folder knows it."""

    local_id: int
    wave: int
    state: str
    requests: int
    worst_usd: float
    input_file_id: str | None
    batch_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    request_counts: dict[str, int]
    created_at: float
    ingested: bool
    outcomes: dict[str, int]
    usd: float
    online_usd: float
    errors: Any

    @property
    def filename(self) -> str:
        return f"distill-batch-{self.local_id}.jsonl"


_BATCH_COLUMNS = (
    "local_id, wave, state, requests, worst_usd, input_file_id, batch_id, output_file_id, error_file_id, "
    "request_counts, created_at, ingested, answered, failed, expired, unanswered, usd, online_usd, errors"
)


def _record(row: tuple[Any, ...]) -> BatchRecord:
    outcomes = {"answered": row[12], "failed": row[13], "expired": row[14], "unanswered": row[15]}
    return BatchRecord(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
        json.loads(row[9]) if row[9] else {}, row[10], bool(row[11]), outcomes, row[16], row[17],
        json.loads(row[18]) if row[18] else None,
    )


class BatchStore:
    """The batch tables of a run folder's ledger database."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    # -- meta ---------------------------------------------------------------------------------------------------------
    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM batch_meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, name: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM batch_meta WHERE name = ?", (name,))
        else:
            self._db.execute("INSERT OR REPLACE INTO batch_meta (name, value) VALUES (?, ?)", (name, value))

    def begin(self) -> int:
        """Start (or continue) a batch run; returns the retry floor (ledger rows after it count as attempts)."""
        floor = self._meta("retry_floor")
        if floor is None:
            last = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM responses").fetchone()[0]
            floor = str(last)
            self._set_meta("retry_floor", floor)
        return int(floor)

    def finish(self) -> None:
        """The batch run is complete: the next run gives failed requests their retries again."""
        self._set_meta("retry_floor", None)

    @property
    def waves(self) -> int:
        """Waves submitted in this run folder."""
        return int(self._meta("waves") or 0)

    def next_wave(self) -> int:
        wave = self.waves + 1
        self._set_meta("waves", str(wave))
        return wave

    # -- failures: the ledger's evidence ----------------------------------------------------------------------------
    def failures(self, key: str, floor: int) -> list[tuple[int | None, str | None, str | None]]:
        """(status, reason, response) of the failed attempts at `key` since the retry floor, oldest first."""
        return self._db.execute(
            "SELECT status, reason, response FROM responses WHERE key = ? AND ok = 0 AND id > ? ORDER BY id",
            (key, floor),
        ).fetchall()

    # -- batches ------------------------------------------------------------------------------------------------------
    def prepare(self, wave: int, rows: list[PendingRow]) -> BatchRecord:
        """Record a batch and its rows (state `prepared`) in one transaction, before anything is sent."""
        size = sum(len(r.body) for r in rows)
        worst = sum(r.worst_usd for r in rows)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute(
                "INSERT INTO batches (wave, state, requests, bytes, worst_usd, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (wave, "prepared", len(rows), size, worst, time.time()),
            )
            local = int(cursor.lastrowid or 0)
            self._db.executemany(
                "INSERT INTO batch_rows (custom_id, local_id, key, stage, body) VALUES (?, ?, ?, ?, ?)",
                [(f"r{local}-{n}", local, r.key, r.stage, zlib.compress(r.body, 1)) for n, r in enumerate(rows)],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return self.get(local)

    def get(self, local_id: int) -> BatchRecord:
        row = self._db.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE local_id = ?", (local_id,)).fetchone()
        return _record(row)

    def all(self) -> list[BatchRecord]:
        return [_record(r) for r in self._db.execute(f"SELECT {_BATCH_COLUMNS} FROM batches ORDER BY local_id")]

    def open_batches(self) -> list[BatchRecord]:
        """Batches not yet ingested (prepared, uploaded or in flight at the provider)."""
        return [b for b in self.all() if not b.ingested]

    def update(self, local_id: int, **fields: Any) -> None:
        """Set columns of a batch (JSON for request_counts / errors)."""
        for name in ("request_counts", "errors"):
            if name in fields and fields[name] is not None and not isinstance(fields[name], str):
                fields[name] = json.dumps(fields[name])
        names = ", ".join(f"{k} = ?" for k in fields)
        self._db.execute(f"UPDATE batches SET {names} WHERE local_id = ?", (*fields.values(), local_id))

    def rows(self, local_id: int) -> list[tuple[str, str, str, bytes, str | None]]:
        """(custom_id, key, stage, body bytes, outcome) of a batch, in input order."""
        got = self._db.execute(
            "SELECT custom_id, key, stage, body, outcome FROM batch_rows WHERE local_id = ? ORDER BY rowid",
            (local_id,),
        ).fetchall()
        return [(c, k, s, zlib.decompress(b), o) for c, k, s, b, o in got]

    def set_outcome(self, custom_id: str, outcome: str) -> None:
        self._db.execute("UPDATE batch_rows SET outcome = ? WHERE custom_id = ?", (outcome, custom_id))

    def in_flight_keys(self) -> set[str]:
        """Ledger keys of rows in batches not yet ingested."""
        return {
            r[0]
            for r in self._db.execute(
                "SELECT key FROM batch_rows JOIN batches USING (local_id) WHERE batches.ingested = 0"
            )
        }

    def reserved_usd(self) -> float:
        """The worst case of the batches not yet ingested."""
        got = self._db.execute("SELECT COALESCE(SUM(worst_usd), 0) FROM batches WHERE ingested = 0").fetchone()[0]
        return float(got)

    def close(self) -> None:
        self._db.close()


def batch_lines(rows: Iterable[tuple[str, bytes]]) -> bytes:
    """The JSONL input of a batch from (custom_id, body bytes): the body is spliced in exactly as stored."""
    out = bytearray()
    for custom_id, body in rows:
        out += b'{"custom_id":' + json.dumps(custom_id).encode() + b',"method":"POST","url":"' + ENDPOINT.encode()
        out += b'","body":' + body + b"}\n"
    return bytes(out)


def split_rows(
    rows: list[PendingRow], max_requests: int = MAX_BATCH_REQUESTS, max_bytes: int = MAX_BATCH_BYTES
) -> Iterator[list[PendingRow]]:
    """Cut rows into batches within the request and byte limits (a line's overhead counted generously)."""
    part: list[PendingRow] = []
    size = 0
    for row in rows:
        line = len(row.body) + 120
        if part and (len(part) >= max_requests or size + line > max_bytes):
            yield part
            part, size = [], 0
        part.append(row)
        size += line
    if part:
        yield part


def read_result_line(line: str) -> tuple[str, int | None, Any, Any] | None:
    """(custom_id, status_code, response body, error object) of an output or error file line; None if unreadable."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("custom_id"), str):
        return None
    got = data.get("response")
    response: dict[str, Any] = got if isinstance(got, dict) else {}
    status = response.get("status_code")
    return data["custom_id"], status if isinstance(status, int) else None, response.get("body"), data.get("error")
