"""The teacher engine: sends chat completions to an OpenAI-compatible endpoint, keeps every answer, pays once.

It drives the official `openai` client (`AsyncOpenAI`, `max_retries=0`) through its documented low-level
`client.post("/chat/completions", content=<JSON bytes>, cast_to=httpx2.Response)`: the SDK keeps the endpoint, the
key, the headers and the timeouts; the engine gets the raw response (status, headers, body) and owns the retry loop.
`chat.completions.create` costs about 2 ms more CPU per request (request transforms, response models) and
`with_raw_response` still pays the transforms; the bytes sent are the ones the ledger stores, serialized once, and
the raw body is what the ledger must keep anyway. Connections are spread over clients of 8 (httpcore's pool scans all
of its connections on every request, so one pool of 256 costs far more CPU than 32 pools of 8).

Per request: the ledger is checked by the caller; the budget is reserved (`Meter.reserve`); the rate limiter paces
the start (`teacher.rpm` / `tpm`, headers, 429s: distill/teachers/limits.py; in a Ray task the run's limiter,
distill/teachers/shared_limits.py); a slot of `teacher.concurrency` is held
while the request is in flight (never during a back-off wait). Outcomes:
- 2xx: the raw body goes to the ledger with its usage, finish reason and timing, then the parsed JSON is returned.
- 429: paced down and retried (after `retry-after-ms` / `Retry-After`, else a jittered back-off); rate-limit 429s do
  not use up `teacher.max_retries`, so a 429 storm never loses a conversation. `insufficient_quota` stops the run.
- 5xx, 408, 409, timeouts, dropped connections: retried up to `teacher.max_retries` times, waiting `teacher.backoff_s`
  doubled per retry (capped at 60 s), with jitter; a `Retry-After` wins when given.
- other 4xx: no retry. Failures after the retries are stored in the ledger and raised as `TeacherCallError(reason)`.
- Circuit breaker: 401 / 403 / 404 (the key or the endpoint is wrong), or no success for `teacher.breaker_s` seconds
  while requests kept failing, stop the run (`RunStopped`): every request afterwards raises it, in-flight requests
  finish and are stored, and the message says what the endpoint answered. With `stop_on_refusal=False` (`distill
  eval`: a student the endpoint does not serve is a finding, not a reason to stop) a 401 / 403 / 404 is a failed call.
- An endpoint that cannot be reached (a refused connection or an unknown host on `_UNREACHABLE_ATTEMPTS` attempts
  in a row, before it ever answered) stops the run at once: "cannot reach the endpoint at URL".
- `stop(exc)` stops the engine from outside (the first Ctrl-C of `generate`): no request starts afterwards, back-off
  waits end at once, and the requests in flight (`in_flight`) finish and are stored.
A pool of endpoints (distill/teachers/pool.py) is this engine with one limiter, slot set and health per endpoint:
it overrides `_attempt`, `_observe`, `_failover`, `_unreachable` and `limits`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from distill.config import TeacherConfig
from distill.errors import RunStopped
from distill.teachers.base import TeacherCallError
from distill.teachers.costs import Meter, cost_usd
from distill.teachers.ledger import Ledger
from distill.teachers.limits import Pacer, retry_after
from distill.teachers.shared_limits import pacer

__all__ = ["CLIENT_CONNECTIONS", "Engine", "build_clients", "encode_body", "usage_of"]

CLIENT_CONNECTIONS = 8  # connections per client (see the module doc)
_RETRYABLE = {408, 409, 500, 502, 503, 504, 520, 522, 524, 529}
_FATAL = {401: "the key was refused", 403: "access was denied", 404: "the model or the URL does not exist"}
_BREAKER_MIN_FAILURES = 3
_UNREACHABLE_ATTEMPTS = 3
_MAX_WAIT_S = 60.0
_UNREACHABLE_HINT = "check teacher.base_url or OPENAI_BASE_URL (and that the server is up), then rerun the same command"
_RESUME_HINT = "finished conversations and every paid answer are kept; fix the cause, then rerun the same command"


def build_clients(config: TeacherConfig, api_key: str, base_url: str | None) -> list[Any]:
    """`ceil(concurrency / 8)` AsyncOpenAI clients without SDK retries, each with a pool of 8 connections."""
    import httpx2
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient

    count = -(-config.concurrency // CLIENT_CONNECTIONS)
    per = min(config.concurrency, CLIENT_CONNECTIONS)
    return [
        AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=config.timeout_s,
            http_client=DefaultAsyncHttpxClient(
                limits=httpx2.Limits(max_connections=per, max_keepalive_connections=per),
                timeout=httpx2.Timeout(config.timeout_s, connect=min(config.timeout_s, 10.0)),
            ),
        )
        for _ in range(count)
    ]


def encode_body(body: dict[str, Any]) -> bytes:
    """The bytes sent for a request body (and stored in the ledger, and written into batch files)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def usage_of(body: Any) -> dict[str, int]:
    """Input (prompt), cached input and output (completion) tokens of a chat.completion body."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return {"input": 0, "cached_input": 0, "output": 0}
    details = usage.get("prompt_tokens_details") or {}
    return {
        "input": int(usage.get("prompt_tokens") or 0),
        "cached_input": int((details.get("cached_tokens") if isinstance(details, dict) else 0) or 0),
        "output": int(usage.get("completion_tokens") or 0),
    }


def _finish_reason(body: Any) -> str | None:
    try:
        return body["choices"][0].get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


class _Attempt:
    """What one HTTP attempt produced."""

    __slots__ = ("headers", "lane", "latency", "reason", "sent_at", "status", "text", "unreached")

    def __init__(
        self, status: int | None, headers: Any, text: str | None, reason: str | None, sent_at: float, now: float
    ) -> None:
        self.status, self.headers, self.text, self.reason = status, headers, text, reason
        self.sent_at, self.latency = sent_at, now - sent_at
        self.lane: Any = None  # the endpoint of a pool that answered (distill/teachers/pool.py)
        self.unreached = False  # the connection reached no server

    def describe(self) -> str:
        if self.status is not None:
            return f"HTTP {self.status}: {(self.text or '').strip()[:300]}"
        return f"{self.reason}: {(self.text or '')[:300]}"


class Engine:
    """Sends request bodies with pacing, retries, a breaker, the budget and the ledger."""

    def __init__(
        self,
        config: TeacherConfig,
        clients: list[Any],
        *,
        model: str,
        ledger: Ledger | None = None,
        meter: Meter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        stop_on_refusal: bool = True,
    ) -> None:
        self.config, self.model = config, model
        self.stop_on_refusal = stop_on_refusal
        self.ledger, self.meter = ledger, meter
        url = getattr(clients[0], "base_url", None) if clients else None
        self.limiter: Pacer = pacer(f"{model} @ {url}", config.rpm, config.tpm, clock=clock, sleep=sleep)
        self.stopped: RunStopped | None = None
        self._clients = clients
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        per = CLIENT_CONNECTIONS if len(clients) > 1 else config.concurrency
        slots = min(config.concurrency, per * len(clients))
        self._per = per
        self._free = list(range(slots - 1, -1, -1))
        self._slots: asyncio.Semaphore | None = None
        self._slot_count = slots
        self._last_success = clock()
        self._failures = 0
        self.in_flight = 0  # requests sent whose answer has not arrived yet
        self._answered_once = False  # the endpoint gave an HTTP answer (any status) at least once
        self._unreached = 0  # connection attempts in a row that reached no server, before any answer
        self._stop_event: asyncio.Event | None = None

    # -- the public call ------------------------------------------------------------------------------------------
    async def send(self, body: dict[str, Any], *, key: str, stage: str) -> dict[str, Any]:
        """POST /chat/completions; the answer is in the ledger before the parsed body is returned."""
        if self.stopped:
            raise self.stopped
        blob = encode_body(body)
        max_out = int(body.get("max_completion_tokens") or body.get("max_tokens") or 4096)
        reserved = 0.0
        if self.meter is not None and self.meter.budget_usd is not None:
            try:
                reserved = self.meter.reserve(self.meter.estimate_usd(len(blob) // 3, max_out))
            except RunStopped as exc:
                self.stopped = self.stopped or exc
                raise self.stopped from None
        try:
            return await self._send(blob, key, stage, len(blob) // 4 + max_out)
        finally:
            if reserved and self.meter is not None:
                self.meter.release(reserved)

    async def _send(self, blob: bytes, key: str, stage: str, tokens: int) -> dict[str, Any]:
        attempts = retries = limited = failovers = 0
        while True:
            if self.stopped:
                raise self.stopped
            attempts += 1
            attempt = await self._attempt(blob, tokens)
            self._observe(attempt)
            if attempt.status is not None and 200 <= attempt.status < 300:
                self._last_success, self._failures, self._answered_once = self._clock(), 0, True
                return self._answered(attempt, blob, key, stage, attempts)
            unreachable = self._unreachable(attempt)
            fatal = self._fatal(attempt) or unreachable
            tripped = fatal or self._breaker(attempt)
            if tripped:
                self._store_failure(attempt, blob, key, stage, attempts)
                hint = _UNREACHABLE_HINT if unreachable else _RESUME_HINT
                self.stopped = self.stopped or RunStopped("endpoint", tripped, hint=hint)
                raise self.stopped
            if attempt.status != 429 and self._retryable(attempt) and self._failover(attempt, failovers):
                failovers += 1  # another endpoint of a pool takes it at once: no retry used up, no wait
                continue
            if attempt.status == 429:
                limited += 1
                wait = retry_after(attempt.headers)  # capped like every wait: the breaker decides when to give up
                await self._pause(min(_MAX_WAIT_S, wait * (1 + 0.1 * self._rng.random())) if wait is not None
                                  else self._backoff(limited))
                continue
            if self._retryable(attempt) and retries < self.config.max_retries:
                retries += 1
                wait = retry_after(attempt.headers)
                await self._pause(min(_MAX_WAIT_S, wait) if wait is not None else self._backoff(retries))
                continue
            self._store_failure(attempt, blob, key, stage, attempts)
            raise TeacherCallError(attempt.reason or "error", attempt.describe())

    # -- one HTTP attempt -----------------------------------------------------------------------------------------
    async def _attempt(self, blob: bytes, tokens: int) -> _Attempt:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._slot_count)
        async with self._slots:
            slot = self._free.pop()
            try:
                await self.limiter.acquire(tokens)
                if self.stopped:
                    raise self.stopped
                return await self._post(self._clients[slot // self._per], blob)
            finally:
                self._free.append(slot)

    async def _post(self, client: Any, blob: bytes) -> _Attempt:
        """POST the body with one client; every outcome becomes an _Attempt."""
        import httpx2
        import openai

        started = self._clock()
        self.in_flight += 1
        try:
            # the body goes as the bytes the ledger stores: the SDK neither copies nor serializes it again
            response = await client.post("/chat/completions", content=blob, cast_to=httpx2.Response)
            return _Attempt(response.status_code, response.headers, response.text, None, started, self._clock())
        except openai.APIStatusError as exc:
            status, got = exc.status_code, exc.response
            return _Attempt(status, got.headers, got.text, f"http_{status}", started, self._clock())
        except openai.APITimeoutError:
            text = f"no answer within {self.config.timeout_s:g} s"
            return _Attempt(None, None, text, "timeout", started, self._clock())
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            text = f"{type(cause).__name__}: {cause}"
            attempt = _Attempt(None, None, text, "connection_error", started, self._clock())
            attempt.unreached = isinstance(cause, httpx2.ConnectError)
            self._unreached += attempt.unreached
            return attempt
        finally:
            self.in_flight -= 1

    # -- hooks a pool of endpoints overrides (distill/teachers/pool.py) ---------------------------------------------
    def _observe(self, attempt: _Attempt) -> None:
        """Feed an answer to the rate limiter."""
        self.limiter.observe(attempt.status, attempt.headers, attempt.sent_at)

    def _failover(self, attempt: _Attempt, failovers: int) -> bool:
        """True when a failed attempt goes to another endpoint at once (one endpoint: never)."""
        return False

    def limits(self) -> dict[str, Any]:
        """The rate limits in force and where they came from."""
        return self.limiter.describe()

    # -- stopping from outside --------------------------------------------------------------------------------------
    def stop(self, exc: RunStopped) -> None:
        """Start no request from now on (the first reason wins); requests in flight finish and are stored."""
        self.stopped = self.stopped or exc
        if self._stop_event is not None:
            self._stop_event.set()

    async def _pause(self, seconds: float) -> None:
        """A back-off wait that ends early when the engine is stopped."""
        if self._stop_event is None:
            self._stop_event = asyncio.Event()
        if self.stopped:
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()

    # -- outcomes -------------------------------------------------------------------------------------------------
    def _answered(self, attempt: _Attempt, blob: bytes, key: str, stage: str, attempts: int) -> dict[str, Any]:
        text = attempt.text or ""
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            attempt.reason = "bad_response"
            self._store_failure(attempt, blob, key, stage, attempts)
            raise TeacherCallError("bad_response", f"HTTP {attempt.status} with a body that is not a chat.completion: "
                                   f"{text[:200]}")
        usage = usage_of(data)
        usd = cost_usd(usage, self.meter.price) if self.meter is not None else None
        if self.ledger is not None:
            self.ledger.record(
                key, ok=True, stage=stage, model=self.model, request=blob, response=text, status=attempt.status,
                finish_reason=_finish_reason(data), usage=usage, cost_usd=usd, latency_s=round(attempt.latency, 4),
                attempts=attempts,
            )
        if self.meter is not None:
            self.meter.record(stage, usage)
        return data

    def _store_failure(self, attempt: _Attempt, blob: bytes, key: str, stage: str, attempts: int) -> None:
        if self.meter is not None:
            self.meter.record_failure(stage)
        if self.ledger is not None:
            self.ledger.record(
                key, ok=False, stage=stage, model=self.model, request=blob, response=attempt.text,
                status=attempt.status, reason=attempt.reason, latency_s=round(attempt.latency, 4), attempts=attempts,
            )

    @staticmethod
    def _retryable(attempt: _Attempt) -> bool:
        return attempt.status is None or attempt.status in _RETRYABLE or attempt.status >= 500

    def _fatal(self, attempt: _Attempt) -> str | None:
        """A message when the answer means no request can succeed (bad key, wrong endpoint, no quota left)."""
        status = attempt.status
        if status in _FATAL and self.stop_on_refusal:
            return f"stopped: the teacher endpoint answered {attempt.describe()} ({_FATAL[status]})"
        if status == 429 and "insufficient_quota" in (attempt.text or ""):
            return f"stopped: the teacher endpoint answered {attempt.describe()} (the account has no quota left)"
        return None

    def _unreachable(self, attempt: _Attempt) -> str | None:
        """A message when the endpoint never answered and the last attempts could not even connect."""
        if attempt.status is not None:
            self._answered_once, self._unreached = True, 0
        if self._answered_once or self._unreached < _UNREACHABLE_ATTEMPTS:
            return None
        url = getattr(self._clients[0], "base_url", None) if self._clients else None
        return (f"stopped: cannot reach the endpoint at {url or 'the configured URL'} "
                f"({self._unreached} attempts in a row; {attempt.describe()})")

    def _breaker(self, attempt: _Attempt) -> str | None:
        """A message when requests kept failing and nothing succeeded for `teacher.breaker_s` seconds."""
        self._failures += 1
        quiet = self._clock() - self._last_success
        if self._failures >= _BREAKER_MIN_FAILURES and quiet >= self.config.breaker_s:
            return (
                f"stopped: no teacher request succeeded in the last {quiet:.0f} s ({self._failures} failed attempts "
                f"in a row); the endpoint's last answer: {attempt.describe()}"
            )
        return None

    def _backoff(self, n: int) -> float:
        """Jittered exponential back-off: backoff_s x 2^(n-1), capped at 60 s, times a random 0.5..1."""
        return min(_MAX_WAIT_S, self.config.backoff_s * 2 ** (n - 1)) * (0.5 + 0.5 * self._rng.random())

    async def aclose(self) -> None:
        """Close every client."""
        for client in self._clients:
            await client.close()

