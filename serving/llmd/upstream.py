"""A lean keep-alive HTTP/1.1 client for the router's hop to its engines (and the monitor's scrapes).

One ``EnginePool`` per engine keeps a LIFO list of idle connections (the warmest first, the least likely
to have been closed by the engine). Each connection is an asyncio Protocol with an ``httptools``
response parser, so a request costs one write, one future and no task: a generic client (httpx on
httpcore/anyio/h11) spent ~2 ms of CPU per request in the router, most of it in layers this needs none of.

* ``request(..., stream=False)`` returns when the whole body is in; ``stream=True`` returns at the
  response head and ``chunks()`` yields the body as it arrives (de-chunked), for SSE pass-through.
* Content-Length, chunked and close-delimited bodies; one lazy read timer per exchange re-armed by the
  time left since the last byte (no per-chunk timer churn); connect timeout on new connections.
* Failures raise ``UpstreamError`` subclasses: ``ConnectFailed`` (nothing was sent: the caller may take
  the engine out), ``ReadTimeout``, ``Disconnected``, ``BadResponse``. A pooled connection that the engine
  closed just as it was reused (EOF before any response byte) is redialled once, as the gateway does.
* A connection is reused only while its bytes line up with its requests: anything after a complete
  response (a second response, garbage) or on an idle connection closes it, so no response can ever be
  read as the answer to a later request. The request's framing (Host, Content-Length) is always this
  client's own; callers cannot pass either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlsplit

import httptools

from serving.http import (
    CONSUMED,
    UNCONNECTED,
    BadResponse,
    ConnectFailed,
    ConnectionPool,
    Disconnected,
    FlowControl,
    OutOfStep,
    Pause,
    ReadTimeout,
    UpstreamError,
    stream_transport,
)

# The error tree lives in serving.http; these names are this module's public surface too.
__all__ = ["BadResponse", "ConnectFailed", "Disconnected", "EnginePool", "ReadTimeout", "Response", "UpstreamError"]

_JSON = b"Content-Type: application/json\r\n"
# Headers only the pool writes: the framing of every request comes from here.
_OWN_HEADERS = frozenset(name.decode() for name in CONSUMED)
# Streamed body bytes buffered before the engine connection stops reading (back-pressure).
_BUFFER_LIMIT = 1 << 20


class Response:
    """A response from an engine: status, headers (lower-case names), body read fully or chunk by chunk."""

    __slots__ = ("_chunks", "_conn", "_done", "_error", "_size", "_waiter", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], conn: _Connection | None) -> None:
        self.status = status
        self.headers = headers
        self._conn = conn  # None once the body is complete and the connection went back (or closed)
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    @property
    def body(self) -> bytes:
        """The whole body of a response that is complete (``stream=False``, or after ``read``)."""
        return b"".join(self._chunks)

    async def read(self) -> bytes:
        """The rest of the body (all of it if nothing was streamed yet)."""
        parts = [chunk async for chunk in self.chunks()]
        self._chunks = parts
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises ``UpstreamError`` if the engine fails part-way."""
        while True:
            if self._chunks:
                chunks, self._chunks, self._size = self._chunks, [], 0
                conn = self._conn
                if conn is not None and conn.read_paused:
                    conn.resume()
                for chunk in chunks:
                    yield chunk
                continue
            if self._done:
                return
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        """Give up on the rest of the body: the connection cannot be reused and is closed."""
        conn = self._conn
        if conn is not None and not self._done:
            self._conn = None
            conn.close()

    # -- fed by the connection -------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._wake()

    def _finish(self, error: UpstreamError | None = None) -> None:
        if error is None:
            self._done = True
        else:
            self._error = error
        self._conn = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses the response of the exchange in progress."""

    __slots__ = ("_complete", "_headers", "_reusable", "_until_close", "closed", "flow", "last_io", "parser", "pool",
                 "received", "response", "stream", "timer", "transport", "waiter")

    def __init__(self, pool: EnginePool) -> None:
        self.pool = pool
        self.transport = UNCONNECTED
        self.flow = FlowControl(UNCONNECTED)
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.received = False  # any response byte for the current exchange
        self.stream = False
        self.waiter: asyncio.Future[Response] | None = None  # the caller, until head (stream) or body is in
        self.response: Response | None = None
        self.last_io = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self._headers: dict[str, str] = {}
        self._until_close = False
        self._complete = False  # the exchange's final response is in (released after the feed)
        self._reusable = False

    # -- asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.flow.transport = stream_transport(transport)

    @property
    def read_paused(self) -> bool:
        return self.flow.read_paused

    def data_received(self, data: bytes) -> None:
        if self.waiter is None and self.response is None:
            self.close()  # an engine must not talk on an idle connection
            return
        self.received = True
        self.last_io = self.pool.loop.time()
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            if not self._complete:
                kind = "unexpected protocol upgrade" if isinstance(exc, httptools.HttpParserUpgrade) else (
                    f"invalid HTTP response: {exc}")
                self._fail(BadResponse(kind))
                return
            self._reusable = False  # a second response (OutOfStep) or garbage after a complete one
        if self._complete and (self.waiter is not None or self.response is not None):
            # Released only now, after the whole segment: bytes that followed the response in it
            # have had their say on whether the connection may be reused.
            self._release(self._reusable)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.flow.close()
        self.pool._forget(self)
        if self._until_close and self.response is not None and not self._complete:
            self._complete = True  # a close-delimited body ends here
            self._release(False)
            return
        if self.waiter is not None or self.response is not None:
            self._fail(Disconnected(f"the engine closed the connection{f': {exc}' if exc else ''}"))

    def pause_writing(self) -> None:
        pass  # request bodies are small JSON documents written at once

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            raise OutOfStep("a second response")  # a second response to one request: stop parsing, drop the connection
        self._headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self._headers.get(key)
        self._headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            return  # interim responses (100 Continue) are skipped
        headers = self._headers
        self._until_close = ("content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")
                             and status not in (204, 304))
        response = self.response = Response(status, headers, self)
        if self.stream:
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None:
            response._feed(body)
            if self.stream and response._size > _BUFFER_LIMIT:
                self.pause()  # the reader is slower than the engine; it resumes us as it drains

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200 or self.response is None:
            return
        self._complete = True
        self._reusable = self.parser.should_keep_alive() and not self._until_close

    # -- the exchange ----------------------------------------------------------------------------

    def send(self, data: bytes, stream: bool, waiter: asyncio.Future[Response]) -> None:
        self.stream = stream
        self.waiter = waiter
        self.response = None
        self.received = False
        self._complete = False
        self._reusable = False
        self._until_close = False
        self.last_io = self.pool.loop.time()
        self.timer = self.pool.loop.call_at(self.last_io + self.pool.read_timeout, self._check_timeout)
        if self.transport.is_closing():
            # The engine went away between connect (or the pool) and this write (uvloop raises RuntimeError on a
            # closed transport): nothing was sent, so it is the same case as a connection closed before any
            # response byte, which the caller redials or retries on another engine.
            self._fail(Disconnected("the engine closed the connection before the request was sent"))
            return
        self.transport.write(data)

    def _release(self, reusable: bool) -> None:
        """The response is complete: hand it to the caller and the connection back to the pool."""
        response, waiter = self.response, self.waiter
        self.response = self.waiter = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if response is not None:
            response._finish()
        if waiter is not None and not waiter.done() and response is not None:
            waiter.set_result(response)
        self.pool._put_idle(self, reusable)

    def _fail(self, error: UpstreamError) -> None:
        response, waiter = self.response, self.waiter
        self.response = self.waiter = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if response is not None:
            response._finish(error)
        self.close()

    def _check_timeout(self) -> None:
        """Lazy read timeout: one timer per exchange, re-armed by whatever time is left."""
        self.timer = None
        if self.waiter is None and self.response is None:
            return
        left = self.last_io + self.pool.read_timeout - self.pool.loop.time()
        if self.read_paused:  # the wait is on our reader, not on the engine
            left = self.pool.read_timeout
        if left > 0:
            self.timer = self.pool.loop.call_later(left, self._check_timeout)
        else:
            self._fail(ReadTimeout(f"no response byte from {self.pool.authority} in {self.pool.read_timeout:g}s"))

    def pause(self) -> None:
        self.flow.pause_reading(Pause.READER)

    def resume(self) -> None:
        self.flow.resume_reading(Pause.READER)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.flow.close()
            if self.transport is not UNCONNECTED:
                self.transport.close()


class EnginePool:
    """Keep-alive HTTP/1.1 connections to one engine (``http://host:port``)."""

    def __init__(self, url: str, *, connect_timeout: float = 2.0, read_timeout: float = 600.0,
                 max_idle: int = 256, keepalive_expiry: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"engine URL {url!r}: only http://HOST[:PORT] is supported")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.authority = parts.netloc
        self.base_path = parts.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        # One pool object, one key (this engine): the same bookkeeping as the gateway's per-replica pools.
        self._pool: ConnectionPool[str, _Connection] = ConnectionPool(
            max_idle=max_idle, keepalive_expiry=keepalive_expiry, clock=self._now)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._host_line = b"Host: " + self.authority.encode("latin-1") + b"\r\n"

    def _now(self) -> float:
        return self.loop.time()

    @property
    def max_idle(self) -> int:
        return self._pool.max_idle

    @property
    def keepalive_expiry(self) -> float | None:
        return self._pool.keepalive_expiry

    @property
    def idle_connections(self) -> list[_Connection]:
        """The idle keep-alive connections, coldest first (a copy)."""
        return self._pool.idle(self.authority)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: Iterable[tuple[str, str]] = (), stream: bool = False) -> Response:
        """Send one request; with ``stream`` return at the response head, else once the body is in.
        ``headers`` may not set the framing (Host, Content-Length, Transfer-Encoding, Connection) nor hold
        line breaks: the pool frames every request itself."""
        fields = []
        for name, value in headers:
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"header {name!r} is set by the engine pool, not by callers")
            if any(c in name or c in value for c in "\r\n\0") or not name or ":" in name:
                raise ValueError(f"header {name!r}: names and values may not hold line breaks, NUL or a colon")
            fields.append(f"{name}: {value}\r\n".encode("latin-1"))
        return await self._send(method, path, body, b"".join(fields), stream)

    async def post_json(self, path: str, body: bytes, stream: bool = False) -> Response:
        return await self._send("POST", path, body, _JSON, stream)

    async def get(self, path: str) -> Response:
        return await self._send("GET", path, None, b"", False)

    async def _send(self, method: str, path: str, body: bytes | None, fields: bytes, stream: bool) -> Response:
        if not path.startswith("/") or any(c in path for c in " \r\n\0"):
            raise ValueError(f"path {path!r}: must start with / and hold no space, line break or NUL")
        # The whole request goes out in one write: head and body in one buffer.
        length = b"Content-Length: %d\r\n" % len(body) if body is not None else (
            b"Content-Length: 0\r\n" if method in ("POST", "PUT", "PATCH") else b"")
        data = b"".join((f"{method} {self.base_path}{path} HTTP/1.1\r\n".encode("latin-1"), self._host_line,
                         fields, length, b"\r\n", body or b""))
        conn = self._take_idle()
        if conn is not None:
            try:
                return await self._exchange(conn, data, stream)
            except Disconnected:
                if conn.received:
                    raise
                # The engine closed the idle connection as we reused it: nothing was processed, redial.
        return await self._exchange(await self._connect(), data, stream)

    async def _exchange(self, conn: _Connection, data: bytes, stream: bool) -> Response:
        waiter: asyncio.Future[Response] = self.loop.create_future()
        conn.send(data, stream, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            conn.close()  # the exchange is abandoned half-way: the connection cannot be reused
            raise

    async def _connect(self) -> _Connection:
        if self._pool.closed:
            raise ConnectFailed("the pool is closed")
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Connection(self), self.host, self.port), self.connect_timeout)
        except TimeoutError:
            raise ConnectFailed(f"connect to {self.authority} timed out after {self.connect_timeout:g}s") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.authority}: {exc}") from exc
        return conn

    def _take_idle(self) -> _Connection | None:
        return self._pool.take(self.authority)

    def _put_idle(self, conn: _Connection, reusable: bool) -> None:
        if self._pool.put(self.authority, conn, reusable) and conn.read_paused:
            conn.resume()

    def _forget(self, conn: _Connection) -> None:
        self._pool.forget(self.authority, conn)

    async def close(self) -> None:
        """Close the idle connections; responses still streaming keep theirs until they end."""
        self._pool.close()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)  # let the transports run their close callbacks
