"""Request pacing for the teacher engine: limits configured, read from the endpoint's headers, or learned from 429s.

Three sources cap the request rate and the lowest wins: `teacher.rpm` / `teacher.tpm` from the config; the
`x-ratelimit-limit-requests` / `x-ratelimit-limit-tokens` headers of the endpoint's answers (OpenAI sends them, so a
limit configured too high is corrected by the first answer); and, for endpoints that send no limits, a rate learned
from 429s. Requests start evenly spaced at that rate (GCRA; a 0.1 s burst under a configured or announced limit, none
under a learned one), tokens likewise against the tokens-per-minute limit (a request counts its estimated input plus
`max_tokens`, as OpenAI's limiter does). A 429's `retry-after-ms` / `Retry-After`, or an `x-ratelimit-remaining-*`
of 0, pauses every new request until the endpoint will take it.

Learning from 429s (once at least 10 requests went out in the last second): the first 429 sets the rate to half of
what was being sent, at most the success rate of the last second. Then the answers are counted in windows (by the
time their request was sent, so the latency does not blur them; at least 3 latencies long, about a second, shorter
in a storm): a window where 5 % or more were refused shows the endpoint saturated, and what it admitted is its limit
(the ceiling): the rate goes to 98 % of it. A window with (almost) no refusal while requests waited for the pacer
probes for more: doubling per second far below the ceiling, +2 %/s up to it, +0.5 %/s above. Guards against an
endpoint whose 429s do not follow the load (random faults, load shedding): when sending 10 % less leaves the refused
share where it was instead of making it vanish, 429s stop teaching a rate for 5 minutes; and the learned rate never
goes below half the best success rate seen, so it cannot stall at zero.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

__all__ = ["Pacer", "RateLimiter", "parse_duration", "retry_after"]

BURST_S = 0.1  # requests may run this far ahead of the even spacing
MAX_HOLD_S = 60.0
_MIN_RATE = 0.05  # requests per second the learned rate never goes below
_WINDOW_S = 1.0  # a window closes after this long with _STORM_EVENTS answers (4x as long with fewer) ...
_WINDOW_EVENTS = 100  # ... or after this many answers (at least 0.1 s) ...
_STORM_EVENTS = 20  # ... or, while over a fifth of the answers are 429s, after this many
_MARGIN = 0.98  # after a window with 429s: this share of what the endpoint admitted
_PROBE_PER_S = 0.02  # growth per second below the rate where the endpoint last refused ...
_PROBE_ABOVE_PER_S = 0.005  # ... and above it
_DEAF_S = 300.0  # how long 429s that do not follow the rate are not learned from
_NOISE = 0.05  # a window refusing less than this share teaches no limit (random refusals happen)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str | None) -> float | None:
    """Seconds of an OpenAI reset header: `1s`, `6m0s`, `20ms`, `1h2m3.5s`, or a bare number of seconds."""
    if not text:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    total, end = 0.0, 0
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for match in _DURATION.finditer(text):
        if match.start() != end:
            return None
        total += float(match.group(1)) * scale[match.group(2)]
        end = match.end()
    return total if end == len(text) and end else None


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms`, else `Retry-After` (seconds or an HTTP date); None when absent."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value else None
    except ValueError:
        return None


class Pacer(Protocol):
    """What the engine asks of a limiter: a RateLimiter, or in a Ray task the run's shared one
    (distill/teachers/shared_limits.py)."""

    throttled: int

    async def acquire(self, tokens: int = 0) -> None: ...

    def observe(self, status: int | None, headers: Mapping[str, str] | None, sent_at: float | None = None) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class RateLimiter:
    """Paces request starts under the lowest known requests- and tokens-per-minute limit."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.configured_rpm, self.configured_tpm = rpm, tpm
        self.header_rpm: int | None = None
        self.header_tpm: int | None = None
        self.learned_rps: float | None = None  # from 429s, for endpoints that send no limits
        self._ceiling: float | None = None  # what the endpoint admitted the last time it refused
        self._cut_at = float("-inf")  # when the learned rate was last lowered
        self._deaf_until = float("-inf")  # 429s do not teach a rate before this
        self._previous: tuple[float, float, float] | None = None  # (admitted, refused share, sent) of the last window
        self._win_deaf = 0
        self._peak = 0.0  # the most successes per second seen in a window of at least half a second
        self._latency = 0.0  # moving average of the answers' latency
        self.throttled = 0  # 429s seen
        self._clock, self._sleep = clock, sleep
        self._tat_req = self._tat_tok = 0.0
        self._hold_until = 0.0
        self._epoch = 0
        self._starts: deque[float] = deque()
        self._oks: deque[float] = deque()  # successes of the last second
        now = clock()
        self._win_start, self._win_ok, self._win_limited, self._win_waited = now, 0, 0, False

    # -- the limits ---------------------------------------------------------------------------------------------
    def request_rate(self) -> float | None:
        """Requests per second allowed now (None: unlimited)."""
        rates = [r / 60 for r in (self.configured_rpm, self.header_rpm) if r]
        if self.learned_rps is not None:
            rates.append(self.learned_rps)
        return min(rates) if rates else None

    def token_rate(self) -> float | None:
        """Tokens per second allowed now (None: unlimited)."""
        rates = [r / 60 for r in (self.configured_tpm, self.header_tpm) if r]
        return min(rates) if rates else None

    def describe(self) -> dict[str, Any]:
        """The limits in force and where they came from (for the manifest and `distill estimate`)."""
        rate = self.request_rate()
        return {
            "rpm_configured": self.configured_rpm,
            "tpm_configured": self.configured_tpm,
            "rpm_from_headers": self.header_rpm,
            "tpm_from_headers": self.header_tpm,
            "rpm_learned_from_429s": round(self.learned_rps * 60, 1) if self.learned_rps else None,
            "rpm_in_force": round(rate * 60, 1) if rate else None,
            "responses_429": self.throttled,
        }

    def _tighten(self, now: float) -> None:
        """Limits went down or a pause began: reservations made under the old limits are void."""
        self._epoch += 1
        start = max(now, self._hold_until)
        self._tat_req = self._tat_tok = start

    def hold(self, until: float) -> None:
        """No request starts before `until` (clock time)."""
        now = self._clock()
        until = min(until, now + MAX_HOLD_S)
        if until > self._hold_until:
            self._hold_until = until
            self._tighten(now)

    # -- pacing ---------------------------------------------------------------------------------------------------
    def reserve(self, tokens: int = 0) -> tuple[float, float]:
        """Book the start of a request of `tokens` (estimated input + max output): (its start, now), clock times."""
        now = self._clock()
        rate, token_rate = self.request_rate(), self.token_rate()
        start = max(now, self._hold_until)
        if rate:  # no burst at a learned rate: an endpoint that sends no limits may count per request
            start = max(start, self._tat_req - (0.0 if rate == self.learned_rps else BURST_S))
            self._tat_req = max(self._tat_req, start) + 1 / rate
        if token_rate and tokens:
            start = max(start, self._tat_tok - BURST_S)
            self._tat_tok = max(self._tat_tok, start) + tokens / token_rate
        starts = self._starts
        starts.append(start)
        while starts[0] < now - 1.0:
            starts.popleft()
        if start > now:
            self._win_waited = True
        return start, now

    def charge(self, tokens: int) -> None:
        """Count `tokens` more (fewer when negative) against the tokens-per-minute limit than were reserved."""
        token_rate = self.token_rate()
        if token_rate and tokens:
            now = self._clock()
            self._tat_tok = max(now, max(now, self._tat_tok) + tokens / token_rate)

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until a request of `tokens` (estimated input + max output) may start."""
        while True:
            start, now = self.reserve(tokens)
            if start <= now:
                return
            epoch = self._epoch
            await self._sleep(start - now)
            if self._epoch == epoch:
                return

    # -- feedback -------------------------------------------------------------------------------------------------
    def observe(self, status: int | None, headers: Mapping[str, str] | None, sent_at: float | None = None) -> None:
        """Learn from an answer: its rate-limit headers; 429s and successes feed the learned rate.

        A 429 to a request sent before the learned rate was last lowered says nothing about the new rate: it only
        counts for its `Retry-After`.
        """
        now = self._clock()
        if headers:
            self._read_headers(now, headers)
        if status == 429:
            self.throttled += 1
            wait = retry_after(headers)
            if wait:
                self.hold(now + wait)
            if sent_at is None or sent_at >= max(self._cut_at, self._win_start):
                self._limited(now)
        elif status is not None and 200 <= status < 300:
            if sent_at is None or sent_at >= self._win_start:  # a window counts the requests sent in it
                self._win_ok += 1
            if sent_at is not None:  # answers lag their requests: windows must be longer than that
                self._latency += 0.1 * (now - sent_at - self._latency)
            oks = self._oks
            oks.append(now)
            while oks[0] < now - 1.0:
                oks.popleft()
        span = now - self._win_start
        events = self._win_ok + self._win_limited
        shortest = max(0.1, 3 * self._latency)
        if span >= 4 * _WINDOW_S or (span >= _WINDOW_S and events >= _STORM_EVENTS) or (span >= shortest and (
            events >= _WINDOW_EVENTS or (events >= _STORM_EVENTS and self._win_limited * 5 >= events)
        )):
            self._adapt(now)

    def _read_headers(self, now: float, headers: Mapping[str, str]) -> None:
        limit = _int(headers.get("x-ratelimit-limit-requests"))
        if limit:
            if self.header_rpm is None or limit < self.header_rpm:
                self.header_rpm = limit
                self._tighten(now)
            self.header_rpm = limit
        limit = _int(headers.get("x-ratelimit-limit-tokens"))
        if limit:
            if self.header_tpm is None or limit < self.header_tpm:
                self.header_tpm = limit
                self._tighten(now)
            self.header_tpm = limit
        if _int(headers.get("x-ratelimit-remaining-requests")) == 0:
            wait = parse_duration(headers.get("x-ratelimit-reset-requests"))
            if wait:
                self.hold(now + min(wait, 60 / self.header_rpm if self.header_rpm else 1.0))
        if _int(headers.get("x-ratelimit-remaining-tokens")) == 0:
            wait = parse_duration(headers.get("x-ratelimit-reset-tokens"))
            if wait:
                self.hold(now + min(wait, 1.0))

    def _send_rate(self, now: float) -> float:
        starts = self._starts
        while starts and starts[0] < now - 1.0:
            starts.popleft()
        if not starts:
            return _MIN_RATE
        span = max(now - starts[0], 0.05)
        return len(starts) / span

    def _cut(self, now: float) -> None:
        """The learned rate went down."""
        self._cut_at = now
        if self.learned_rps is not None and self.learned_rps < 0.5 * self._peak:
            self.learned_rps = 0.5 * self._peak  # never below half the best the endpoint has done: no stall
        self._tighten(now)
        if self.learned_rps:  # the refused request counts as the last one sent
            self._tat_req = max(self._tat_req, now + 1 / self.learned_rps)

    def _limited(self, now: float) -> None:
        if now < self._deaf_until:  # 429s were shown not to follow our rate: only their Retry-After counts
            self._win_deaf += 1
            return
        self._win_limited += 1
        learned, ceiling = self.learned_rps, self._ceiling
        if learned is None:
            if len(self._starts) < 10:  # too little traffic to learn a rate from: back-off and Retry-After do
                return
            sending = self._send_rate(now)
            current = self.request_rate()
            sending = min(sending, current) if current else sending
            while self._oks and self._oks[0] < now - 1.0:
                self._oks.popleft()
            # at most half of what was sent, at most the success rate of the last second (over at least 0.25 s)
            succeeded = len(self._oks) / max(0.25, now - self._oks[0]) if len(self._oks) >= 10 else sending
            self.learned_rps = max(_MIN_RATE, min(0.5 * sending, succeeded))
            self._cut(now)
            self._win_start, self._win_ok, self._win_limited, self._win_waited = now, 0, 0, False
        elif self._win_limited == 1 and (ceiling is None or learned >= ceiling):
            self.learned_rps = max(_MIN_RATE, learned * _MARGIN)  # the first refusal in a while: ease off now
            self._cut(now)

    def _adapt(self, now: float) -> None:
        span, ok, limited = now - self._win_start, self._win_ok, self._win_limited
        self._win_start, self._win_ok, self._win_limited, self._win_waited, waited = now, 0, 0, False, self._win_waited
        if self._win_deaf:
            if self._win_deaf > 0.3 * (ok + self._win_deaf):  # a storm after all: listen again
                self._deaf_until = float("-inf")
            self._win_deaf = 0
        if span >= 0.5:
            self._peak = max(self._peak, ok / span)
        learned, ceiling = self.learned_rps, self._ceiling
        if learned is None or span <= 0:
            return
        if limited and not ok:
            self.learned_rps = max(_MIN_RATE, learned * 0.5)
            self._cut(now)
            return
        refused = limited / (ok + limited) if limited else 0.0
        if refused >= _NOISE:
            # the endpoint was saturated: what it let through is its limit
            # answers to the last `latency` of the window's requests are still on their way
            effective = max(span - self._latency, 0.25 * span)
            admitted, sent = ok / effective, (ok + limited) / effective
            previous = self._previous  # the first saturated window of this episode lasting a second or more
            if previous is None:
                if span >= _WINDOW_S:
                    self._previous = (admitted, refused, sent)
            elif span >= _WINDOW_S and sent <= 0.9 * previous[2]:
                # if the endpoint admits what it admitted before, sending less refuses this share; if its 429s do
                # not follow our rate (load shedding, random faults), the share stays what it was
                expected = max(0.0, 1 - previous[0] / sent)
                same = 0.6 * previous[1] <= refused <= 1.6 * previous[1]
                if same and abs(refused - previous[1]) < abs(refused - expected):
                    self.learned_rps = self._ceiling = self._previous = None
                    self._deaf_until = now + _DEAF_S
                    return
            # a low count in one window is noise more often than a lower limit: the ceiling comes down slowly
            self._ceiling = max(admitted, 0.95 * ceiling) if ceiling else admitted
            self.learned_rps = max(_MIN_RATE, admitted * _MARGIN)
            if self.learned_rps < learned:
                self._cut(now)
            return
        if not limited:
            self._previous = None  # the episode is over
        if limited and ceiling is not None and learned >= ceiling:  # a few refusals above the known limit: back
            self.learned_rps = max(_MIN_RATE, ceiling * _MARGIN)
            self._cut(now)
        elif waited:  # rate-bound and (almost) never refused: probe for more
            if ceiling is None or learned < 0.9 * ceiling:  # far below any known limit: double per second
                grown = learned * (1 + span)
            elif learned < ceiling:
                grown = learned * (1 + _PROBE_PER_S * span)
            else:
                grown = learned * (1 + _PROBE_ABOVE_PER_S * span)
            self.learned_rps = min(grown, ceiling) if ceiling is not None and learned < ceiling else grown
            others = [r / 60 for r in (self.configured_rpm, self.header_rpm) if r]
            if others and self.learned_rps >= min(others):
                self.learned_rps = None  # the configured or announced limit is the binding one again
