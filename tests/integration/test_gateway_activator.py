"""The gateway's activator and traffic split on real sockets: stand-in replicas that say who they are, a real
gateway on the test's loop, real HTTP clients. Nothing sleeps: every wait polls the state it needs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import pytest
from load import drive, header
from support import StreamServer, wait_until_async

from serving.platform.local.gateway import Gateway
from serving.platform.local.limits import PlatformLimits
from serving.platform.local.routes import Backend, Endpoint, RouteTable, RouteTarget

BODY = {"instances": [[6.8, 2.8, 4.8, 1.4]]}
PATH = "/serving/ns/iris/v1/models/iris:predict"


class Replica(StreamServer):
    """A keep-alive HTTP/1.1 stand-in for a model server: answers every request with its name (header
    ``x-served-by`` and JSON), optionally only once ``gate`` is set; ``port`` binds a given port (a replica
    restarted where it was)."""

    def __init__(self, name: str, port: int = 0) -> None:
        super().__init__()
        self.name = name
        self.want_port = port
        self.served = 0
        self.gate: asyncio.Event | None = None

    async def __aenter__(self) -> Replica:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.want_port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if self.gate is not None:
                await self.gate.wait()
            payload = json.dumps({"served_by": self.name}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-served-by: %s\r\n"
                         b"content-length: %d\r\n\r\n%s" % (self.name.encode(), len(payload), payload))
            await writer.drain()
            self.served += 1


class Activated:
    """The daemon's side of ``on_activate``: records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, namespace: str, revision: str) -> None:
        self.calls.append((namespace, revision))


class Harness:
    def __init__(self, gateway: Gateway, routes: RouteTable, activated: Activated) -> None:
        self.gateway = gateway
        self.routes = routes
        self.activated = activated
        self.url = f"http://127.0.0.1:{gateway.port}"

    def split(self, *backends: Backend) -> None:
        self.routes.set_split("ns", "iris", backends)

    def target(self, revision: str) -> RouteTarget:
        target = self.routes.get("ns", revision)
        assert target is not None
        return target

    def held(self, revision: str) -> int:
        target = self.routes.get("ns", revision)
        return len(target.held) if target is not None else 0

    async def post(self, client: httpx.AsyncClient, path: str = PATH, **kwargs: Any) -> httpx.Response:
        return await client.post(f"{self.url}{path}", json=BODY, **kwargs)


async def start_harness(limits: PlatformLimits | None = None) -> Harness:
    routes = RouteTable()
    activated = Activated()
    routes.on_activate = activated
    gateway = Gateway(routes, limits=limits)
    await gateway.start("127.0.0.1", 0)
    return Harness(gateway, routes, activated)


@pytest.fixture
async def gw() -> AsyncIterator[Harness]:
    harness = await start_harness()
    try:
        yield harness
    finally:
        await harness.gateway.stop()


def backend(revision: str, percent: int, replicas: Sequence[Replica] = (), **kwargs: Any) -> Backend:
    return Backend(revision, percent, tuple(r.endpoint for r in replicas), **kwargs)


def metric(gateway: Gateway, line_start: str) -> float:
    for line in gateway.metrics_text().decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line {line_start!r}")


# -- hold and release ------------------------------------------------------------------------------


async def test_requests_are_held_until_a_replica_is_ready_then_answered(gw: Harness) -> None:
    gw.split(backend("iris-00001", 100))
    async with httpx.AsyncClient(timeout=30) as client:
        waiting = [asyncio.create_task(gw.post(client)) for _ in range(3)]
        await wait_until_async(lambda: gw.held("iris-00001") == 3, what="three requests held")
        all_held = time.monotonic()  # each of the three was accepted before this
        assert gw.activated.calls == [("ns", "iris-00001")]  # once for the transition, not per request
        assert gw.target("iris-00001").meter.in_flight == 3  # held requests are concurrency for the KPA
        assert not any(task.done() for task in waiting)
        async with Replica("v1") as replica:
            released = time.monotonic()  # none of the three can end before this
            gw.split(backend("iris-00001", 100, [replica]))
            answers = await asyncio.gather(*waiting)
            assert [(r.status_code, r.json()) for r in answers] == [(200, {"served_by": "v1"})] * 3
            # With a replica ready, nothing waits and the daemon is not asked again.
            assert (await gw.post(client)).status_code == 200
    assert gw.activated.calls == [("ns", "iris-00001")]
    meter = gw.target("iris-00001").meter
    assert (meter.in_flight, meter.requests_total) == (0, 4)
    assert metric(gw.gateway, "odh_gateway_activator_released_total") == 3
    assert metric(gw.gateway, 'odh_gateway_revision_requests_total{code="200",namespace="ns",revision="iris-00001"}') == 4
    assert metric(gw.gateway, 'odh_gateway_activator_held{namespace="ns",revision="iris-00001"}') == 0
    # Latency counts from acceptance, the hold included: the three held requests waited for the replica.
    duration = 'odh_gateway_revision_request_duration_seconds_{}{{{}namespace="ns",revision="iris-00001"}}'
    assert metric(gw.gateway, duration.format("count", "")) == 4
    assert metric(gw.gateway, duration.format("bucket", 'le="+Inf",')) == 4
    # The gateway and this test read the same monotonic clock: the hold is a lower bound on the three.
    assert metric(gw.gateway, duration.format("sum", "")) >= 3 * (released - all_held)


async def test_held_requests_show_on_metrics(gw: Harness) -> None:
    gw.split(backend("iris-00001", 100))
    async with httpx.AsyncClient(timeout=30) as client:
        waiting = asyncio.create_task(gw.post(client))
        await wait_until_async(lambda: gw.held("iris-00001") == 1, what="a held request")
        assert metric(gw.gateway, 'odh_gateway_activator_held{namespace="ns",revision="iris-00001"}') == 1
        assert metric(gw.gateway, 'odh_gateway_revision_in_flight{namespace="ns",revision="iris-00001"}') == 1
        async with Replica("v1") as replica:
            gw.split(backend("iris-00001", 100, [replica]))
            assert (await waiting).status_code == 200


async def test_queue_bound_answers_503_with_retry_after() -> None:
    harness = await start_harness(PlatformLimits(activator_queue=2))
    try:
        harness.split(backend("iris-00001", 100))
        async with httpx.AsyncClient(timeout=30) as client:
            waiting = [asyncio.create_task(harness.post(client)) for _ in range(2)]
            await wait_until_async(lambda: harness.held("iris-00001") == 2, what="the queue full")
            refused = await harness.post(client)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "iris-00001" in refused.json()["error"] and "ODH_ACTIVATOR_QUEUE" in refused.json()["error"]
            assert metric(harness.gateway, "odh_gateway_activator_overflow_total") == 1
            async with Replica("v1") as replica:
                harness.split(backend("iris-00001", 100, [replica]))
                assert [r.status_code for r in await asyncio.gather(*waiting)] == [200, 200]
    finally:
        await harness.gateway.stop()


async def test_wait_bound_answers_503_with_retry_after() -> None:
    harness = await start_harness(PlatformLimits(activator_wait_s=0.3))
    try:
        harness.split(backend("iris-00001", 100))
        async with httpx.AsyncClient(timeout=30) as client:
            response = await harness.post(client)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "iris-00001" in response.json()["error"] and "within 0.3s" in response.json()["error"]
        assert harness.held("iris-00001") == 0
        assert harness.target("iris-00001").meter.in_flight == 0
        assert metric(harness.gateway, "odh_gateway_activator_timeouts_total") == 1
    finally:
        await harness.gateway.stop()


async def test_client_that_hangs_up_while_held_leaves_the_queue(gw: Harness) -> None:
    gw.split(backend("iris-00001", 100))
    _, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.port)
    writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" % PATH.encode())
    await writer.drain()
    await wait_until_async(lambda: gw.held("iris-00001") == 1, what="the request held")
    writer.close()
    await wait_until_async(lambda: gw.held("iris-00001") == 0, what="the queue emptied")
    await wait_until_async(lambda: gw.target("iris-00001").meter.in_flight == 0, what="the meter counted it finished")
    assert gw.gateway.metrics()["requests"] == {"ns/iris 499": 1}
    async with Replica("v1") as replica:  # and the revision serves the next one normally
        gw.split(backend("iris-00001", 100, [replica]))
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await gw.post(client)).status_code == 200
        assert replica.served == 1


async def test_a_revision_that_may_not_be_waited_for_is_503_at_once(gw: Harness) -> None:
    gw.split(backend("iris-00001", 100, hold=False))
    async with httpx.AsyncClient(timeout=30) as client:
        response = await gw.post(client)
        assert response.status_code == 503 and "has no ready replica" in response.json()["error"]
        assert gw.activated.calls == []
        # A request held for a revision that then fails is answered rather than left waiting.
        gw.split(backend("iris-00002", 100))
        waiting = asyncio.create_task(gw.post(client))
        await wait_until_async(lambda: gw.held("iris-00002") == 1, what="the request held")
        gw.split(backend("iris-00002", 100, hold=False))
        failed = await waiting
        assert failed.status_code == 503 and failed.headers["retry-after"] == "1"
        assert "iris-00002 failed" in failed.json()["error"]


async def test_a_route_removed_while_requests_wait_answers_them(gw: Harness) -> None:
    gw.split(backend("iris-00001", 100))
    async with httpx.AsyncClient(timeout=30) as client:
        waiting = asyncio.create_task(gw.post(client))
        await wait_until_async(lambda: gw.held("iris-00001") == 1, what="the request held")
        gw.routes.remove("ns", "iris")
        response = await waiting
    assert response.status_code == 503 and "iris-00001 was removed" in response.json()["error"]


# -- replicas that go away under load ------------------------------------------------------------


@pytest.mark.parametrize("same_port", [True, False], ids=["restarted-in-place", "replaced"])
async def test_only_replica_killed_under_load_loses_no_request(gw: Harness, same_port: bool) -> None:
    """The single replica of a revision goes away mid-load (its connections close, new ones are refused)
    while the route still lists it; it comes back (where it was, or elsewhere) and the daemon says so.
    Every request is answered 200: those in flight are sent again, the rest wait in the activator."""
    first = Replica("v1")
    await first.__aenter__()
    port = first.port
    gw.split(backend("iris-00001", 100, [first]))
    load = asyncio.create_task(drive(f"{gw.url}{PATH}", BODY, clients=8, total=600, identify=header("x-served-by")))
    try:
        await wait_until_async(lambda: first.served >= 150, what="load on the first replica")
        first.gate = asyncio.Event()  # requests now arrive and wait: some are in flight when it dies
        await wait_until_async(lambda: gw.target("iris-00001").in_flight >= 4, what="requests in flight")
        await first.__aexit__()
        await wait_until_async(lambda: gw.held("iris-00001") >= 4, what="requests held while no replica is up")
        assert not load.done()
        async with Replica("v1-restarted", port if same_port else 0) as second:
            gw.split(backend("iris-00001", 100, [second]))
            result = await load
        assert result.failures == [], result.describe_failures()
        assert len(result.answers) == 600
        assert set(result.by()) == {"v1", "v1-restarted"}
        assert gw.gateway.metrics()["requests"] == {"ns/iris 200": 600}
    finally:
        load.cancel()
        if first.server is not None and first.server.is_serving():
            await first.__aexit__()


async def test_killed_replica_with_another_ready_moves_its_requests_there(gw: Harness) -> None:
    async with Replica("a") as a, Replica("b") as b:
        gw.split(backend("iris-00001", 100, [a, b]))
        load = asyncio.create_task(drive(f"{gw.url}{PATH}", BODY, clients=8, total=600, identify=header("x-served-by")))
        await wait_until_async(lambda: a.served >= 100, what="load on replica a")
        a.gate = asyncio.Event()
        await wait_until_async(lambda: gw.target("iris-00001").outstanding[a.endpoint] >= 2, what="requests on a")
        await a.__aexit__()
        result = await load
        assert result.failures == [], result.describe_failures()
        assert gw.held("iris-00001") == 0 and gw.activated.calls == []
        assert b.served >= 600 - a.served


# -- traffic split and tags ------------------------------------------------------------------------


async def test_canary_split_rollback_promotion_and_tags(gw: Harness) -> None:
    async with Replica("v1") as v1, Replica("v2") as v2:
        gw.split(backend("iris-00002", 20, [v2], tag="latest"), backend("iris-00001", 80, [v1], tag="prev"))
        url = f"{gw.url}{PATH}"
        result = await drive(url, BODY, clients=8, total=1000, identify=header("x-served-by"))
        assert result.failures == [], result.describe_failures()
        assert abs(result.share("v2") - 0.20) <= 0.05
        assert result.by() == {"v1": 800, "v2": 200}  # smooth weighted round robin is exact

        # Tags reach each revision alone: path form, host form, Knative's host form.
        async with httpx.AsyncClient(timeout=30) as client:
            for path, host, who in [
                ("/serving/ns/latest-iris/v1/models/iris:predict", None, "v2"),
                ("/serving/ns/prev-iris/v1/models/iris:predict", None, "v1"),
                ("/v1/models/iris:predict", "latest-iris.ns.example.com", "v2"),
                ("/v1/models/iris:predict", "prev-iris-predictor.ns.example.com", "v1"),
            ]:
                headers = {"Host": host} if host else {}
                answers = [await gw.post(client, path, headers=headers) for _ in range(5)]
                assert {r.headers["x-served-by"] for r in answers} == {who}, (path, host)

        # Rollback: everything to v1 from the next request on.
        gw.split(backend("iris-00002", 0, [v2], tag="latest"), backend("iris-00001", 100, [v1], tag="prev"))
        result = await drive(url, BODY, clients=8, total=200, identify=header("x-served-by"))
        assert result.failures == [] and result.by() == {"v1": 200}
        # Promotion: everything to v2.
        gw.split(backend("iris-00002", 100, [v2], tag="latest"), backend("iris-00001", 0, [v1], tag="prev"))
        result = await drive(url, BODY, clients=8, total=200, identify=header("x-served-by"))
        assert result.failures == [] and result.by() == {"v2": 200}
    assert gw.gateway.url_for("ns", "iris", tag="latest").endswith("/serving/ns/latest-iris")


async def test_split_changes_under_load_lose_nothing(gw: Harness) -> None:
    """A canary rolled out and back while 8 clients keep sending: every request is answered."""
    async with Replica("v1") as v1, Replica("v2") as v2:
        gw.split(backend("iris-00001", 100, [v1]))
        stop = asyncio.Event()
        load = asyncio.create_task(drive(f"{gw.url}{PATH}", BODY, clients=8, stop=stop, identify=header("x-served-by")))
        try:
            def served() -> int:
                return v1.served + v2.served

            def served_past(mark: int) -> Callable[[], bool]:
                return lambda: served() >= mark + 100

            for percent in (20, 50, 0, 100):
                gw.split(backend("iris-00002", percent, [v2], tag="latest"),
                         backend("iris-00001", 100 - percent, [v1], tag="prev"))
                await wait_until_async(served_past(served()), what="100 answers after the change")
        finally:
            stop.set()
        result = await load
        assert result.failures == [], result.describe_failures()
        assert set(result.by()) == {"v1", "v2"}
