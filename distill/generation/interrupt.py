"""Ctrl-C during the rollouts: the first one drains (nothing paid is lost), the second one aborts at once.

`DrainOnInterrupt` is entered inside the running event loop of `generate`. On the first SIGINT it says so on the
terminal, stops the run (`RunSession.stop`: the workers take no new conversation) and the teacher's engine
(`Engine.stop`: no new request starts, back-off waits end), and lets the requests in flight finish; their answers go
to the ledger, so the resumed run sends none of them again. The run then ends with `RunStopped("interrupted")`,
which says what is saved and the command that resumes. A second SIGINT, or requests still in flight
`teacher.timeout_s` + 1 s after the first, raise `KeyboardInterrupt` at once (answers in flight are then lost, as
with a kill -9). Outside the main thread nothing is installed: Ctrl-C keeps Python's default behaviour.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any, Self

from distill.errors import RunStopped

__all__ = ["INTERRUPTED", "DrainOnInterrupt"]

INTERRUPTED = "interrupted"  # RunStopped.reason of a Ctrl-C


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class DrainOnInterrupt:
    """A context manager: while entered, SIGINT drains the run (see the module doc)."""

    def __init__(self, run: Any, teacher: Any, timeout_s: float) -> None:
        self.run, self.engine, self.timeout_s = run, getattr(teacher, "engine", None), timeout_s
        self.count = 0
        self._previous: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._loop = asyncio.get_running_loop()
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self._loop is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._loop = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1 or self._loop is None:
            _say("\naborted: answers still in flight are lost (the ledger keeps every one that arrived)")
            raise KeyboardInterrupt
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        stop = RunStopped(INTERRUPTED, "interrupted (Ctrl-C)",
                          hint="finished conversations and every paid answer are kept; rerun the same command")
        self.run.stop(stop)
        waiting = ""
        if self.engine is not None:
            self.engine.stop(stop)
            waiting = (f"; waiting for the {self.engine.in_flight} request(s) in flight (at most "
                       f"{self.timeout_s:g} s) to store their answers")
        _say(f"\ninterrupted: starting no new request{waiting}. Ctrl-C again aborts at once")
        assert self._loop is not None
        self._deadline = self._loop.call_later(self.timeout_s + 1.0, self._give_up)

    def _give_up(self) -> None:
        left = self.engine.in_flight if self.engine is not None else 0
        _say(f"\naborted: the run had not wound down {self.timeout_s:g} s after Ctrl-C ({left} request(s) in flight)")
        raise KeyboardInterrupt
