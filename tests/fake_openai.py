"""A small OpenAI-compatible HTTP server on 127.0.0.1 for tests: scripted answers, injected faults, a request log.

Tests register handlers per route (`server.route("POST", r"/v1/chat/completions", handler)`); a handler receives a
`FakeRequest` and returns a `FakeResponse` (status, JSON body, headers, a delay before answering, or a dropped
connection). `chat_script` is the default chat-completions handler: a callable `(body) -> FakeResponse | str`, where a
string is answered as the assistant's content. Every request is logged in `server.requests`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["FakeOpenAI", "FakeRequest", "FakeResponse", "RpmLimit", "chat_completion"]


@dataclass
class FakeRequest:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)
    query: str = ""  # the raw query string, without "?"

    def json(self) -> Any:
        """The body parsed as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None


@dataclass
class FakeResponse:
    """What to answer: JSON (or raw bytes), after `delay` seconds; `drop=True` closes the connection unanswered."""

    status: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes | None = None
    drop: bool = False


def chat_completion(
    content: str | None,
    *,
    finish_reason: str = "stop",
    model: str = "fake-model",
    tool_calls: list[dict[str, Any]] | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A chat.completion JSON body."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage or {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }


Handler = Callable[[FakeRequest], FakeResponse]


class FakeOpenAI:
    """The server. Use as a context manager or call start()/stop()."""

    def __init__(self, chat_script: Callable[[dict[str, Any]], FakeResponse | str] | None = None) -> None:
        self.requests: list[FakeRequest] = []
        self.chat_script = chat_script or (lambda body: "hello")
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._lock = threading.Lock()
        self.route("POST", r"/v1/chat/completions", self._chat)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- routes ---------------------------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Register a handler (later registrations win)."""
        self._routes.insert(0, (method, re.compile(pattern + r"$"), handler))

    def _chat(self, request: FakeRequest) -> FakeResponse:
        answer = self.chat_script(request.json())
        return FakeResponse(json=chat_completion(answer)) if isinstance(answer, str) else answer

    def requests_to(self, path: str) -> list[FakeRequest]:
        """Logged requests whose path ends with `path`."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith(path)]

    # -- lifecycle --------------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The OpenAI base URL to give a client."""
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        """Listen on a free port of 127.0.0.1 in a background thread."""
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms delayed-ACK stalls

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                request = FakeRequest(self.command, path, dict(self.headers), body, query=query)
                with server._lock:
                    server.requests.append(request)
                handler = next(
                    (h for m, p, h in server._routes if m == self.command and p.search(request.path)), None
                )
                response = handler(request) if handler else FakeResponse(404, {"error": {"message": "no route"}})
                if response.delay:
                    time.sleep(response.delay)
                if response.drop:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                    return
                payload = response.body if response.body is not None else json.dumps(response.json).encode()
                try:
                    self.send_response(response.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for key, value in response.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = _handle

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # concurrent clients on a loaded machine: no refused connections

            def handle_error(self, request: Any, client_address: Any) -> None:  # clients that hang up are normal
                pass

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RpmLimit:
    """An endpoint's requests-per-minute limit, enforced like OpenAI's: a token bucket of `burst` requests refilled
    at `rpm / 60` per second. A request over the limit is answered 429 with `retry-after-ms` (the time until the
    next request would be admitted); every answer carries `x-ratelimit-limit-requests` / `-remaining-requests`.
    `first_429` refuses the very first request whatever the bucket says. `counts` tallies what was answered."""

    def __init__(self, handler: Handler, rpm: int, *, burst: int = 1, first_429: bool = False) -> None:
        self.handler, self.rpm, self.burst, self.first_429 = handler, rpm, burst, first_429
        self.counts: dict[int, int] = {}
        self._tokens, self._last = float(burst), time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, request: FakeRequest) -> FakeResponse:
        rate = self.rpm / 60
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * rate)
            self._last = now
            refused = self._tokens < 1 or (self.first_429 and not self.counts)
            if not refused:
                self._tokens -= 1
            headers = {"x-ratelimit-limit-requests": str(self.rpm),
                       "x-ratelimit-remaining-requests": str(max(0, int(self._tokens)))}
            if refused:
                wait_ms = max(1, int((1 - max(self._tokens, 0.0)) / rate * 1000))
                self.counts[429] = self.counts.get(429, 0) + 1
                return FakeResponse(status=429, json={"error": {"message": "Rate limit reached for requests"}},
                                    headers={**headers, "retry-after-ms": str(wait_ms)})
        response = self.handler(request)
        with self._lock:
            self.counts[response.status] = self.counts.get(response.status, 0) + 1
        response.headers = {**headers, **response.headers}
        return response
