"""A small threaded HTTP(S) server base for the fake Azure endpoints, with fault injection.

Each fake is a `FakeServer` with regex routes. Every server also answers, without auth:

- `POST /_devstack/faults` with `{"method": "POST", "path": "<regex>", "status": 429, "times": 2,
  "retryAfter": 1, "delaySeconds": 0.0, "drop": false}`: arms a fault. The next `times` requests
  whose method equals `method` (any when omitted) and whose path matches `path` (`re.search`, query
  string excluded) get `status` (with an error body in the service's shape and `Retry-After` when
  given) instead of the real handler. `delaySeconds` sleeps first (then the real handler answers when
  there is no `status`); `drop` closes the connection without an answer. `times` null or omitted = 1;
  0 or negative = until `DELETE /_devstack/faults`. Optional `code` / `message` set the error body's
  `error.code` (default: the status phrase, e.g. `TooManyRequests`) and `error.message`. Answers `{"id": n}`.
- `GET /_devstack/faults` (armed faults), `DELETE /_devstack/faults` (disarm all).
- `GET /_devstack/calls`: `[{"method", "path", "status", "fault"}]` of every non-control request in
  order (`status` null when the connection was dropped); `DELETE /_devstack/calls` clears it.

Responses always carry `Content-Length`, so HTTP/1.1 keep-alive (what requests/azure-core use) works.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("devstack.httpfake")

CONTROL_PREFIX = "/_devstack/"


class HttpError(Exception):
    """Raised by a handler to answer with an error in the server's error shape."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class Request:
    method: str
    path: str  # without the query string, percent-decoding not applied
    query: dict[str, str]  # first value of each parameter
    headers: Message
    body: bytes
    match: re.Match[str] | None = None

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else str(value)

    def json(self) -> Any:
        if not self.body:
            raise HttpError(400, "BadRequest", "a JSON body is required")
        try:
            return json.loads(self.body)
        except ValueError:
            raise HttpError(400, "BadRequest", "the body is not valid JSON") from None

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise HttpError(400, "BadRequest", "the body must be a JSON object")
        return data

    @property
    def bearer(self) -> str | None:
        auth = self.header("Authorization")
        if not auth:
            return None
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Response:
    hdrs = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    return Response(status, json.dumps(obj).encode(), hdrs)


def empty_response(status: int = 204, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, b"", dict(headers or {}))


Handler = Callable[[Request], Response]


@dataclass
class Fault:
    id: int
    method: str | None
    path: re.Pattern[str]
    status: int | None
    remaining: int | None  # None: until cleared
    retry_after: float | None
    delay: float
    drop: bool
    code: str | None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "method": self.method, "path": self.path.pattern, "status": self.status,
            "times": self.remaining, "retryAfter": self.retry_after, "delaySeconds": self.delay,
            "drop": self.drop, "code": self.code, "message": self.message,
        }


def parse_fault(spec: Mapping[str, Any], fault_id: int) -> Fault:
    """Validates a fault spec (raises HttpError 400 naming the bad field)."""
    def bad(name: str, why: str) -> HttpError:
        return HttpError(400, "BadRequest", f"fault field {name!r} {why}")

    method = spec.get("method")
    if method is not None and not isinstance(method, str):
        raise bad("method", "must be a string")
    pattern = spec.get("path", ".*")
    if not isinstance(pattern, str):
        raise bad("path", "must be a regex string")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise bad("path", f"is not a valid regex: {exc}") from None
    status = spec.get("status")
    if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
        raise bad("status", "must be an HTTP status code")
    times = spec.get("times", 1)
    if times is None:
        times = 1
    if not isinstance(times, int) or isinstance(times, bool):
        raise bad("times", "must be an integer")
    retry_after = spec.get("retryAfter")
    if retry_after is not None and (not isinstance(retry_after, int | float) or retry_after < 0):
        raise bad("retryAfter", "must be a non-negative number")
    delay = spec.get("delaySeconds", 0.0) or 0.0
    if not isinstance(delay, int | float) or delay < 0:
        raise bad("delaySeconds", "must be a non-negative number")
    drop = spec.get("drop", False)
    if not isinstance(drop, bool):
        raise bad("drop", "must be a boolean")
    code = spec.get("code")
    if code is not None and not isinstance(code, str):
        raise bad("code", "must be a string")
    message = spec.get("message")
    if message is not None and not isinstance(message, str):
        raise bad("message", "must be a string")
    if status is None and not drop and not delay:
        raise bad("status", "is required unless drop or delaySeconds is set")
    return Fault(
        id=fault_id, method=method.upper() if method else None, path=compiled, status=status,
        remaining=times if times > 0 else None, retry_after=retry_after, delay=float(delay),
        drop=drop, code=code, message=message,
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeServer, ssl_context: ssl.SSLContext | None):
        self.fake = fake
        self.ssl_context = ssl_context
        super().__init__(address, _RequestHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake in the connection's own thread, so a slow client cannot stall accept().
        if self.ssl_context is not None:
            request.settimeout(30)
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("%s: TLS handshake failed: %s", self.fake.name, exc)
                request.close()
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("%s: connection error from %s", self.fake.name, client_address, exc_info=True)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s: " + format, self.server.fake.name, *args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        body = self._read_body()
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        request = Request(self.command, parts.path, query, self.headers, body)
        response = self.server.fake.handle(request, self)
        if response is None:  # dropped
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(response.status)
        headers = dict(response.headers)
        for name, value in headers.items():
            self.send_header(name, value)
        if not any(h.lower() == "content-length" for h in headers):
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body and self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch


class FakeServer:
    """A fake service: regex routes over a threaded HTTP(S) server, with a call log and faults."""

    def __init__(self, name: str, *, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.name = name
        self._lock = threading.RLock()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._control: list[tuple[str, re.Pattern[str], Handler]] = []
        self._calls: list[dict[str, Any]] = []
        self._faults: list[Fault] = []
        self._fault_ids = 0
        self._httpd = _Server((host, port), self, ssl_context)
        self._thread: threading.Thread | None = None
        self.scheme = "https" if ssl_context is not None else "http"
        self.control("POST", "/_devstack/faults", self._post_fault)
        self.control("GET", "/_devstack/faults", self._get_faults)
        self.control("DELETE", "/_devstack/faults", self._delete_faults)
        self.control("GET", "/_devstack/calls", self._get_calls)
        self.control("DELETE", "/_devstack/calls", self._delete_calls)

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """`scheme://host:port` without a trailing slash."""
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> str:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"devstack-{self.name}", daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- routes ----------------------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """`pattern` must match the whole path (case-insensitive); groups land in `request.match`."""
        self._routes.append((method.upper(), re.compile(pattern, re.IGNORECASE), handler))

    def control(self, method: str, pattern: str, handler: Handler) -> None:
        """A `/_devstack/...` route: no auth, no faults, not in the call log."""
        self._control.append((method.upper(), re.compile(pattern), handler))

    def error_response(self, status: int, code: str, message: str,
                       headers: Mapping[str, str] | None = None) -> Response:
        """The service's error shape; ARM and Key Vault both use `{"error": {"code", "message"}}`."""
        return json_response(status, {"error": {"code": code, "message": message}}, headers)

    # --- request handling ------------------------------------------------------------------------

    def handle(self, request: Request, handler: BaseHTTPRequestHandler | None = None) -> Response | None:
        if request.path.startswith(CONTROL_PREFIX):
            return self._run(self._control, request)
        fault = self._take_fault(request)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                self._record(request, None, fault=True)
                return None
            if fault.status is not None:
                headers: dict[str, str] = {}
                if fault.retry_after is not None:
                    ra = fault.retry_after
                    headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
                reason = _reason(fault.status)
                response = self.error_response(fault.status, fault.code or reason,
                                               fault.message or f"injected fault ({self.name})", headers)
                self._record(request, response.status, fault=True)
                return response
        response = self._run(self._routes, request)
        self._record(request, response.status, fault=False)
        return response

    def _run(self, routes: list[tuple[str, re.Pattern[str], Handler]], request: Request) -> Response:
        path_matched = False
        for method, pattern, handler in routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            path_matched = True
            if method != request.method:
                continue
            request.match = match
            try:
                return handler(request)
            except HttpError as exc:
                return self.error_response(exc.status, exc.code, exc.message, exc.headers)
            except Exception:
                log.exception("%s: handler for %s %s failed", self.name, request.method, request.path)
                return self.error_response(500, "InternalServerError", "the fake crashed (see its log)")
        if path_matched:
            return self.error_response(405, "MethodNotAllowed", f"{request.method} not allowed here")
        return self.error_response(404, "NotFound", f"no route for {request.method} {request.path}")

    def _take_fault(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method is not None and fault.method != request.method:
                    continue
                if not fault.path.search(request.path):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def _record(self, request: Request, status: int | None, *, fault: bool) -> None:
        with self._lock:
            self._calls.append({"method": request.method, "path": request.path, "status": status,
                                "fault": fault})

    # --- in-process API (what the control routes do) ---------------------------------------------

    def add_fault(self, spec: Mapping[str, Any]) -> int:
        with self._lock:
            self._fault_ids += 1
            fault = parse_fault(spec, self._fault_ids)
            self._faults.append(fault)
            return fault.id

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._calls]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def _post_fault(self, request: Request) -> Response:
        return json_response(201, {"id": self.add_fault(request.json_object())})

    def _get_faults(self, request: Request) -> Response:
        with self._lock:
            return json_response(200, [f.to_dict() for f in self._faults])

    def _delete_faults(self, request: Request) -> Response:
        self.clear_faults()
        return empty_response(204)

    def _get_calls(self, request: Request) -> Response:
        return json_response(200, self.calls())

    def _delete_calls(self, request: Request) -> Response:
        self.clear_calls()
        return empty_response(204)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")
    except ValueError:
        return f"Status{status}"
