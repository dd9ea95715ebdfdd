"""The ledger: every teacher response of a run folder, kept in SQLite (`ledger.sqlite`, WAL), keyed by its request.

The key is `TeacherRequest.key(model)`: a hash of everything that determines a request (model, messages,
parameters, response_format, tools). Every final outcome of a request is stored before anything parses it: answers
(finished, truncated by `length`, filtered) as the raw response body exactly as received, and requests that failed
after the retries with their error body. Each row also keeps the usage (input, cached input, output tokens), the
finish reason, the dollars, the latency and the number of attempts, and the request body (zlib-compressed JSON).

Every request looks here first (`lookup`): an answered request is never sent again, after a crash, a Ctrl-C, a
kill -9, or a config change that leaves it identical. Failed rows are kept as evidence but never answer a lookup:
a resumed run tries those requests again. Each insert is its own transaction, durable once `record` returns.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from distill.run_folder import LEDGER

__all__ = ["LEDGER_FILE", "Ledger", "LedgerEntry"]

LEDGER_FILE = LEDGER  # in the run folder

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,              -- TeacherRequest.key(model)
    ok INTEGER NOT NULL,            -- 1: the endpoint answered (2xx); 0: failed after the retries
    stage TEXT NOT NULL,            -- questions | rollout | ...
    model TEXT NOT NULL,
    status INTEGER,                 -- HTTP status; NULL when there was no HTTP answer (timeout, dropped connection)
    reason TEXT,                    -- failure reason (http_500, timeout, ...); NULL for answers
    finish_reason TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL,                  -- NULL when the model's price is unknown
    latency_s REAL,                 -- the last attempt's
    attempts INTEGER NOT NULL,
    created_at REAL NOT NULL,       -- unix time
    request BLOB,                   -- zlib-compressed JSON body sent
    response TEXT                   -- the raw response body as received
);
CREATE INDEX IF NOT EXISTS responses_by_key ON responses (key, ok);
"""

_COLUMNS = (
    "id, key, ok, stage, model, status, reason, finish_reason, input_tokens, cached_input_tokens, output_tokens, "
    "cost_usd, latency_s, attempts, created_at, request, response"
)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One stored outcome of a request."""

    id: int
    key: str
    ok: bool
    stage: str
    model: str
    status: int | None
    reason: str | None
    finish_reason: str | None
    usage: dict[str, int]
    cost_usd: float | None
    latency_s: float | None
    attempts: int
    created_at: float
    request_blob: bytes | None
    response: str | None

    def body(self) -> Any:
        """The response body parsed as JSON (None when there is none or it is not JSON)."""
        if not self.response:
            return None
        try:
            return json.loads(self.response)
        except ValueError:
            return None

    def request(self) -> Any:
        """The request body that was sent, as JSON."""
        return json.loads(zlib.decompress(self.request_blob)) if self.request_blob else None

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> LedgerEntry:
        usage = {"input": row[8], "cached_input": row[9], "output": row[10]}
        return cls(
            row[0], row[1], bool(row[2]), row[3], row[4], row[5], row[6], row[7], usage, *row[11:]
        )


class Ledger:
    """A run folder's store of teacher responses."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection

    @classmethod
    def open(cls, path: str | Path) -> Ledger:
        """Open (or create) the ledger at `path`: WAL journal, one transaction per insert."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable against process crashes, fast commits
        db.executescript(_SCHEMA)
        return cls(path, db)

    def lookup(self, key: str) -> LedgerEntry | None:
        """The latest answer stored for `key` (failed rows never answer)."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM responses WHERE key = ? AND ok = 1 ORDER BY id DESC LIMIT 1", (key,)
        ).fetchone()
        return LedgerEntry._from_row(row) if row else None

    def record(
        self,
        key: str,
        *,
        ok: bool,
        stage: str,
        model: str,
        request: bytes | None,
        response: str | None,
        status: int | None = None,
        reason: str | None = None,
        finish_reason: str | None = None,
        usage: dict[str, int] | None = None,
        cost_usd: float | None = None,
        latency_s: float | None = None,
        attempts: int = 1,
    ) -> int:
        """Store one outcome (committed when this returns); `request` is the JSON body sent, as bytes."""
        usage = usage or {}
        cursor = self._db.execute(
            "INSERT INTO responses (key, ok, stage, model, status, reason, finish_reason, input_tokens, "
            "cached_input_tokens, output_tokens, cost_usd, latency_s, attempts, created_at, request, response) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                int(ok),
                stage,
                model,
                status,
                reason,
                finish_reason,
                usage.get("input", 0),
                usage.get("cached_input", 0),
                usage.get("output", 0),
                cost_usd,
                latency_s,
                attempts,
                time.time(),
                zlib.compress(request, 1) if request is not None else None,
                response,
            ),
        )
        return int(cursor.lastrowid or 0)

    def entries(self, *, ok: bool | None = None) -> Iterator[LedgerEntry]:
        """Every stored outcome in insertion order (only answers or only failures with `ok`)."""
        where = "" if ok is None else f" WHERE ok = {int(ok)}"
        for row in self._db.execute(f"SELECT {_COLUMNS} FROM responses{where} ORDER BY id"):
            yield LedgerEntry._from_row(row)

    def count(self, *, ok: bool | None = None) -> int:
        """Number of stored outcomes."""
        where = "" if ok is None else f" WHERE ok = {int(ok)}"
        return int(self._db.execute(f"SELECT COUNT(*) FROM responses{where}").fetchone()[0])

    def total_usd(self) -> float:
        """Dollars of every stored answer."""
        return float(self._db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM responses WHERE ok = 1").fetchone()[0])

    def totals(self) -> dict[str, dict[str, Any]]:
        """Per stage: answers, failures, tokens, dollars and mean latency of answers (all invocations)."""
        rows = self._db.execute(
            "SELECT stage, SUM(ok), SUM(1 - ok), SUM(ok * input_tokens), SUM(ok * cached_input_tokens), "
            "SUM(ok * output_tokens), SUM(CASE WHEN ok = 1 THEN cost_usd END), "
            "AVG(CASE WHEN ok = 1 THEN latency_s END) FROM responses GROUP BY stage ORDER BY stage"
        ).fetchall()
        return {
            r[0]: {
                "responses": int(r[1] or 0),
                "failed": int(r[2] or 0),
                "input_tokens": int(r[3] or 0),
                "cached_input_tokens": int(r[4] or 0),
                "output_tokens": int(r[5] or 0),
                "usd": round(r[6], 6) if r[6] is not None else None,
                "mean_latency_s": round(r[7], 3) if r[7] is not None else None,
            }
            for r in rows
        }

    def absorb(self, other: str | Path) -> int:
        """Unite another run folder's ledger into this one by request key (`distill merge`); returns the rows added.

        An answer whose key this ledger already answers is left out (one answer per request); a failed row is added
        unless the same failure (key, time, reason) is here already. Rows keep their times, usage and bodies."""
        cols = _COLUMNS.removeprefix("id, ")
        before = self.count()
        self._db.execute("ATTACH DATABASE ? AS other", (str(other),))
        try:
            self._db.execute("BEGIN")
            self._db.execute(
                f"INSERT INTO responses ({cols}) SELECT {cols} FROM other.responses AS o WHERE (o.ok = 1 AND NOT "
                "EXISTS (SELECT 1 FROM main.responses AS m WHERE m.key = o.key AND m.ok = 1)) OR (o.ok = 0 AND NOT "
                "EXISTS (SELECT 1 FROM main.responses AS m WHERE m.key = o.key AND m.ok = 0 AND m.created_at = "
                "o.created_at AND m.reason IS o.reason)) ORDER BY o.id"
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            self._db.execute("DETACH DATABASE other")
        return self.count() - before

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
