"""Batch runs in waves: `teacher.mode: batch` (or `distill generate --batch`) drives every request through the Batch API.

A wave replays every unfinished conversation with the batch teacher (distill/teachers/batch.py): requests the ledger
answers are answered, and each conversation advances until its first request the ledger lacks, which is collected and
leaves the conversation pending (not failed). The wave's requests are then written as batch files (split at 50,000
requests / 200 MB), uploaded and submitted; the driver polls them every `teacher.batch_poll_s` seconds, prints the
provider's status, and when a batch ends reads its output file (joined on `custom_id`, whatever the order) into the
ledger exactly as an online answer is stored, and its error file (and a failed batch) as failed attempts, retried in
the next wave up to `teacher.max_retries`; `batch_expired` rows and the rows a cancelled batch never ran are simply
collected again. Then the next wave starts. Questions, rollout steps, simulated tools and top-up rounds all go
through it, so the export is the online run's, byte for byte.

Every batch is in the run folder's state (distill/teachers/batch_files.py) before anything is sent or waited on:
a rerun re-attaches to batches in flight instead of submitting them again. Ctrl-C stops waiting and cancels nothing;
`cancel=True` (`--cancel-batches`) cancels the batches in flight and keeps what they answered; `no_wait=True`
(`--no-wait`) submits a wave and returns (raising `BatchesPending`), so cron-style reruns advance the run a wave
at a time. `generation.max_cost_usd` holds: a wave is cut so that its worst case (every row's input and `max_tokens`
of output at batch prices), plus the batches in flight, fits what is left of the budget.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from distill.config import Config
from distill.errors import ConfigError, RunStopped
from distill.teachers.batch import BatchClient, BatchTeacher, WavePending
from distill.teachers.batch_files import (
    TERMINAL,
    BatchRecord,
    BatchStore,
    PendingRow,
    batch_lines,
    read_result_line,
    split_rows,
)
from distill.teachers.costs import cost_usd, price_for
from distill.teachers.engine import usage_of

__all__ = ["BATCHES_PENDING_EXIT", "BatchesPending", "batch_summary", "batch_teacher", "run_waves"]

BATCHES_PENDING_EXIT = 75  # EX_TEMPFAIL: `--no-wait` submitted or found batches in flight; rerun later


class BatchesPending(RunStopped):
    """The run waits for batches at the provider (`--no-wait`, `--cancel-batches`): rerun to advance it."""


def _finish_reason(body: Any) -> str | None:
    try:
        return str(body["choices"][0].get("finish_reason"))
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def _elapsed(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _Driver:
    """Submits, polls and ingests the batches of one run folder."""

    def __init__(self, config: Config, run: Any, teacher: BatchTeacher, store: BatchStore, log: TextIO) -> None:
        self.config, self.run, self.teacher, self.store, self.log = config, run, teacher, store, log
        self.online_price = price_for(config.teacher.model, config.teacher.price)
        self.batch_price = run.meter.price if run.meter is not None else None
        self.started = time.monotonic()
        self._last_line = ""

    # -- submitting ---------------------------------------------------------------------------------------------------
    def fit_budget(self, rows: list[PendingRow]) -> list[PendingRow]:
        """The rows whose worst case fits what is left of `generation.max_cost_usd` (in order)."""
        budget = self.config.generation.max_cost_usd
        if budget is None or self.run.ledger is None:
            return rows
        left = budget - self.run.ledger.total_usd() - self.store.reserved_usd()
        kept: list[PendingRow] = []
        for row in rows:
            if row.worst_usd > left:
                break
            left -= row.worst_usd
            kept.append(row)
        if len(kept) < len(rows):
            self._say(f"wave cut to {len(kept)} of {len(rows)} requests: the rest would pass generation.max_cost_usd "
                      f"(${budget:g}) in the worst case")
        return kept

    async def submit(self, rows: list[PendingRow]) -> None:
        """Record the wave's batches, then upload and create each."""
        wave = self.store.next_wave()
        records = [self.store.prepare(wave, part) for part in split_rows(rows, *_limits())]
        self._say(f"wave {wave}: {len(rows)} request(s) in {len(records)} batch(es)")
        async with BatchClient(self.config) as client:
            for record in records:
                await self._advance(client, record, resumed=False)

    async def _advance(self, client: BatchClient, b: BatchRecord, *, resumed: bool) -> BatchRecord:
        """Move a batch on: upload it, create it, or read its status."""
        if b.state == "prepared":
            content = batch_lines((cid, body) for cid, _, _, body, _ in self.store.rows(b.local_id))
            self.store.update(b.local_id, input_file_id=await client.upload(b.filename, content), state="uploaded")
            b, resumed = self.store.get(b.local_id), False
        if b.state == "uploaded":
            assert b.input_file_id is not None
            meta = {"distill_batch": str(b.local_id), "distill_wave": str(b.wave)}
            got = await client.submit(b.input_file_id, meta, resumed=resumed)
        elif b.batch_id is not None:
            got = await client.retrieve(b.batch_id)
        else:
            return b
        self.store.update(
            b.local_id, batch_id=got["id"], state=got["status"], request_counts=got.get("request_counts") or {},
            output_file_id=got.get("output_file_id"), error_file_id=got.get("error_file_id"),
            errors=got.get("errors"),
        )
        return self.store.get(b.local_id)

    # -- waiting ------------------------------------------------------------------------------------------------------
    async def attach(self, *, wait: bool) -> None:
        """Poll every batch not yet ingested (submitting any an earlier process left unsent); ingest those that ended;
        with `wait`, until none is left."""
        if not self.store.open_batches():
            return
        async with BatchClient(self.config) as client:
            while True:
                for b in self.store.open_batches():
                    b = await self._advance(client, b, resumed=True)
                    if b.state in TERMINAL:
                        await self._ingest(client, b)
                self._status()
                if not wait or not self.store.open_batches():
                    return
                await asyncio.sleep(self.config.teacher.batch_poll_s)

    async def cancel(self) -> int:
        """Cancel every batch in flight, wait until they stop, keep what they answered; returns how many."""
        cancelled = 0
        async with BatchClient(self.config) as client:
            for b in self.store.open_batches():
                b = await self._advance(client, b, resumed=True)
                if b.batch_id is not None and b.state not in TERMINAL and b.state != "cancelling":
                    await client.cancel(b.batch_id)
                    cancelled += 1
        self._say(f"cancel requested for {cancelled} batch(es); answers they already have are kept")
        await self.attach(wait=True)
        return cancelled

    def _status(self) -> None:
        """One line per change: the wave's batches, their status and counts, the rows so far, the dollars."""
        batches = self.store.all()
        if not batches:
            return
        wave = max(b.wave for b in batches if not b.ingested) if any(not b.ingested for b in batches) else \
            batches[-1].wave
        this = [b for b in batches if b.wave == wave]
        shown = ", ".join(
            f"{b.batch_id or '(unsent)'} {b.state} {b.request_counts.get('completed', 0)}/"
            f"{b.request_counts.get('total', b.requests)}"
            + (f" ({b.request_counts['failed']} failed)" if b.request_counts.get("failed") else "")
            for b in this
        )
        rows = {k: sum(b.outcomes[k] for b in this) for k in ("answered", "failed", "expired")}
        usd = sum(b.usd for b in this)
        line = (f"wave {wave}: {shown} · rows answered {rows['answered']}, failed {rows['failed']}, expired "
                f"{rows['expired']} · ${usd:.4f} at batch prices")
        if line != self._last_line:
            self._last_line = line
            self._say(f"{line} · {_elapsed(time.monotonic() - self.started)}")

    def _say(self, text: str) -> None:
        print(f"[batch] {text}", file=self.log, flush=True)

    # -- ingesting ----------------------------------------------------------------------------------------------------
    async def _ingest(self, client: BatchClient, b: BatchRecord) -> None:
        """Store the ended batch's output and error lines in the ledger (rows already handled are skipped)."""
        rows: dict[str, tuple[str, str, bytes, str | None]] = {
            cid: (key, stage, body, outcome) for cid, key, stage, body, outcome in self.store.rows(b.local_id)
        }
        tally = {"answered": 0, "failed": 0, "expired": 0, "unanswered": 0}
        usd = online = 0.0
        for file_id in (b.output_file_id, b.error_file_id):
            if not file_id:
                continue
            for line in (await client.content(file_id)).splitlines():
                parsed = read_result_line(line) if line.strip() else None
                if parsed is None or parsed[0] not in rows or rows[parsed[0]][3] is not None:
                    continue
                cid, status, body, error = parsed
                key, stage, request, _ = rows[cid]
                got = self._store_line(key, stage, request, status, body, error)
                self.store.set_outcome(cid, got)
                rows[cid] = (key, stage, request, got)
        for cid, (key, stage, request, outcome) in rows.items():
            if outcome is None:  # no line for it: the batch failed, expired, or was cancelled before the row ran
                if b.state == "failed":
                    outcome = "failed"
                    errors = json.dumps(b.errors, ensure_ascii=False) if b.errors else "the batch failed"
                    self._record_failure(key, stage, request, None, "batch_failed", errors)
                else:
                    outcome = "expired" if b.state == "expired" else "unanswered"
                self.store.set_outcome(cid, outcome)
            tally[outcome] += 1
            if outcome == "answered" and (entry := self.run.ledger.lookup(key)) is not None:  # kill-safe: from the ledger
                usd += entry.cost_usd or 0.0
                online += cost_usd(entry.usage, self.online_price) or 0.0
        self.store.update(b.local_id, ingested=1, ended_at=time.time(), usd=usd, online_usd=online, **tally)
        self._say(f"batch {b.batch_id} {b.state}: answered {tally['answered']}, failed {tally['failed']}, expired "
                  f"{tally['expired']}, not run {tally['unanswered']}")

    def _store_line(self, key: str, stage: str, request: bytes, status: int | None, body: Any, error: Any) -> str:
        """One output or error line into the ledger; its outcome."""
        ledger = self.run.ledger
        if isinstance(error, dict) and error.get("code") == "batch_expired":
            return "expired"
        if status == 200 and isinstance(body, dict) and isinstance(body.get("choices"), list):
            usage = usage_of(body)
            usd = cost_usd(usage, self.batch_price)
            if ledger.lookup(key) is None:  # a rerun after a kill mid-ingest stores nothing twice
                attempts = len(self.store.failures(key, self.teacher.floor)) + 1
                ledger.record(
                    key, ok=True, stage=stage, model=self.teacher.model, request=request,
                    response=json.dumps(body, ensure_ascii=False, separators=(",", ":")), status=200,
                    finish_reason=_finish_reason(body), usage=usage, cost_usd=usd, attempts=attempts,
                )
                if self.run.meter is not None:
                    self.run.meter.record(stage, usage)
            return "answered"
        if status is not None:
            reason = f"http_{status}" if status != 200 else "bad_response"
        else:
            reason = str(error.get("code") or "batch_error") if isinstance(error, dict) else "batch_error"
        text = json.dumps(body if body is not None else error, ensure_ascii=False)
        self._record_failure(key, stage, request, status, reason, text)
        return "failed"

    def _record_failure(self, key: str, stage: str, request: bytes, status: int | None, reason: str,
                        text: str) -> None:
        self.run.ledger.record(key, ok=False, stage=stage, model=self.teacher.model, request=request, response=text,
                               status=status, reason=reason)
        if self.run.meter is not None:
            self.run.meter.record_failure(stage)


def _limits() -> tuple[int, int]:
    from distill.teachers import batch_files

    return batch_files.MAX_BATCH_REQUESTS, batch_files.MAX_BATCH_BYTES


def batch_summary(store: BatchStore) -> dict[str, Any]:
    """The manifest's `batch` section: waves, batches, rows per outcome, dollars at batch and online prices."""
    batches = store.all()
    rows = {k: sum(b.outcomes[k] for b in batches) for k in ("answered", "failed", "expired", "unanswered")}
    usd = round(sum(b.usd for b in batches), 6)
    online = round(sum(b.online_usd for b in batches), 6)
    return {
        "waves": store.waves,
        "batches": [
            {"wave": b.wave, "batch_id": b.batch_id, "status": b.state, "requests": b.requests,
             "request_counts": b.request_counts, **b.outcomes, "usd": round(b.usd, 6)}
            for b in batches
        ],
        "rows": {"submitted": sum(b.requests for b in batches), **rows},
        "usd": usd,
        "online_usd": online,
        "saving_usd": round(online - usd, 6),
        "saving_share": round(1 - usd / online, 4) if online else None,
    }


def batch_teacher(config: Config, teacher: Any = None) -> tuple[Config, BatchTeacher]:
    """The config with `teacher.mode: batch` and its batch teacher (`teacher` when one is given)."""
    if config.teacher.service_tier is not None:
        raise ConfigError(str(config.path or "<config>"), "teacher.service_tier",
                          "applies to online requests; batch requests are already half price",
                          hint="drop teacher.service_tier, or use teacher.mode: online")
    if config.teacher.mode != "batch":
        path = config.path
        config = config.model_copy(update={"teacher": config.teacher.model_copy(update={"mode": "batch"})})
        config._path = path
    if teacher is None:
        teacher = BatchTeacher(config)
    if not isinstance(teacher, BatchTeacher):
        raise TypeError(f"batch mode needs a BatchTeacher, got {type(teacher).__name__}")
    return config, teacher


def run_waves(
    config: Config, run: Any, roll: Callable[[], Any], *, no_wait: bool = False, cancel: bool = False,
    log: TextIO | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Run `roll` (one replay of every unfinished conversation) wave after wave until nothing is pending.

    Returns roll's result and the manifest's `batch` section; raises `BatchesPending` with `no_wait` while batches
    are in flight, and after `cancel`.
    """
    teacher = run.teacher
    if not isinstance(teacher, BatchTeacher) or teacher.store is None:
        raise TypeError("run_waves needs a RunSession whose teacher is a BatchTeacher with a run folder")
    store = teacher.store
    driver = _Driver(config, run, teacher, store, log or sys.stderr)
    again = f"distill generate {config.path or 'CONFIG'}" + (f" --out {run.run_dir}" if run.run_dir else "")
    try:
        if cancel:
            count = asyncio.run(driver.cancel())
            raise BatchesPending("batch", f"cancelled {count} batch(es); their answers are in the ledger",
                                 hint=f"rerun to submit what they did not answer: {again}")
        while True:
            asyncio.run(driver.attach(wait=not no_wait))
            try:
                result = roll()
            except WavePending as pending:
                flying = store.in_flight_keys()
                rows = [r for r in teacher.take_pending() if r.key not in flying]
                rows = driver.fit_budget(rows)
                if rows:
                    asyncio.run(driver.submit(rows))
                elif not flying:
                    run.stop(RunStopped("budget", "stopped before passing generation.max_cost_usd "
                                        f"(${config.generation.max_cost_usd:g}): the next batch could cost more than "
                                        "what is left", hint="raise generation.max_cost_usd and rerun"))
                    run.check_stopped()
                if no_wait:
                    open_ = store.open_batches()
                    raise BatchesPending(
                        "batch", f"{pending.count} conversation(s) wait for {len(open_)} batch(es) in flight "
                        f"({', '.join(sorted({b.state for b in open_}))})", hint=f"rerun later to advance: {again}")
                continue
            store.finish()
            summary = batch_summary(store)
            teacher.close()
            return result, summary
    except KeyboardInterrupt:
        open_ = store.open_batches()
        if open_:
            driver._say(f"stopped waiting; {len(open_)} batch(es) keep running at the provider (nothing cancelled): "
                        f"`{again}` re-attaches, --cancel-batches cancels them")
        run.close()
        teacher.close()
        raise
    except BaseException:
        run.close()
        teacher.close()
        raise
