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
* framing comes only from what this server parsed: ambiguous framing (Content-Length with
  Transfer-Encoding, two lengths, a coding other than chunked, obsolete line folding, bare LF or CR, two
  Hosts) is refused before any handler runs, and trailer fields never become headers;
* limits: a body over ``RequestLimits.max_body`` is 413 (as soon as its length says so, before it is
  read), a head over ``max_head`` 431, a head not complete within ``head_timeout`` or a body with no byte
  for ``body_timeout`` 408;
* a refusal (400/408/413/431) is answered in order after whatever was pipelined before it, then the
  connection is half-closed and what the client still sends is read and dropped for a moment, so that
  the client sees the answer rather than a reset;
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
from dataclasses import dataclass
from typing import Any, Protocol

import httptools
import orjson

from serving.http import (
    LAST_CHUNK,
    UNCONNECTED,
    FlowControl,
    Pause,
    RequestFraming,
    RequestRefused,
    chunk,
    status_line,
    stream_transport,
)

log = logging.getLogger(__name__)

# Requests parsed ahead of the running one before the connection stops reading.
PIPELINE_LIMIT = 16
# A connection with no request in flight for this long is closed.
IDLE_TIMEOUT = 60.0
# After a refusal: how long what the client still sends is read and dropped before the connection closes
# (closing with unread input makes the kernel send a reset, which can destroy the answer in flight).
LINGER_S = 2.0


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one request may ask of the router; the defaults are the embedded platform's
    (``serving.platform.local.limits.PlatformLimits``), so the router behind the gateway refuses nothing the
    gateway let through. Batch inputs are the large bodies: 100 MiB is ~2 KB per line at the 50,000-line
    batch limit."""

    max_body: int = 100 << 20  # bytes of request body; larger is 413
    max_head: int = 64 << 10  # bytes of request line and headers; larger is 431
    head_timeout: float = 30.0  # seconds from a head's first byte to its end; then 408
    body_timeout: float = 60.0  # seconds a body may go without a byte arriving; then 408


class _Date:
    """The Date header, formatted once a second rather than per response."""

    __slots__ = ("header", "second")

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

    __slots__ = (
        "_head_size",
        "_parts",
        "_size",
        "_url",
        "body",
        "expect_continue",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "refusal",
    )

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        self.query = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.http_version = "1.1"
        self.keep_alive = True
        self.expect_continue = False
        self.refusal: RequestRefused | None = None  # set: not a request, the refusal to answer in its place
        self._parts: list[bytes] = []
        self._size = 0
        self._url = b""
        self._head_size = 0

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

    __slots__ = ("chunked", "conn", "finished", "head_only", "http10", "keep_alive", "started")

    def __init__(self, conn: _Connection, request: HttpRequest) -> None:
        self.conn = conn
        self.head_only = request.method == "HEAD"
        self.keep_alive = request.keep_alive
        self.http10 = request.http_version == "1.0"
        self.started = False
        self.finished = False
        self.chunked = False

    def _head(self, status: int, headers: Iterable[tuple[bytes, bytes]], framing: bytes) -> bytes:
        parts = [status_line(status)]
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
            self.conn.write(chunk(data) if self.chunked else data)
        if self.conn.flow.write_paused:
            await self.conn.flow.drain()

    def end(self) -> None:
        if not self.finished:
            self.finished = True
            if self.chunked and not self.head_only:
                self.conn.write(LAST_CHUNK)

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

    def __init__(self, handler: Handler, *, idle_timeout: float = IDLE_TIMEOUT,
                 limits: RequestLimits = RequestLimits()) -> None:
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.limits = limits
        # One timer sweeps every connection; often enough that no timeout overshoots by more than a quarter.
        self._sweep_every = min(idle_timeout, limits.head_timeout, limits.body_timeout) / 4
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
        self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)
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
        busy = [asyncio.ensure_future(c.lost()) for c in self._conns if not c.closed]
        if busy:  # each closes after its current response
            await asyncio.wait(busy, timeout=grace)
            for waiter in busy:
                waiter.cancel()
        for conn in list(self._conns):
            conn.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None

    def _sweep(self) -> None:
        """One timer for all connections: close idle keep-alive ones, answer 408 where a request head or
        body is overdue. Only while nothing runs on the connection: then the wait is on the client."""
        assert self._loop is not None
        now = self._loop.time()
        limits = self.limits
        for conn in list(self._conns):
            if conn.task is not None or conn.queue or conn.closed or conn.refused:
                continue
            if conn.current is None:
                if conn.last_active < now - self.idle_timeout:
                    conn.close()
            elif not conn.in_body:
                if max(conn.head_started, conn.last_active) < now - limits.head_timeout:
                    conn.refuse(RequestRefused(408, f"the request head was not complete within {limits.head_timeout:g} s"))
            elif max(conn.last_read, conn.last_active) < now - limits.body_timeout:
                conn.refuse(RequestRefused(408, f"no byte of the request body arrived for {limits.body_timeout:g} s"))
        self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and runs them one at a time, in arrival order."""

    __slots__ = ("_linger", "_lost", "begun", "closed", "current", "flow", "head_bytes", "head_started", "in_body",
                 "last_active", "last_read", "last_request", "line_bytes", "loop", "parser", "queue", "refused", "server",
                 "task", "transport")

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        loop = server._loop
        assert loop is not None  # connections exist only while the server is started
        self.loop = loop
        self.transport = UNCONNECTED
        self.flow = FlowControl(UNCONNECTED)  # reading pauses for a long pipeline and while a refusal waits
        self.parser = httptools.HttpRequestParser(self)
        self.current: HttpRequest | None = None  # being parsed
        self.queue: deque[HttpRequest] = deque()  # parsed, waiting for the running one
        self.task: asyncio.Task[None] | None = None  # the running request
        self.closed = False
        self._lost: asyncio.Future[None] | None = None  # made only when someone waits for the close
        self.last_active = self.loop.time()
        self.last_read = self.last_active  # when the client last sent a byte
        self.head_started = self.last_active  # when the head being parsed began
        self.head_bytes = 0  # bytes of an incomplete head seen so far (an upper bound)
        self.line_bytes = 0  # bytes of its last, unfinished line (an upper bound)
        self.in_body = False  # the current request's head is complete
        self.begun = False  # a request began during the feed in progress
        self.refused = False  # a refusal is queued or sent, or the client said close: nothing more is parsed
        self._linger: asyncio.TimerHandle | None = None
        self.last_request: HttpRequest | None = None  # the last one parsed

    @property
    def closing(self) -> bool:
        return self.server.closing

    def idle(self) -> bool:
        return self.task is None and self.current is None and not self.queue

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.flow.transport = stream_transport(transport)
        self.server._conns.add(self)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # waiting to answer a refusal, or lingering after it: the rest is dropped
        self.last_read = self.loop.time()
        current = self.current
        was_in_head = current is not None and not self.in_body
        # Where the body being read ends in this data, when its length says so: a head that begins in
        # this data begins there or later.
        body_left = 0
        if current is not None and self.in_body:
            length = current.header(b"content-length")
            if length is not None:
                body_left = int(length) - current._size
        self.begun = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if not isinstance(refusal, RequestRefused):  # a bug here: answered and logged, not a dropped connection
                log.error("parsing a request failed", exc_info=refusal)
                refusal = RequestRefused(400, "malformed HTTP request")
            self.refuse(refusal)
            return
        except httptools.HttpParserUpgrade:
            # The request asking for it is complete and queued: it is answered as plain HTTP (a server may
            # ignore Upgrade), and as what follows it would be the other protocol, that answer is the last.
            if self.last_request is not None:
                self.last_request.keep_alive = False
            self.refused = True
            return
        except httptools.HttpParserError as exc:
            self.refuse(RequestRefused(400, f"malformed HTTP request: {exc}"))  # nothing when the client said close
            return
        if self.current is not None and not self.in_body:
            self._count_head(data, was_in_head and not self.begun, body_left)

    def _count_head(self, data: bytes, continued: bool, body_left: int) -> None:
        """Bound the size of the head still incomplete after ``data``: httptools holds a header line until
        it ends, so an endless head is caught here, by two upper bounds of its bytes (the smaller wins):
        what of ``data`` can belong to it (all of it if the head began earlier, else what follows the last
        blank line and the end of a body before it), and the lines httptools reported plus what follows the
        last line end. A client can make the server hold at most the limit plus one read."""
        line_end = data.rfind(b"\r\n")
        if continued:
            by_data = self.head_bytes + len(data)
            line = len(data) - line_end - 2 if line_end >= 0 else self.line_bytes + len(data)
        else:
            start = max(data.rfind(b"\r\n\r\n") + 4, body_left, 0)
            by_data = max(0, len(data) - start)
            line = len(data) - max(line_end + 2, body_left, 0)
        self.line_bytes = line
        self.head_bytes = min(by_data, self.current._head_size + line)  # type: ignore[union-attr]
        if self.head_bytes > self.server.limits.max_head:
            self.refuse(RequestRefused(431, f"the request head is larger than {self.server.limits.max_head} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        # EOF lands here too (eof_received is not overridden): a client that closes its side has left,
        # so its running request is cancelled, which closes the request to the engine.
        self.closed = True
        self.server._conns.discard(self)
        self.queue.clear()
        self.current = None
        if self._linger is not None:
            self._linger.cancel()
        if self.task is not None:
            self.task.cancel()
        self.flow.close()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.current = HttpRequest()
        self.in_body = False
        self.begun = True
        self.head_started = self.last_read

    def on_url(self, url: bytes) -> None:
        request = self.current
        assert request is not None
        request._url += url
        request._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_body:
            return  # a trailer field: the request's headers were final when its body began
        request = self.current
        assert request is not None
        request.headers.append((name.lower(), value))
        request._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        parser = self.parser
        limits = self.server.limits
        self.head_bytes = 0
        if request._head_size > limits.max_head:
            raise RequestRefused(431, f"the request head is larger than {limits.max_head} bytes")
        request.method = parser.get_method().decode("ascii")
        request.http_version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        framing = RequestFraming()
        for name, value in request.headers:
            framing.field(name, value)
        framing.check(request.http_version)
        if framing.content_length > limits.max_body:
            raise RequestRefused(413, f"the request body is larger than {limits.max_body} bytes")
        try:
            url = httptools.parse_url(request._url)
        except httptools.HttpParserInvalidURLError:
            raise RequestRefused(400, "the request target is not a path (an authority-form CONNECT, or invalid)") from None
        request.path = url.path.decode("utf-8", "replace") if url.path else "/"
        request.query = url.query or b""
        self.in_body = True
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
        if request._size > self.server.limits.max_body:  # chunked: no length said so up front
            raise RequestRefused(413, f"the request body is larger than {self.server.limits.max_body} bytes")
        request._parts.append(body)

    def on_message_complete(self) -> None:
        request = self.current
        self.current = None
        self.in_body = False
        assert request is not None
        parts = request._parts
        request.body = parts[0] if len(parts) == 1 else b"".join(parts)
        request._parts = []
        if not request.keep_alive:
            self.refused = True  # the client said close: nothing after this request is read (RFC 9112 9.6)
        self.last_request = request
        self._enqueue(request)

    # request running

    def _enqueue(self, request: HttpRequest) -> None:
        self.queue.append(request)
        if self.task is None:
            self._next()
        elif len(self.queue) >= PIPELINE_LIMIT:
            self.flow.pause_reading(Pause.PIPELINE)

    def refuse(self, refusal: RequestRefused) -> None:
        """Stop parsing; answer ``refusal`` after the requests already parsed, then close."""
        if self.refused or self.closed:
            return
        self.refused = True
        self.current = None
        self.in_body = False
        request = HttpRequest()
        request.refusal = refusal
        request.keep_alive = False
        if self.task is not None:
            self.flow.pause_reading(Pause.REFUSED)  # read nothing more until it is our turn to answer
        self._enqueue(request)

    def _next(self) -> None:
        request = self.queue.popleft()
        if len(self.queue) < PIPELINE_LIMIT // 2 and not self.refused:
            self.flow.resume_reading(Pause.PIPELINE)
        if request.refusal is not None:
            self._answer_refusal(request.refusal)
            return
        if request.expect_continue:  # its body is in already: the client did not wait for the 100
            request.expect_continue = False
        self.task = self.loop.create_task(self._run(request))

    def _answer_refusal(self, refusal: RequestRefused) -> None:
        """Write the refusal, shut our side down, and drop what still comes for ``LINGER_S`` seconds."""
        if self.closed:
            return
        body = error_body(refusal.status, refusal.message)
        self.write(status_line(refusal.status) + b"content-type: application/json\r\ncontent-length: %d\r\n"
                   b"connection: close\r\n\r\n%s" % (len(body), body))
        transport = self.transport
        if not transport.can_write_eof():
            self.close()
            return
        transport.write_eof()
        self.flow.resume_reading(Pause.PIPELINE | Pause.REFUSED)  # what still comes is read and dropped
        self._linger = self.loop.call_later(LINGER_S, self.close)

    async def _run(self, request: HttpRequest) -> None:
        out = Writer(self, request)
        try:
            await self.server.handler(request, out)
            if not out.started:
                out.send(500, [(b"content-type", b"application/json")], error_body(500, "no response"))
            elif not out.finished:
                out.end()
        except asyncio.CancelledError:
            self.task = None
            if not self.closed:  # cancelled by a shutdown past its grace period
                self.close()
            raise
        except Exception:  # one failed request must not take the connection's others down
            log.exception("request %s %s failed", request.method, request.path)
            if not out.started:
                out.keep_alive = False
                out.send(500, [(b"content-type", b"application/json")], error_body(500, "internal server error"))
            else:
                out.keep_alive = False  # a broken stream: closing tells the client it is incomplete
        self.task = None
        self.last_active = self.loop.time()
        if self.closed:
            return
        if self.queue and self.queue[0].refusal is not None:
            self._next()  # the refusal next in line closes the connection itself
        elif not out.keep_alive or self.server.closing:
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
            self.transport.write(data)

    async def drained(self) -> None:
        await self.flow.drain()

    async def lost(self) -> None:
        """Returns once the connection is gone."""
        if self.transport is UNCONNECTED or self.transport.is_closing():
            return
        if self._lost is None:
            self._lost = self.loop.create_future()
        await asyncio.shield(self._lost)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.flow.close()
            self.transport.close()  # flushes what is buffered first

    def abort(self) -> None:
        """Shutdown past the grace period: cancel what runs and drop the connection."""
        if self.task is not None:
            self.task.cancel()
        if self.transport is not UNCONNECTED:
            self.transport.abort()


def error_body(status: int, message: str) -> bytes:
    """OpenAI's error body, which the router's clients (the OpenAI SDKs) read: ``{"error": {"message",
    "type", "param", "code"}}``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": status}})


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
