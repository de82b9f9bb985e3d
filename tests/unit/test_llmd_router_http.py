"""The router behind its own HTTP server (``Router.serve_http``), over real sockets to a slow streaming
engine: a client that leaves mid-stream closes the engine request and frees the router's slots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from support import StreamServer, serving_router

from serving.llmd.http_server import HttpServer
from serving.llmd.router import Router


class StreamingEngine(StreamServer):
    """Answers any POST with an SSE stream of 200 events, one every 10 ms; notes when its client leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.left = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        body = orjson.loads(await reader.readexactly(length))
        if not body.get("stream"):
            data = orjson.dumps({"choices": [{"text": "x"}]})
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(data), data))
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            for i in range(200):
                event = b"data: {\"i\": %d}\n\n" % i
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.01)  # once the router drops the connection, a write here fails
        except (ConnectionError, OSError):
            self.left.set()
            return
        writer.write(b"0\r\n\r\n")


@pytest.fixture
async def stack() -> AsyncIterator[tuple[Router, HttpServer, StreamingEngine]]:
    async with StreamingEngine() as engine, serving_router([engine.port]) as (router, server):
        yield router, server, engine


async def test_client_leaving_mid_stream_closes_the_engine_request(
        stack: tuple[Router, HttpServer, StreamingEngine]) -> None:
    router, server, engine = stack
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = orjson.dumps({"model": "m", "prompt": "hi", "max_tokens": 200, "stream": True})
    writer.write(b"POST /v1/completions HTTP/1.1\r\nhost: r\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(body), body))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    await asyncio.wait_for(reader.readuntil(b"\n\n\r\n"), 5)  # the first event
    assert router.flow.in_flight == 1
    writer.close()
    await asyncio.wait_for(engine.left.wait(), 5)  # the router dropped its engine connection
    assert router.flow.in_flight == 0
    assert all(p.in_flight == 0 for p in router.monitor.pods.values())


async def test_plain_completion_and_other_paths(stack: tuple[Router, HttpServer, StreamingEngine]) -> None:
    _, server, _ = stack
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = orjson.dumps({"model": "m", "prompt": "hi", "max_tokens": 2})
    writer.write(b"POST /v1/completions HTTP/1.1\r\nhost: r\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    data = await asyncio.wait_for(reader.readuntil(b'"x"}]}'), 5)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"x-odh-pod: 127.0.0.1:" in data
    writer.write(b"GET /health HTTP/1.1\r\nhost: r\r\n\r\n")  # through the ASGI bridge, same connection
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length"))
    assert orjson.loads(await reader.readexactly(length))["status"] == "ok"
    writer.close()


class RecordingEngine(StreamServer):
    """Keeps the raw head of every request it reads and answers a completion with its own framing."""

    def __init__(self) -> None:
        super().__init__()
        self.heads: list[list[bytes]] = []
        self.bodies: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n"))[:-4].split(b"\r\n")
            length = next(int(line.split(b":")[1]) for line in head if line.lower().startswith(b"content-length:"))
            self.heads.append(head)
            self.bodies.append(await reader.readexactly(length))
            data = orjson.dumps({"choices": [{"text": "x"}]})
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive, x-engine\r\n"
                         b"keep-alive: timeout=5\r\nx-engine: internal\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(data), data))


async def test_the_engine_sees_only_the_routers_framing() -> None:
    """Whatever framing and hop-by-hop headers a client sends, each client request reaches the engine as
    exactly one request whose Host, Content-Type and Content-Length the router wrote; a request text
    inside the client's body stays inside the engine request's JSON. The way back likewise: the client
    gets the router's framing and none of the engine's hop-by-hop or other headers."""
    async with RecordingEngine() as engine, serving_router([engine.port]) as (_, server):
        name = f"127.0.0.1:{engine.port}"
        smuggled = "\r\n\r\nPOST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
        body = orjson.dumps({"model": "m", "prompt": smuggled, "max_tokens": 1})
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        hop_by_hop = (b"connection: keep-alive, content-length, transfer-encoding, host, x-drop\r\n"
                      b"keep-alive: timeout=99\r\nte: trailers\r\nupgrade-insecure: 1\r\nx-drop: 1\r\n"
                      b"proxy-connection: keep-alive\r\nx-forwarded-host: evil\r\n")
        writer.write(b"POST /v1/completions HTTP/1.1\r\nhost: client-host\r\n" + hop_by_hop +
                     b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) +
                     b"POST /v1/completions HTTP/1.1\r\nhost: client-host\r\n" + hop_by_hop +
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        for _ in range(2):
            answer = await asyncio.wait_for(reader.readuntil(b'"x"}]}'), 5)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
            names = {line.split(b":")[0] for line in answer.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]}
            assert names == {b"x-odh-pod", b"content-length", b"content-type", b"date"}, answer
        writer.close()
    assert len(engine.heads) == 2  # one engine request per client request, nothing smuggled in between
    for head, sent in zip(engine.heads, engine.bodies, strict=True):
        assert head == [b"POST /v1/completions HTTP/1.1", b"Host: " + name.encode(),
                        b"Content-Type: application/json", b"Content-Length: %d" % len(sent)]
        assert orjson.loads(sent)["prompt"] == smuggled
