"""A small OpenAI-compatible HTTP server on 127.0.0.1 for tests: scripted answers, injected faults, a request log.

Tests register handlers per route (`server.route("POST", r"/v1/chat/completions", handler)`); a handler receives a
`FakeRequest` and returns a `FakeResponse` (status, JSON body, headers, a delay before answering, or a dropped
connection). `chat_script` is the default chat-completions handler: a callable `(body) -> FakeResponse | str`, where a
string is answered as the assistant's content. Every request is logged in `server.requests`.

`FakeBatchAPI(server, answer)` adds OpenAI's Files and Batch API (`POST /v1/files`, `GET /v1/files/{id}/content`,
`POST /v1/batches`, `GET /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`): each retrieve
moves a batch one state on (validating -> in_progress -> finalizing -> completed, or expired / failed as the test
scripts it), the rows are answered when it reaches finalizing, the output file is shuffled, failed rows (any status
the test scripts, e.g. 500) and `batch_expired` rows go to the error file; what was answered is counted.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["FakeBatchAPI", "FakeOpenAI", "FakeRequest", "FakeResponse", "RpmLimit", "chat_completion"]


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


def _multipart(request: FakeRequest) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    from email.parser import BytesParser
    from email.policy import default

    ctype = next(v for k, v in request.headers.items() if k.lower() == "content-type")
    message = BytesParser(policy=default).parsebytes(f"content-type: {ctype}\r\n\r\n".encode() + request.body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


class FakeBatchAPI:
    """OpenAI's Files and Batch API on a FakeOpenAI (see the module doc).

    `answer(body) -> chat.completion dict`; `fate(n) -> "completed" | "expired" | "failed"` for the n-th batch created
    (1-based); `row_fault(body, seen) -> status | None` fails a row with that HTTP status (`seen`: how often this body
    was run before); an expired batch answers the rows at even positions of its input and expires the others. Hooks `on_create(batch)` / `on_retrieve(batch)` run before answering.
    """

    STATES = ("validating", "in_progress", "finalizing")

    def __init__(self, server: FakeOpenAI, answer: Callable[[dict[str, Any]], dict[str, Any]], *,
                 seed: int = 0) -> None:
        self.server, self.answer = server, answer
        self.fate: Callable[[int], str] = lambda n: "completed"
        self.row_fault: Callable[[dict[str, Any], int], int | None] = lambda body, seen: None
        self.on_create: Callable[[dict[str, Any]], None] = lambda batch: None
        self.on_retrieve: Callable[[dict[str, Any]], None] = lambda batch: None
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.answered: dict[str, int] = {}  # canonical body -> times answered 200 (paid)
        self.seen: dict[str, int] = {}  # canonical body -> times run (any outcome)
        self.paid_usage: list[dict[str, int]] = []  # usage of every answered row
        self.created_inputs: list[str] = []  # sha256 of each created batch's input file
        self.bodies: list[dict[str, Any]] = []  # every request body submitted in a batch
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._n = 0
        server.route("POST", r"/v1/files", self._upload)
        server.route("GET", r"/v1/files/(?P<id>[^/]+)/content", self._content)
        server.route("POST", r"/v1/batches", self._create)
        server.route("GET", r"/v1/batches", self._list)
        server.route("GET", r"/v1/batches/[^/]+", self._retrieve)
        server.route("POST", r"/v1/batches/[^/]+/cancel", self._cancel)

    # -- files ------------------------------------------------------------------------------------------------------
    def _new_file(self, name: str, content: bytes, purpose: str) -> dict[str, Any]:
        with self._lock:
            self._n += 1
            file = {"id": f"file-{self._n:04d}", "object": "file", "bytes": len(content), "created_at": int(time.time()),
                    "filename": name, "purpose": purpose, "status": "processed"}
            self.files[file["id"]], self.contents[file["id"]] = file, content
        return file

    def _upload(self, request: FakeRequest) -> FakeResponse:
        fields = _multipart(request)
        name, content = fields["file"]
        purpose = fields["purpose"][1].decode()
        if purpose != "batch":
            return FakeResponse(400, {"error": {"message": f"purpose {purpose!r}: this fake takes batch files only"}})
        return FakeResponse(json=self._new_file(name or "input.jsonl", content, purpose))

    def _content(self, request: FakeRequest) -> FakeResponse:
        file_id = request.path.split("/")[-2]
        if file_id not in self.contents:
            return FakeResponse(404, {"error": {"message": f"no file {file_id}"}})
        return FakeResponse(body=self.contents[file_id])

    # -- batches ----------------------------------------------------------------------------------------------------
    def _create(self, request: FakeRequest) -> FakeResponse:
        params = request.json()
        if params.get("completion_window") != "24h" or params.get("endpoint") != "/v1/chat/completions":
            return FakeResponse(400, {"error": {"message": "completion_window must be 24h, endpoint chat completions"}})
        content = self.contents.get(params["input_file_id"])
        if content is None:
            return FakeResponse(404, {"error": {"message": "no such input file"}})
        with self._lock:
            self._n += 1
            batch = {
                "id": f"batch_{self._n:04d}", "object": "batch", "endpoint": params["endpoint"], "errors": None,
                "input_file_id": params["input_file_id"], "completion_window": "24h", "status": "validating",
                "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": params.get("metadata"),
            }
            self.batches[batch["id"]] = batch
            self.created_inputs.append(hashlib.sha256(content).hexdigest())
            batch["_fate"] = self.fate(len(self.created_inputs))
        self.on_create(batch)
        return FakeResponse(json=self._public(batch))

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _list(self, request: FakeRequest) -> FakeResponse:
        data = [self._public(b) for b in reversed(list(self.batches.values()))]  # newest first, as OpenAI lists
        return FakeResponse(json={"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None, "has_more": False})

    def _retrieve(self, request: FakeRequest) -> FakeResponse:
        batch = self.batches.get(request.path.split("/")[-1])
        if batch is None:
            return FakeResponse(404, {"error": {"message": "no such batch"}})
        self.on_retrieve(batch)
        with self._lock:
            self._advance(batch)
        return FakeResponse(json=self._public(batch))

    def _cancel(self, request: FakeRequest) -> FakeResponse:
        batch = self.batches.get(request.path.split("/")[-2])
        if batch is None:
            return FakeResponse(404, {"error": {"message": "no such batch"}})
        with self._lock:
            if batch["status"] in self.STATES:
                batch["status"] = "cancelling"
        return FakeResponse(json=self._public(batch))

    def _advance(self, batch: dict[str, Any]) -> None:
        status = batch["status"]
        if status == "cancelling":
            batch["status"] = "cancelled"
            return
        if status not in self.STATES:
            return
        fate = batch["_fate"]
        if status == "validating":
            if fate == "failed":
                batch["status"] = "failed"
                batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "line": 1,
                                                               "message": "scripted: the input file is invalid"}]}
                return
            batch["status"] = "in_progress"
            lines = self.contents[batch["input_file_id"]].decode().splitlines()
            batch["request_counts"] = {"total": len(lines), "completed": 0, "failed": 0}
        elif status == "in_progress":
            self._run(batch, expire=fate == "expired")
            batch["status"] = "finalizing"
        else:
            batch["status"] = "expired" if fate == "expired" else "completed"

    def _run(self, batch: dict[str, Any], *, expire: bool) -> None:
        """Answer (or fail, or expire) every row; write the output and error files."""
        outputs: list[str] = []
        errors: list[str] = []
        counts = batch["request_counts"]
        for n, line in enumerate(self.contents[batch["input_file_id"]].decode().splitlines()):
            row = json.loads(line)
            body = row["body"]
            self.bodies.append(body)
            if expire and n % 2:
                errors.append(json.dumps({"id": f"batch_req_{n}", "custom_id": row["custom_id"], "response": None,
                                          "error": {"code": "batch_expired", "message": "not run before expiry"}}))
                continue
            canon = json.dumps(body, sort_keys=True)
            seen = self.seen.get(canon, 0)
            self.seen[canon] = seen + 1
            fault = self.row_fault(body, seen)
            if fault is not None:
                counts["failed"] += 1
                response = {"status_code": fault, "request_id": f"req_{n}",
                            "body": {"error": {"message": f"scripted HTTP {fault}", "type": "server_error"}}}
                errors.append(json.dumps({"id": f"batch_req_{n}", "custom_id": row["custom_id"],
                                          "response": response, "error": None}))
                continue
            answer = self.answer(body)
            self.answered[canon] = self.answered.get(canon, 0) + 1
            self.paid_usage.append(answer.get("usage") or {})
            counts["completed"] += 1
            outputs.append(json.dumps({"id": f"batch_req_{n}", "custom_id": row["custom_id"], "error": None,
                                       "response": {"status_code": 200, "request_id": f"req_{n}", "body": answer}}))
        self._rng.shuffle(outputs)  # output order is not input order
        if outputs:
            batch["output_file_id"] = self._new_file("output.jsonl", ("\n".join(outputs) + "\n").encode(),
                                                     "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._new_file("errors.jsonl", ("\n".join(errors) + "\n").encode(),
                                                    "batch_output")["id"]

    def repeated(self) -> list[str]:
        """Bodies answered (paid) more than once."""
        return [body for body, n in self.answered.items() if n > 1]


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
