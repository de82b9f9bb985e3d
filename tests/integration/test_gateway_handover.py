"""The gateway's side of ``odh restart``, two gateways in one process standing for the old and the new daemon
image: an idle keep-alive client connection is parked, never closed, and its descriptor served by the next
gateway, so a request the client sends on it *while* the first one drains is answered; a request in flight
is finished first and its connection closed (``Connection: close``), never handed over."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from support import StreamServer, wait_until_async

from serving.platform.local.gateway import Gateway
from serving.platform.local.routes import Endpoint, RouteTable

pytestmark = pytest.mark.integration

REQUEST = (b"POST /serving/ns/m/v1/models/m:predict HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
           b"content-length: 2\r\n\r\n{}")


class Replica(StreamServer):
    """A keep-alive model-server stand-in: answers each request ``{"n": i}``; ``gate`` (when set) holds
    every answer until it is set, so a test can keep a request in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.received = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.partition(b":")[2]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            self.received += 1
            if self.gate is not None:
                await self.gate.wait()
            payload = b'{"n": %d}' % self.received
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(payload), payload))
            await writer.drain()


class Client:
    """A raw keep-alive HTTP/1.1 client connection: what it sends and reads is exactly what the test says."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self) -> None:
        self.writer.write(REQUEST)

    async def answer(self) -> tuple[int, dict[bytes, bytes]]:
        """The status and headers of the next response (its body read too); EOF first raises."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.split(b"\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines[1:] if line)}
        await self.reader.readexactly(int(headers[b"content-length"]))
        return int(lines[0].split()[1]), headers

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def replica() -> AsyncIterator[Replica]:
    server = Replica()
    async with server:
        yield server


async def serving_gateway(replica: Replica) -> tuple[RouteTable, Gateway]:
    """A started gateway whose one route ``ns/m`` goes to ``replica``, and its route table."""
    routes = RouteTable()
    routes.set("ns", "m", [Endpoint("127.0.0.1", replica.port)])
    gateway = Gateway(routes)
    await gateway.start("127.0.0.1", 0)
    return routes, gateway


async def hand_over(old: Gateway, routes: RouteTable, drain_limit: float = 10.0) -> Gateway:
    """What ``odh restart`` does with the gateway, minus the exec: the old one stops accepting and drains,
    its parked connections' descriptors go to a new gateway on the same listening socket, and the old one's
    own descriptors are closed (as the exec closes them)."""
    listener = old.stop_accepting()
    assert await old.drain(drain_limit) == 0, "a connection still busy after the drain"
    fds = old.idle_client_fds()
    await old.stop()
    new = Gateway(routes)
    await new.start("127.0.0.1", 0, sock=listener)
    assert await new.adopt_clients([socket.socket(fileno=fd) for fd in fds]) == len(fds)
    return new


async def test_a_request_sent_on_an_idle_connection_during_the_drain_is_answered_by_the_next_gateway(replica: Replica) -> None:
    routes, old = await serving_gateway(replica)
    gateways = [old]
    client = await Client.connect(old.port)
    try:
        client.send()
        status, headers = await client.answer()
        assert status == 200 and headers.get(b"connection") != b"close"

        listener = old.stop_accepting()
        # The race a closing drain loses: the client sends its next request on the idle connection just now.
        client.send()
        late = await Client.connect(old.port)  # and a new connection waits in the backlog
        late.send()
        assert await old.drain(10) == 0
        fds = old.idle_client_fds()
        assert len(fds) == 1, "the idle connection is handed over, and only it"
        await old.stop()  # the old image's descriptors close (as at the exec): the duplicate keeps the connection
        new = Gateway(routes)
        gateways.append(new)
        await new.start("127.0.0.1", 0, sock=listener)
        assert await new.adopt_clients([socket.socket(fileno=fd) for fd in fds]) == 1

        assert (await client.answer())[0] == 200  # the request sent during the drain, answered by the new gateway
        assert (await late.answer())[0] == 200
        client.send()  # and the connection is as good as before
        status, headers = await client.answer()
        assert status == 200 and headers.get(b"connection") != b"close"
        assert replica.received == 4
        late.close()
    finally:
        client.close()
        for gateway in gateways:
            await gateway.stop()


async def test_a_request_in_flight_is_finished_with_connection_close_and_its_connection_not_handed_over(replica: Replica) -> None:
    _, gateway = await serving_gateway(replica)
    replica.gate = asyncio.Event()
    client = await Client.connect(gateway.port)
    try:
        client.send()
        await wait_until_async(lambda: replica.received == 1, what="the request at the replica")
        gateway.stop_accepting().close()
        assert await gateway.drain(0.05) == 1  # still in flight: the drain waits for it, up to its limit
        replica.gate.set()
        status, headers = await client.answer()
        assert status == 200 and headers[b"connection"] == b"close"
        assert await gateway.drain(10) == 0
        assert gateway.idle_client_fds() == []
        assert await asyncio.wait_for(client.reader.read(), 10) == b""  # closed by the gateway after its answer
    finally:
        client.close()
        await gateway.stop()


async def test_an_adopted_connection_keeps_serving_and_survives_a_second_handover(replica: Replica) -> None:
    routes, gateway = await serving_gateway(replica)
    gateways = [gateway]
    client = await Client.connect(gateway.port)
    try:
        client.send()
        await client.answer()
        new = await hand_over(gateway, routes)
        gateways.append(new)
        for _ in range(3):
            client.send()
            status, headers = await client.answer()
            assert status == 200 and headers.get(b"connection") != b"close"
        # Through a second handover as well: the adopted connection is an ordinary client connection.
        newer = await hand_over(new, routes)
        gateways.append(newer)
        client.send()
        assert (await client.answer())[0] == 200
    finally:
        client.close()
        for each in gateways:
            await each.stop()
