"""The router's engine client (``serving.llmd.upstream``) against a real asyncio HTTP server on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import orjson
import pytest
from support import wait_until_async

from serving.llmd.upstream import BadResponse, ConnectFailed, Disconnected, EnginePool, ReadTimeout

SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
# Bytes an engine might send after a complete response, in the same segment.
EXTRA = {
    "/second-response": SMUGGLED,
    "/second-response-head": SMUGGLED[:-8],  # its body would be taken from the next request's answer
    "/garbage-after": b"zzz",
}


class Engine:
    """A tiny HTTP/1.1 server: counts connections and answers by path."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[str, bytes]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.release = asyncio.Event()  # lets /stream send its last chunk
        self.talk = asyncio.Event()  # lets /then-talk write on the connection after its answer

    async def __aenter__(self) -> Engine:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                path = lines[0].split()[1]
                length = next((int(line.split(":")[1]) for line in lines
                               if line.lower().startswith("content-length")), 0)
                body = await reader.readexactly(length)
                self.requests.append((path, body))
                if not await self.answer(path, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        """Write the response; False closes the connection afterwards."""
        if path == "/echo":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
        elif path == "/stream":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(2):
                event = b"data: %d\n\n" % i
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.01)  # the engine's pace: events arrive one by one
            await self.release.wait()
            writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        elif path == "/close":  # answers, then closes without saying so
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return False
        elif path == "/until-close":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
            await writer.drain()
            return False
        elif path == "/slow":
            await asyncio.sleep(1.0)  # the slow engine under test: ten times the read timeout used with it
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        elif path == "/drop":  # dies half-way through the body
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await writer.drain()
            return False
        elif path in EXTRA:  # a response, then bytes that answer nothing we sent
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + EXTRA[path])
        elif path == "/then-talk":  # a response; later, while the connection idles in the pool, another
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await self.talk.wait()
            writer.write(SMUGGLED)
        elif path == "/garbage":
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
            return False
        else:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
        await writer.drain()
        return True


async def test_keep_alive_reuses_one_connection() -> None:
    async with Engine() as engine:
        pool = EnginePool(engine.url)
        for i in range(5):
            r = await pool.post_json("/echo", orjson.dumps({"i": i}))
            assert r.status == 200 and orjson.loads(r.body) == {"i": i}
            assert r.content_type == "application/json"
        err = await pool.post_json("/nope", b"{}")
        assert err.status == 503 and err.body == b"busy"
        assert engine.connections == 1 and len(engine.requests) == 6
        await pool.close()


async def test_concurrent_requests_open_more_connections_then_reuse_them() -> None:
    async with Engine() as engine:
        pool = EnginePool(engine.url)
        first = await asyncio.gather(*(pool.post_json("/echo", b"%d" % i) for i in range(4)))
        assert [r.body for r in first] == [b"0", b"1", b"2", b"3"] and engine.connections == 4
        await asyncio.gather(*(pool.post_json("/echo", b"x") for _ in range(4)))
        assert engine.connections == 4
        await pool.close()


async def test_chunked_stream_arrives_chunk_by_chunk() -> None:
    async with Engine() as engine:
        pool = EnginePool(engine.url)
        r = await pool.post_json("/stream", b"{}", stream=True)
        assert r.status == 200 and r.headers["transfer-encoding"] == "chunked"
        chunks = r.chunks()
        got = [await chunks.__anext__(), await chunks.__anext__()]  # before the engine sent the rest
        assert b"".join(got) == b"data: 0\n\ndata: 1\n\n"
        engine.release.set()
        got += [c async for c in chunks]
        assert b"".join(got).endswith(b"data: [DONE]\n\n")
        again = await pool.post_json("/echo", b"after")  # the connection went back to the pool
        assert again.body == b"after" and engine.connections == 1
        await pool.close()


async def test_closed_pooled_connection_is_replaced() -> None:
    async with Engine() as engine:
        pool = EnginePool(engine.url)
        assert (await pool.post_json("/close", b"")).body == b"ok"
        r = await pool.post_json("/echo", b"next")
        assert r.body == b"next" and engine.connections == 2
        await pool.close()


async def test_stale_connection_reused_before_its_close_is_seen_is_redialled() -> None:
    async with Engine() as engine:
        pool = EnginePool(engine.url)
        await pool.post_json("/echo", b"warm")
        conn = pool.idle_connections[-1]
        conn.pause()  # so our side does not see the engine's FIN yet
        engine.writers[-1].close()
        await engine.writers[-1].wait_closed()  # the FIN is sent
        assert not conn.closed
        conn.resume()  # the FIN is read on the next loop pass: after post_json took and wrote on conn
        r = await pool.post_json("/echo", b"again")
        assert r.body == b"again" and engine.connections == 2 and conn.closed
        await pool.close()


async def test_close_delimited_body() -> None:
    async with Engine() as engine:
        pool = EnginePool(engine.url)
        r = await pool.get("/until-close")
        assert r.status == 200 and r.body == b"all of it" and not pool.idle_connections
        await pool.close()


async def test_connect_refused_is_connect_failed() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    pool = EnginePool(f"http://127.0.0.1:{port}", connect_timeout=1.0)
    with pytest.raises(ConnectFailed):
        await pool.post_json("/echo", b"{}")


async def test_read_timeout() -> None:
    async with Engine() as engine:
        pool = EnginePool(engine.url, read_timeout=0.1)
        with pytest.raises(ReadTimeout):
            await pool.get("/slow")
        await pool.close()


async def test_engine_dying_mid_body_and_garbage_are_errors() -> None:
    async with Engine() as engine:
        pool = EnginePool(engine.url)
        with pytest.raises(Disconnected):
            await pool.get("/drop")
        stream = await pool.request("GET", "/drop", stream=True)
        with pytest.raises(Disconnected):
            await stream.read()
        with pytest.raises(BadResponse):
            await pool.get("/garbage")
        await pool.close()


async def test_abandoned_stream_drops_its_connection() -> None:
    async with Engine() as engine:
        pool = EnginePool(engine.url)
        r = await pool.post_json("/stream", b"{}", stream=True)
        chunks: AsyncIterator[bytes] = r.chunks()
        await chunks.__anext__()
        r.close()
        engine.release.set()
        assert (await pool.post_json("/echo", b"fresh")).body == b"fresh" and engine.connections == 2
        await pool.close()


@pytest.mark.parametrize("path", list(EXTRA))
async def test_bytes_after_a_complete_response_discard_the_connection(path: str) -> None:
    async with Engine() as engine:
        pool = EnginePool(engine.url)
        assert (await pool.get(path)).body == b"ok"  # the answer to what was sent
        assert not pool.idle_connections  # the connection did not go back to the pool
        r = await pool.post_json("/echo", b"next")
        assert r.body == b"next" and engine.connections == 2
        await pool.close()


async def test_bytes_on_an_idle_pooled_connection_discard_it() -> None:
    async with Engine() as engine:
        pool = EnginePool(engine.url)
        assert (await pool.get("/then-talk")).body == b"ok"
        (conn,) = pool.idle_connections
        engine.talk.set()
        await wait_until_async(lambda: conn.closed, timeout=10, what="the talking connection closed")
        r = await pool.post_json("/echo", b"next")
        assert r.body == b"next" and engine.connections == 2
        await pool.close()


async def test_callers_cannot_set_the_framing_or_break_the_head() -> None:
    async with Engine() as engine:
        pool = EnginePool(engine.url)
        for headers in ([("Content-Length", "0")], [("host", "other")], [("Transfer-Encoding", "chunked")],
                        [("Connection", "close")], [("x-a", "1\r\nContent-Length: 5")], [("x:a", "1")]):
            with pytest.raises(ValueError):
                await pool.request("POST", "/echo", b"{}", headers=headers)
        with pytest.raises(ValueError):
            await pool.get("/echo HTTP/1.1\r\nx: y")
        assert engine.connections == 0  # nothing was sent
        r = await pool.request("POST", "/echo", b"{}", headers=[("x-request-id", "abc")])
        assert r.body == b"{}"
        await pool.close()
