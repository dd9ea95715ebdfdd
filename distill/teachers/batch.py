"""The batch teacher and the Batch API client: `teacher.mode: batch` answers from the ledger or marks a request pending.

`BatchTeacher.complete` never calls a model. A request whose answer is in the run folder's ledger is answered from
it (exactly as the online teacher answers a ledger hit); any other request is collected, with the exact body the
online path would send (`chat_body` + `encode_body`, so the same bytes and the same ledger key), and the call raises
`RequestPending`: the conversation is not failed, only not finished; the wave driver (distill/generation/waves.py)
submits what a wave collected as batches and replays the conversations once the answers are in. A request whose
batch attempts failed (the failed rows are in the ledger, as evidence) is retried in later waves until it failed
`1 + teacher.max_retries` times, or once when the status is not worth retrying (a 400): then the call raises
`TeacherCallError` with the last failure's reason, exactly as the online engine does after its retries.

`BatchClient` wraps the official `openai` SDK's Files and Batches resources (upload with `purpose="batch"`,
`batches.create` with `completion_window="24h"`, retrieve, list, cancel, file content). `create` is never retried
blindly: a create whose answer was lost is found again by its input file (`find`) before another is made.
"""

from __future__ import annotations

import os
from typing import Any, Self

from distill.config import Config
from distill.errors import RunStopped, TeacherError
from distill.teachers.base import TeacherCallError, TeacherReply, TeacherRequest
from distill.teachers.batch_files import ENDPOINT, BatchStore, PendingRow
from distill.teachers.costs import Meter
from distill.teachers.engine import encode_body
from distill.teachers.ledger import Ledger
from distill.teachers.openai_teacher import chat_body, reply_from_body

__all__ = ["BatchClient", "BatchTeacher", "RequestPending", "WavePending", "retryable_status"]

_RETRYABLE = {408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529}
_FIND_LIMIT = 1000  # batches listed when looking for one whose create answer was lost
_HINT = "submitted batches are kept in the run folder; fix the cause, then rerun the same command to re-attach"


class RequestPending(Exception):  # a state, not an error: the conversation waits
    """The request is not in the ledger yet: it goes into the wave's batch; the conversation resumes next wave."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class WavePending(Exception):  # a state, not an error
    """A wave ended with conversations waiting for batch answers (`count` of them)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} conversation(s) wait for batch answers")
        self.count = count


def retryable_status(status: int | None) -> bool:
    """A failed batch row worth another attempt (5xx, 408, 409, 429; no status: the batch itself failed)."""
    return status is None or status in _RETRYABLE or status >= 500


def _api_key() -> str:
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        raise TeacherError(
            "teacher.mode is batch but OPENAI_API_KEY is not set",
            hint="export OPENAI_API_KEY=... (and OPENAI_BASE_URL for another endpoint), or use teacher.mode: online",
        )
    return key


class BatchTeacher:
    """Answers from the ledger; collects every other request for the wave's batch (see the module doc)."""

    provider = "openai"

    def __init__(self, config: Config) -> None:
        _api_key()  # fail before any work when the key is missing
        self.config = config
        self.model = config.teacher.model
        self.ledger: Ledger | None = None
        self.meter: Meter | None = None
        self.store: BatchStore | None = None
        self.floor = 0
        self.pending: dict[str, PendingRow] = {}

    def use_run(self, ledger: Ledger | None, meter: Meter | None) -> None:
        """Answer from the run folder's ledger; keep the batch state in the same database."""
        self.ledger, self.meter = ledger, meter
        if ledger is not None:
            self.store = BatchStore(ledger.path)
            self.floor = self.store.begin()

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        """The ledger's answer; else RequestPending (or TeacherCallError once the batch attempts are used up)."""
        if self.ledger is None or self.store is None:
            raise TeacherError("the batch teacher needs a run folder", hint="run it through `distill generate`")
        key = request.key(self.model)
        stored = self.ledger.lookup(key)
        if stored is not None:
            if self.meter is not None:
                self.meter.record(request.stage, stored.usage, hit=True)
            return reply_from_body(stored.body(), self.model)
        failures = self.store.failures(key, self.floor)
        if failures:
            status, reason, text = failures[-1]
            if len(failures) > self.config.teacher.max_retries or not retryable_status(status):
                shown = f"HTTP {status}" if status is not None else (reason or "error")
                raise TeacherCallError(reason or "error", f"{shown}: {(text or '').strip()[:300]}")  # as online
        if key not in self.pending:
            body = encode_body(chat_body(self.model, request))
            worst = 0.0
            if self.meter is not None:
                max_out = int(request.params.get("max_completion_tokens") or request.params.get("max_tokens") or 4096)
                worst = self.meter.estimate_usd(len(body) // 3, max_out)
            self.pending[key] = PendingRow(key, request.stage, body, worst)
        raise RequestPending(key)

    def take_pending(self) -> list[PendingRow]:
        """The requests this wave collected (in key order, so a rerun writes the same files), then none."""
        rows = [self.pending[k] for k in sorted(self.pending)]
        self.pending = {}
        return rows

    async def aclose(self) -> None:
        """Nothing to release between waves (the session closes the ledger)."""

    def close(self) -> None:
        """Close the batch state's connection."""
        if self.store is not None:
            self.store.close()
            self.store = None


class BatchClient:
    """The Batch API over the official SDK; every answer is returned as a plain dict."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._client: Any = None

    async def __aenter__(self) -> Self:
        from openai import AsyncOpenAI

        url = self.config.teacher.base_url  # a pool is refused in batch mode (distill/pool_config.py)
        base_url = (url if isinstance(url, str) else None) or os.environ.get("OPENAI_BASE_URL") or None
        # the SDK retries reads, uploads and cancels (harmless to repeat); `create` goes through `submit` only
        self._client = AsyncOpenAI(api_key=_api_key(), base_url=base_url, max_retries=3,
                                   timeout=max(self.config.teacher.timeout_s, 300.0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()

    async def _call(self, what: str, call: Any) -> Any:
        import openai

        try:
            return await call
        except openai.APIStatusError as exc:
            raise RunStopped("endpoint", f"the Batch API answered HTTP {exc.status_code} to {what}: "
                             f"{(exc.response.text or '').strip()[:300]}", hint=_HINT) from None
        except openai.APIConnectionError as exc:
            raise RunStopped("endpoint", f"the Batch API could not be reached for {what}: {exc}", hint=_HINT) from None

    async def upload(self, filename: str, content: bytes) -> str:
        """Upload a batch input file; its id."""
        got = await self._call(f"uploading {filename}", self._client.files.create(
            file=(filename, content, "application/jsonl"), purpose="batch"))
        return str(got.id)

    async def submit(self, input_file_id: str, metadata: dict[str, str], *, resumed: bool) -> dict[str, Any]:
        """Create the batch of an uploaded file, once: `resumed` (an earlier process uploaded it and may have created
        its batch before it died) looks for that batch first."""
        if resumed:
            found = await self.find(input_file_id)
            if found is not None:
                return found
        client = self._client.with_options(max_retries=0)
        got = await self._call(f"creating the batch of {input_file_id}", client.batches.create(
            input_file_id=input_file_id, endpoint=ENDPOINT, completion_window="24h", metadata=metadata))
        return dict(got.model_dump())

    async def find(self, input_file_id: str) -> dict[str, Any] | None:
        """The newest batch made from `input_file_id`, if any (among the last 1,000 batches)."""
        import openai

        seen = 0
        try:
            async for batch in self._client.batches.list(limit=100):
                if batch.input_file_id == input_file_id:
                    return dict(batch.model_dump())
                seen += 1
                if seen >= _FIND_LIMIT:
                    break
        except openai.APIError as exc:
            raise RunStopped("endpoint", f"the Batch API could not list batches: {exc}", hint=_HINT) from None
        return None

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        got = await self._call(f"reading batch {batch_id}", self._client.batches.retrieve(batch_id))
        return dict(got.model_dump())

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        got = await self._call(f"cancelling batch {batch_id}", self._client.batches.cancel(batch_id))
        return dict(got.model_dump())

    async def content(self, file_id: str) -> str:
        got = await self._call(f"downloading file {file_id}", self._client.files.content(file_id))
        return str(got.text)
