"""A lean HTTP/1.1 server for the LLM-D router: asyncio Protocols and ``httptools``, no ASGI on the hot path.

Follows the design of ``serving.platform.local.gateway``'s client side, which exists for the same reason:
a generic server (uvicorn) spent a quarter of the router's CPU, half of it writing each response's head
and body in two syscalls. Here:

* connections are kept alive; requests on one connection run one at a time, in order (pipelining-safe:
  a request parsed while another runs waits in a short queue, and reading pauses when it grows);
* request bodies (Content-Length or chunked) are collected before the handler runs;
* a complete response is one ``transport.write`` (head and body together); a streamed one is chunked
  and each piece is written as it arrives, so SSE reaches the client event by event;
* the client closing its side cancels the running handler (and so the request to the engine);
* malformed HTTP gets a 400 and the connection closes;
* ``stop`` stops accepting, closes idle connections and lets in-flight requests finish within a grace
  period before cancelling them.

A handler is ``async def handler(request: HttpRequest, out: Writer) -> None``; ``AsgiBridge`` turns an
ASGI app into one, for the paths that are not hot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol

import httptools

log = logging.getLogger(__name__)

# Requests parsed ahead of the running one before the connection stops reading.
PIPELINE_LIMIT = 16
# Request bodies above this are refused with 413 (batch inputs are the large ones).
MAX_BODY = 256 << 20
# A connection with no request in flight for this long is closed.
IDLE_TIMEOUT = 60.0

_REASONS = {100: b"Continue", 200: b"OK", 201: b"Created", 202: b"Accepted", 204: b"No Content",
            301: b"Moved Permanently", 302: b"Found", 304: b"Not Modified", 307: b"Temporary Redirect",
            400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
            405: b"Method Not Allowed", 408: b"Request Timeout", 413: b"Content Too Large",
            422: b"Unprocessable Content", 429: b"Too Many Requests", 500: b"Internal Server Error",
            501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout"}
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))
    return line


class _Date:
    """The Date header, formatted once a second rather than per response."""

    __slots__ = ("second", "header")

    def __init__(self) -> None:
        self.second = -1
        self.header = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.header = b"date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode() + b"\r\n"
        return self.header


_date = _Date()


class Reply(Protocol):
    """What ``Writer.reply`` sends: a Starlette ``Response`` fits (``body``) and so does a
    ``StreamingResponse`` (``body_iterator``)."""

    status_code: int
    raw_headers: list[tuple[bytes, bytes]]


class HttpRequest:
    """One parsed request; header names are lower-case bytes, values as sent."""

    __slots__ = ("method", "path", "query", "headers", "body", "http_version", "keep_alive", "expect_continue",
                 "_parts", "_size", "_url")

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        self.query = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.http_version = "1.1"
        self.keep_alive = True
        self.expect_continue = False
        self._parts: list[bytes] = []
        self._size = 0
        self._url = b""

    def header(self, name: bytes) -> str | None:
        """The first value of ``name`` (lower-case), decoded as latin-1."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


Handler = Callable[[HttpRequest, "Writer"], Awaitable[None]]


class Writer:
    """The response side of one request. Either ``send`` (a whole response, one write) or ``start``,
    then ``chunk`` per piece and ``end``; ``reply`` sends a Starlette-style response object."""

    __slots__ = ("conn", "head_only", "keep_alive", "http10", "started", "finished", "chunked")

    def __init__(self, conn: _Connection, request: HttpRequest) -> None:
        self.conn = conn
        self.head_only = request.method == "HEAD"
        self.keep_alive = request.keep_alive
        self.http10 = request.http_version == "1.0"
        self.started = False
        self.finished = False
        self.chunked = False

    def _head(self, status: int, headers: Iterable[tuple[bytes, bytes]], framing: bytes) -> bytes:
        parts = [_status_line(status)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(_date.get())
        parts.append(framing)
        if not self.keep_alive or self.conn.closing:
            self.keep_alive = False
            parts.append(b"connection: close\r\n")
        elif self.http10:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def send(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes,
             has_length: bool = False) -> None:
        """A whole response in one write; ``has_length`` when ``headers`` carry its content-length."""
        framing = b"" if has_length else b"content-length: %d\r\n" % len(body)
        head = self._head(status, headers, framing)
        self.started = self.finished = True
        self.conn.write(head if self.head_only or status == 304 else head + body)

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Begin a streamed response: chunked unless ``headers`` carry a content-length (or HTTP/1.0,
        which is close-delimited)."""
        framing = b""
        if not any(name == b"content-length" for name, _ in headers):
            if self.http10:
                self.keep_alive = False
            else:
                self.chunked = True
                framing = b"transfer-encoding: chunked\r\n"
        self.started = True
        self.conn.write(self._head(status, headers, framing))

    async def chunk(self, data: bytes) -> None:
        """One piece of a streamed body, written now; waits while the client reads slower than we write."""
        if data and not self.head_only:
            self.conn.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
        if self.conn.write_paused:
            await self.conn.drained()

    def end(self) -> None:
        if not self.finished:
            self.finished = True
            if self.chunked and not self.head_only:
                self.conn.write(b"0\r\n\r\n")

    async def reply(self, response: Any) -> None:
        """Send a Starlette ``Response`` (one write) or ``StreamingResponse`` (chunk per item)."""
        iterator: AsyncIterator[Any] | None = getattr(response, "body_iterator", None)
        if iterator is None:
            self.send(response.status_code, response.raw_headers, response.body, has_length=True)
            return
        self.start(response.status_code, response.raw_headers)
        charset = getattr(response, "charset", "utf-8")
        try:
            async for item in iterator:
                await self.chunk(item if isinstance(item, bytes) else item.encode(charset))
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()  # on cancellation: runs the generator's cleanup (the upstream is closed)
        self.end()

    @property
    def disconnected(self) -> bool:
        return self.conn.closed


class HttpServer:
    """``start`` binds and serves; ``stop`` shuts down gracefully."""

    def __init__(self, handler: Handler, *, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.closing = False

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(lambda: _Connection(self), host, port, reuse_address=True,
                                                      backlog=2048)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = self._loop.call_later(self.idle_timeout / 4, self._sweep)
        return self.port

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting; idle connections close now, busy ones after their current response; whatever
        still runs after ``grace`` seconds is cancelled."""
        if self._server is None:
            return
        self.closing = True
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._conns):
            if conn.idle():
                conn.close()
        deadline = time.monotonic() + grace
        while any(not c.closed for c in self._conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self._conns):
            conn.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None

    def _sweep(self) -> None:
        """Close idle keep-alive connections (one timer for all of them)."""
        assert self._loop is not None
        cutoff = self._loop.time() - self.idle_timeout
        for conn in list(self._conns):
            if conn.idle() and conn.last_active < cutoff:
                conn.close()
        self._sweeper = self._loop.call_later(self.idle_timeout / 4, self._sweep)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and runs them one at a time, in arrival order."""

    __slots__ = ("server", "loop", "transport", "parser", "current", "queue", "task", "closed", "paused",
                 "write_paused", "_drain", "_lost", "last_active", "too_large")

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server._loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.current: HttpRequest | None = None  # being parsed
        self.queue: deque[HttpRequest] = deque()  # parsed, waiting for the running one
        self.task: asyncio.Task[None] | None = None  # the running request
        self.closed = False
        self.paused = False
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None  # made only when someone waits for the close
        self.last_active = self.loop.time()  # type: ignore[union-attr]
        self.too_large = False

    @property
    def closing(self) -> bool:
        return self.server.closing

    def idle(self) -> bool:
        return self.task is None and self.current is None and not self.queue

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._conns.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._error(501, b"upgrades are not supported")
        except httptools.HttpParserError:
            self._error(400, b"malformed HTTP request")

    def connection_lost(self, exc: Exception | None) -> None:
        # EOF lands here too (eof_received is not overridden): a client that closes its side has left,
        # so its running request is cancelled, which closes the request to the engine.
        self.closed = True
        self.server._conns.discard(self)
        self.queue.clear()
        self.current = None
        if self.task is not None:
            self.task.cancel()
        for future in (self._drain, self._lost):
            if future is not None and not future.done():
                future.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.current = HttpRequest()
        self.too_large = False

    def on_url(self, url: bytes) -> None:
        self.current._url += url  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name.lower(), value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        parser = self.parser
        request.method = parser.get_method().decode("ascii")
        request.http_version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        url = httptools.parse_url(request._url)
        request.path = url.path.decode("utf-8", "replace") if url.path else "/"
        request.query = url.query or b""
        for name, value in request.headers:
            if name == b"expect" and value.lower() == b"100-continue":
                request.expect_continue = True
                if self.task is None and not self.queue:  # not while another response is on the wire
                    request.expect_continue = False
                    self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        request = self.current
        assert request is not None
        request._size += len(body)
        if request._size > MAX_BODY:
            self.too_large = True
            request._parts.clear()
            return
        request._parts.append(body)

    def on_message_complete(self) -> None:
        request = self.current
        self.current = None
        assert request is not None
        parts = request._parts
        request.body = parts[0] if len(parts) == 1 else b"".join(parts)
        request._parts = []
        if self.too_large:
            request.body = b""
            request.keep_alive = False
            request.method = "!413"
        self.queue.append(request)
        if self.task is None:
            self._next()
        elif len(self.queue) >= PIPELINE_LIMIT and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    # request running

    def _next(self) -> None:
        request = self.queue.popleft()
        if self.paused and len(self.queue) < PIPELINE_LIMIT // 2:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if request.expect_continue:  # its body is in already: the client did not wait for the 100
            request.expect_continue = False
        self.task = self.loop.create_task(self._run(request))  # type: ignore[union-attr]

    async def _run(self, request: HttpRequest) -> None:
        out = Writer(self, request)
        try:
            if request.method == "!413":
                out.send(413, [(b"content-type", b"application/json")], b'{"error":"request body too large"}')
            else:
                await self.server.handler(request, out)
            if not out.started:
                out.send(500, [(b"content-type", b"application/json")], b'{"error":"no response"}')
            elif not out.finished:
                out.end()
        except asyncio.CancelledError:
            self.task = None
            if not self.closed:  # cancelled by a shutdown past its grace period
                self.close()
            raise
        except Exception:  # noqa: BLE001 - one failed request must not take the connection's others down
            log.exception("request %s %s failed", request.method, request.path)
            if not out.started:
                out.keep_alive = False
                out.send(500, [(b"content-type", b"application/json")], b'{"error":"internal server error"}')
            else:
                out.keep_alive = False  # a broken stream: closing tells the client it is incomplete
        self.task = None
        self.last_active = self.loop.time()  # type: ignore[union-attr]
        if self.closed:
            return
        if not out.keep_alive or self.server.closing:
            self.close()
        elif self.queue:
            self._next()
        else:
            pending = self.current
            if pending is not None and pending.expect_continue:
                pending.expect_continue = False
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # used by writers

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    async def drained(self) -> None:
        if self.write_paused and not self.closed:
            self._drain = self.loop.create_future()  # type: ignore[union-attr]
            await self._drain

    async def lost(self) -> None:
        """Returns once the connection is gone."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._lost is None:
            self._lost = self.loop.create_future()  # type: ignore[union-attr]
        await asyncio.shield(self._lost)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]  # flushes what is buffered first

    def abort(self) -> None:
        """Shutdown past the grace period: cancel what runs and drop the connection."""
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    def _error(self, status: int, message: bytes) -> None:
        if self.task is None and not self.closed:
            body = b'{"error":"%s"}' % message
            self.write(_status_line(status) + b"content-type: application/json\r\ncontent-length: %d\r\n"
                       b"connection: close\r\n\r\n%s" % (len(body), body))
        self.queue.clear()
        self.close()


class AsgiBridge:
    """Runs an ASGI 3 HTTP app as a handler: for the paths that are not hot (models, metrics, health,
    batches). The app's body messages are written as they come; one without ``more_body`` right after
    the start is sent with its head in one write."""

    def __init__(self, app: Callable[..., Awaitable[None]], server: dict[str, Any] | None = None) -> None:
        self.app = app
        self.server = server

    async def __call__(self, request: HttpRequest, out: Writer) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": request.http_version,
            "method": request.method, "scheme": "http", "path": request.path, "raw_path": request.path.encode(),
            "query_string": request.query, "root_path": "", "headers": request.headers,
            "server": self.server, "client": None,
        }
        body_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            # Afterwards only a disconnect can come: wait for the connection to close.
            await out.conn.lost()
            return {"type": "http.disconnect"}

        start: dict[str, Any] | None = None

        async def send(message: dict[str, Any]) -> None:
            nonlocal start
            kind = message["type"]
            if kind == "http.response.start":
                start = message
                return
            if kind != "http.response.body" or start is None or out.finished:
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not out.started:
                headers = [(bytes(n).lower(), bytes(v)) for n, v in start.get("headers", ())]
                if not more:
                    has_length = any(n == b"content-length" for n, _ in headers)
                    out.send(start["status"], headers, body, has_length=has_length)
                    return
                out.start(start["status"], headers)
            await out.chunk(body)
            if not more:
                out.end()

        await self.app(scope, receive, send)
