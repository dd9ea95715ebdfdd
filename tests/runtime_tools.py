"""Python tools for tests/test_tool_runtime.py: they record how they were called (threads, overlap)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

STATE: dict[str, object] = {"active": 0, "most": 0, "threads": set(), "barrier": None}
_LOCK = threading.Lock()


def overlap(query: str) -> str:
    """Counts concurrent entries and waits at the test's barrier: it returns only when enough calls overlap."""
    with _LOCK:
        STATE["active"] = int(STATE["active"]) + 1  # type: ignore[call-overload]
        STATE["most"] = max(int(STATE["most"]), int(STATE["active"]))  # type: ignore[call-overload]
        STATE["threads"].add(threading.get_ident())  # type: ignore[union-attr]
    try:
        barrier = STATE["barrier"]
        if isinstance(barrier, threading.Barrier):
            barrier.wait()
        return f"seen {query}"
    finally:
        with _LOCK:
            STATE["active"] = int(STATE["active"]) - 1  # type: ignore[call-overload]


def nothing(query: str) -> None:
    """Returns None (forgot the return)."""


def broken(query: str) -> str:
    """Always raises."""
    raise RuntimeError("the calculator is unplugged")


class _Thing:
    pass


def thing(query: str) -> object:
    """Returns an object whose print is no observation."""
    return _Thing()


def numbers(query: str) -> list[int]:
    """A JSON value: printed as LangChain prints it."""
    return [1, 2, 3]


def forever(query: str) -> str:
    """Never returns; says so in the MARKER file first."""
    Path(os.environ["MARKER"]).write_text("entered", encoding="utf-8")
    threading.Event().wait()
    return "never"
