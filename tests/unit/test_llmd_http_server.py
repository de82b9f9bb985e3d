"""The router's HTTP/1.1 server (``serving.llmd.http_server``) against real sockets on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from support import wait_until_async

from serving.llmd.http_server import AsgiBridge, HttpRequest, HttpServer, Writer


class App:
    """Handlers by path; records what the streaming one saw."""

    def __init__(self) -> None:
        self.step = asyncio.Event()  # /stream sends its next event when set
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()  # lets /slow answer
        self.calls = 0

    async def __call__(self, request: HttpRequest, out: Writer) -> None:
        self.calls += 1
        if request.path == "/echo":
            body = b"%s %s %d:" % (request.method.encode(), request.query, len(request.body)) + request.body
            out.send(200, [(b"content-type", b"text/plain")], body)
        elif request.path == "/stream":
            await out.reply(StreamingResponse(self._events(), media_type="text/event-stream"))
        elif request.path == "/slow":
            await self.release.wait()
            out.send(200, [], b"done")
        elif request.path == "/boom":
            raise RuntimeError("handler bug")
        else:
            await out.reply(Response(b"nope", 404))

    async def _events(self) -> AsyncIterator[bytes]:
        try:
            for i in range(3):
                await self.step.wait()
                self.step.clear()
                yield b"data: %d\n\n" % i
        except BaseException:
            self.cancelled.set()
            raise


@pytest.fixture
async def served() -> AsyncIterator[tuple[App, HttpServer]]:
    app = App()
    server = HttpServer(app)
    await server.start("127.0.0.1", 0)
    yield app, server
    await server.stop(grace=0.5)


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def running_task(server: HttpServer) -> asyncio.Task[None]:
    """The request task of the server's one connection, once it runs."""
    await wait_until_async(lambda: any(c.task for c in server._conns), timeout=10, what="a request running")
    task = next(c.task for c in server._conns if c.task)
    assert task is not None
    return task


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    status, headers = await read_head(reader)
    if b"content-length" in headers:
        return status, headers, await reader.readexactly(int(headers[b"content-length"]))
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return status, headers, body
        body += data[:-2]


async def test_keep_alive_and_pipelining(served: tuple[App, HttpServer]) -> None:
    app, server = served
    reader, writer = await connect(server)
    writer.write(b"POST /echo?a=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
    status, headers, body = await read_response(reader)
    assert (status, body, headers[b"content-length"]) == (200, b"POST a=1 5:hello", b"16")
    writer.write(b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n"  # two pipelined requests in one segment
                 b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
    first = await read_response(reader)
    second = await read_response(reader)
    assert first[0] == 200 and first[2] == b"GET  0:"
    assert second[2] == b"POST  3:abc"
    assert b"date" in first[1] and b"connection" not in first[1]
    assert app.calls == 3
    writer.close()


async def test_response_head_and_body_in_one_write(served: tuple[App, HttpServer]) -> None:
    _, server = served
    reader, writer = await connect(server)
    writer.write(b"POST /echo?q HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
    data = await asyncio.wait_for(reader.read(65536), 5)  # a single segment on loopback: the whole answer
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nPOST q 2:hi")
    writer.close()


async def test_chunked_request_body(served: tuple[App, HttpServer]) -> None:
    _, server = served
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
    # The rest goes in a later read: once the first chunk is parsed.
    await wait_until_async(lambda: any(c.current is not None and c.current._size == 5 for c in server._conns),
                           timeout=10, what="the first chunk parsed")
    writer.write(b"6\r\n world\r\n0\r\n\r\n")
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"POST  11:hello world")
    writer.close()


async def test_expect_continue(served: tuple[App, HttpServer]) -> None:
    _, server = served
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
    assert (await read_head(reader))[0] == 100
    writer.write(b"ok")
    assert (await read_response(reader))[2] == b"POST  2:ok"
    writer.close()


async def test_streamed_response_arrives_incrementally(served: tuple[App, HttpServer]) -> None:
    app, server = served
    reader, writer = await connect(server)
    writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
    status, headers = await read_head(reader)
    assert status == 200 and headers[b"transfer-encoding"] == b"chunked"
    for i in range(3):
        app.step.set()
        size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5))[:-2], 16)
        assert await reader.readexactly(size + 2) == b"data: %d\n\n\r\n" % i  # each event as it is made
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"0\r\n\r\n"
    writer.write(b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n")  # the connection is still usable
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_client_disconnect_mid_stream_cancels_handler(served: tuple[App, HttpServer]) -> None:
    app, server = served
    reader, writer = await connect(server)
    writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
    await read_head(reader)
    app.step.set()
    await asyncio.wait_for(reader.readuntil(b"\n\n\r\n"), 5)
    writer.close()
    await asyncio.wait_for(app.cancelled.wait(), 5)  # the generator (in the router: the upstream) is closed


async def test_client_disconnect_before_answer_cancels_handler(served: tuple[App, HttpServer]) -> None:
    _, server = served
    _, writer = await connect(server)
    writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
    task = await running_task(server)
    assert not task.done()
    writer.close()
    await wait_until_async(task.cancelled, timeout=10, what="the handler cancelled")


@pytest.mark.parametrize("raw", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
                                 b"POST /echo HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"])
async def test_malformed_request_gets_400(served: tuple[App, HttpServer], raw: bytes) -> None:
    _, server = served
    reader, writer = await connect(server)
    writer.write(raw)
    status, headers = await read_head(reader)
    assert status == 400 and headers[b"connection"] == b"close"
    await reader.readexactly(int(headers[b"content-length"]))
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
    writer.close()


async def test_handler_error_is_500(served: tuple[App, HttpServer]) -> None:
    _, server = served
    reader, writer = await connect(server)
    writer.write(b"GET /boom HTTP/1.1\r\nhost: x\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 500 and headers[b"connection"] == b"close"
    writer.close()


async def test_http10_and_connection_close(served: tuple[App, HttpServer]) -> None:
    _, server = served
    reader, writer = await connect(server)
    writer.write(b"GET /echo HTTP/1.0\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers[b"connection"] == b"close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    reader, writer = await connect(server)
    writer.write(b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert (await read_response(reader))[1][b"connection"] == b"close"
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_graceful_stop_finishes_in_flight_and_closes_idle() -> None:
    app = App()
    server = HttpServer(app)
    await server.start("127.0.0.1", 0)
    busy_reader, busy = await connect(server)
    idle_reader, idle = await connect(server)
    idle.write(b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n")
    await read_response(idle_reader)
    busy.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
    await running_task(server)
    stopping = asyncio.create_task(server.stop(grace=5))
    await wait_until_async(lambda: server.closing, timeout=10, what="the server stopping")
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # the idle connection is closed at once
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)  # no longer accepting
    app.release.set()
    status, headers, body = await read_response(busy_reader)  # the in-flight request still gets its answer
    assert (status, body, headers[b"connection"]) == (200, b"done", b"close")
    await asyncio.wait_for(stopping, 5)


async def test_stop_cancels_what_outlives_the_grace_period() -> None:
    app = App()
    server = HttpServer(app)
    await server.start("127.0.0.1", 0)
    reader, writer = await connect(server)
    writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
    task = await running_task(server)
    await asyncio.wait_for(server.stop(grace=0.2), 5)
    await wait_until_async(task.cancelled, timeout=10, what="the handler cancelled")
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_asgi_bridge_plain_streaming_and_head() -> None:
    async def hello(request: Request) -> Response:
        return JSONResponse({"q": request.query_params.get("q"), "body": (await request.body()).decode(),
                             "h": request.headers.get("x-h")})

    async def numbers(request: Request) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(3):
                yield b"%d;" % i
        return StreamingResponse(gen(), media_type="text/plain")

    app = Starlette(routes=[Route("/hello", hello, methods=["GET", "POST"]), Route("/numbers", numbers)])
    server = HttpServer(AsgiBridge(app))
    await server.start("127.0.0.1", 0)
    try:
        reader, writer = await connect(server)
        writer.write(b"POST /hello?q=1 HTTP/1.1\r\nhost: x\r\nX-H: v\r\ncontent-length: 2\r\n\r\nab")
        status, headers, body = await read_response(reader)
        assert status == 200 and body == b'{"q":"1","body":"ab","h":"v"}'
        writer.write(b"GET /numbers HTTP/1.1\r\nhost: x\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert headers[b"transfer-encoding"] == b"chunked" and body == b"0;1;2;"
        writer.write(b"HEAD /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        status, headers = await read_head(reader)
        assert status == 200 and int(headers[b"content-length"]) > 0
        writer.write(b"GET /missing HTTP/1.1\r\nhost: x\r\n\r\n")  # no body was sent for HEAD: in sync
        assert (await read_response(reader))[0] == 404
        writer.close()
    finally:
        await server.stop(grace=0.5)
