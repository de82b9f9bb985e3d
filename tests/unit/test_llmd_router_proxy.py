"""The router's request path in process, with engines faked by handlers that take an ``httpx.Request``
and answer an ``httpx.Response`` (no sockets; ``FakePool`` stands in for ``upstream.EnginePool``):
retries on 5xx and connection errors, the circuit breaker, P/D, the cache, flow control, auth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
import yaml
from support import wait_until_async

from serving.llmd.auth import KeyRing
from serving.llmd.monitor import EngineSpec, LoadMonitor
from serving.llmd.router import POD_HEADER, Router, RouterConfig
from serving.llmd.scheduler import DEFAULT_CONFIG_PATH, Scheduler, load_config
from serving.llmd.upstream import ConnectFailed, Disconnected
from serving.llmd.upstream import Response as UpstreamResponse

Handler = Callable[[str, httpx.Request], Any]


class FakeResponse(UpstreamResponse):
    """An engine answer replayed from an ``httpx.Response``: whole (``body``) or streamed (``chunks``)."""

    def __init__(self, res: httpx.Response, body: bytes | None) -> None:
        super().__init__(res.status_code, {k.lower(): v for k, v in res.headers.items()}, None)
        self.res = res
        self.data = body

    @property
    def body(self) -> bytes:
        return self.data or b""

    async def read(self) -> bytes:
        self.data = b"".join([c async for c in self.chunks()])
        return self.data

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.res.aiter_raw():
                yield chunk
        except httpx.TransportError as exc:
            raise Disconnected(str(exc)) from exc


class FakePool:
    """``EnginePool``'s interface over a handler; ``httpx.ConnectError`` becomes ``ConnectFailed``."""

    def __init__(self, pod: str, handler: Handler) -> None:
        self.pod, self.handler = pod, handler

    async def post_json(self, path: str, body: bytes, stream: bool = False) -> UpstreamResponse:
        req = httpx.Request("POST", f"http://{self.pod}{path}", content=body,
                            headers={"content-type": "application/json"})
        try:
            res = self.handler(self.pod, req)
        except httpx.ConnectError as exc:
            raise ConnectFailed(str(exc)) from exc
        if stream:
            return FakeResponse(res, None)
        return FakeResponse(res, await res.aread())

    async def close(self) -> None:
        pass


def completion(pod: str, text: str = " ok", **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"id": "cmpl-1", "object": "text_completion", "model": "m",
                                     "choices": [{"index": 0, "text": text, "finish_reason": "length"}], **extra})


def make_router(handler: Handler, pods: dict[str, str] | None = None, pd: bool = False, keys: tuple[str, ...] = (),
                **config: Any) -> Router:
    pods = pods or {"a": "both", "b": "both"}
    sched = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    sched["seed"] = 1
    if pd:
        sched["pd"] = {"enabled": True, "threshold_tokens": 0, "profile": "prefill"}
    monitor = LoadMonitor([EngineSpec(f"http://{n}", name=n, role=r) for n, r in pods.items()])
    for pod in monitor.pods.values():
        pod.healthy = True
    router = Router(RouterConfig(model="m", **config), monitor, Scheduler(load_config(sched)), KeyRing(keys))
    router.clients = {n: FakePool(n, handler) for n in pods}  # type: ignore[misc]
    return router


def asgi(router: Router) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=router.app), base_url="http://router")


BODY = {"model": "m", "prompt": "hello there", "max_tokens": 3}


async def test_5xx_is_retried_on_the_next_pod() -> None:
    calls: list[str] = []

    def handler(pod: str, req: httpx.Request) -> httpx.Response:
        calls.append(pod)
        return httpx.Response(500, json={"error": "boom"}) if len(calls) == 1 else completion(pod)

    router = make_router(handler)
    async with asgi(router) as c:
        r = await c.post("/v1/completions", json=BODY)
    assert r.status_code == 200 and len(calls) == 2 and calls[0] != calls[1]
    assert r.headers[POD_HEADER] == calls[1]
    assert router.m_retries._value.get() == 1
    assert all(p.in_flight == 0 for p in router.monitor.pods.values())
    assert router.flow.in_flight == 0


async def test_connection_errors_retry_and_take_the_pod_out() -> None:
    def handler(pod: str, req: httpx.Request) -> httpx.Response:
        if pod == "a":
            raise httpx.ConnectError("refused", request=req)
        return completion(pod)

    router = make_router(handler)
    async with asgi(router) as c:
        for _ in range(3):
            r = await c.post("/v1/completions", json=BODY)
            assert r.status_code == 200 and r.headers[POD_HEADER] == "b"
    assert not router.monitor.pods["a"].healthy


async def test_client_errors_from_the_engine_pass_through_unretried() -> None:
    calls: list[str] = []

    def handler(pod: str, req: httpx.Request) -> httpx.Response:
        calls.append(pod)
        return httpx.Response(400, json={"error": {"message": "maximum context length is 10 tokens"}})

    router = make_router(handler)
    async with asgi(router) as c:
        r = await c.post("/v1/completions", json=BODY)
    assert r.status_code == 400 and "context length" in r.json()["error"]["message"] and len(calls) == 1


async def test_every_pod_failing_gives_a_clear_5xx_and_opens_breakers() -> None:
    def handler(pod: str, req: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": "down"})

    router = make_router(handler, breaker_threshold=2, breaker_cooldown_s=60)
    async with asgi(router) as c:
        for _ in range(2):
            r = await c.post("/v1/completions", json=BODY)
            assert r.status_code == 503
        assert {b.state for b in router.breakers.values()} == {"open"}
        r = await c.post("/v1/completions", json=BODY)
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_pods"


async def test_prefill_decode_flow() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def handler(pod: str, req: httpx.Request) -> httpx.Response:
        body = orjson.loads(req.content)
        seen.append((pod, body))
        if pod == "p":
            return completion(pod, kv_transfer_params={"do_remote_prefill": True, "remote_engine_id": "p-engine",
                                                       "remote_block_ids": [1, 2]})
        return completion(pod, " decoded")

    router = make_router(handler, pods={"p": "prefill", "d": "decode"}, pd=True)
    async with asgi(router) as c:
        r = await c.post("/v1/completions", json={**BODY, "stream": False, "max_tokens": 7})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == " decoded"
    (p_pod, p_body), (d_pod, d_body) = seen
    assert p_pod == "p" and p_body["kv_transfer_params"]["do_remote_decode"] is True and p_body["max_tokens"] == 1
    assert d_pod == "d" and d_body["kv_transfer_params"]["remote_engine_id"] == "p-engine" and d_body["max_tokens"] == 7


async def test_streaming_passes_chunks_through() -> None:
    async def stream() -> Any:
        for i in range(3):
            yield f'data: {{"i": {i}}}\n\n'.encode()
            await asyncio.sleep(0)  # the engine yields between events, as a real stream does
        yield b"data: [DONE]\n\n"

    def handler(pod: str, req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream())

    router = make_router(handler)
    async with asgi(router) as c:
        r = await c.post("/v1/completions", json={**BODY, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.count("data: ") == 4 and r.text.endswith("data: [DONE]\n\n")
    assert all(p.in_flight == 0 for p in router.monitor.pods.values()) and router.flow.in_flight == 0


async def test_deterministic_responses_are_cached() -> None:
    calls: list[str] = []

    def handler(pod: str, req: httpx.Request) -> httpx.Response:
        calls.append(pod)
        return completion(pod)

    router = make_router(handler)
    async with asgi(router) as c:
        body = {**BODY, "temperature": 0}
        first = await c.post("/v1/completions", json=body)
        second = await c.post("/v1/completions", json=body)
        third = await c.post("/v1/completions", json={**BODY, "temperature": 0.5})
    assert first.json() == second.json() and second.headers["x-odh-cache"] == "hit"
    assert third.status_code == 200 and len(calls) == 2


async def test_auth_and_models() -> None:
    router = make_router(lambda pod, req: completion(pod), keys=("sk-good",))
    async with asgi(router) as c:
        assert (await c.get("/v1/models")).status_code == 401
        r = await c.post("/v1/completions", json=BODY, headers={"authorization": "Bearer sk-bad"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = await c.get("/v1/models", headers={"authorization": "Bearer sk-good"})
        assert r.json()["data"][0]["id"] == "m"
        r = await c.post("/v1/completions", json=BODY, headers={"authorization": "Bearer sk-good"})
        assert r.status_code == 200
        r = await c.post("/v1/completions", json=BODY, headers={"authorization": "Bearer sk-good", "x-priority": "vip"})
        assert r.status_code == 400


async def test_saturated_pods_shed_batch_requests_with_retry_after() -> None:
    router = make_router(lambda pod, req: completion(pod))
    for pod in router.monitor.pods.values():
        pod.waiting = 100
    async with asgi(router) as c:
        r = await c.post("/v1/completions", json=BODY, headers={"x-priority": "batch"})
    assert r.status_code == 429 and r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "saturated"


async def test_queued_interactive_request_runs_when_capacity_frees() -> None:
    router = make_router(lambda pod, req: completion(pod))
    for pod in router.monitor.pods.values():
        pod.waiting = 100
    async with asgi(router) as c:
        task = asyncio.create_task(c.post("/v1/completions", json=BODY))
        await wait_until_async(lambda: router.flow.queue_depth == 1, timeout=10, what="the request queued")
        assert not task.done()
        for pod in router.monitor.pods.values():
            pod.waiting = 0
        router.pump()
        r = await asyncio.wait_for(task, 5)
    assert r.status_code == 200 and router.flow.queue_depth == 0 and router.flow.in_flight == 0


async def test_over_length_prompt_with_a_tokenizer_is_rejected_before_the_engine() -> None:
    class Words:
        def encode_prompt(self, text: str) -> list[int]:
            return [len(w) for w in text.split()]

    calls: list[str] = []
    router = make_router(lambda pod, req: calls.append(pod) or completion(pod), max_model_len=8)
    router.tokenizer = Words()
    async with asgi(router) as c:
        r = await c.post("/v1/completions", json={**BODY, "prompt": "w " * 20})
        ok = await c.post("/v1/completions", json={**BODY, "prompt": "w w"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded" and not calls[:-1]
    assert ok.status_code == 200 and len(calls) == 1


async def test_metrics_endpoint() -> None:
    router = make_router(lambda pod, req: completion(pod))
    async with asgi(router) as c:
        await c.post("/v1/completions", json=BODY)
        text = (await c.get("/metrics")).text
    for name in ("llmd_router_decision_seconds_count 1.0", "llmd_router_pod_in_flight{pod=\"a\"}",
                 "llmd_router_queue_depth", "llmd_router_retries_total", "llmd_router_cache_misses_total"):
        assert name in text


@pytest.mark.parametrize("healthy", [False])
async def test_no_healthy_pods_is_503(healthy: bool) -> None:
    router = make_router(lambda pod, req: completion(pod))
    for pod in router.monitor.pods.values():
        pod.healthy = healthy
    async with asgi(router) as c:
        r = await c.post("/v1/completions", json=BODY)
    assert r.status_code == 503 and r.headers["retry-after"]


async def test_engine_failing_mid_stream_ends_the_stream_with_an_error_event() -> None:
    async def stream() -> Any:
        yield b'data: {"i": 0}\n\n'
        raise httpx.ReadError("engine died")

    def handler(pod: str, req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream())

    router = make_router(handler)
    async with asgi(router) as c:
        r = await c.post("/v1/completions", json={**BODY, "stream": True})
    assert r.status_code == 200 and r.text.startswith('data: {"i": 0}')
    assert "the engine stopped mid-stream: Disconnected" in r.text
    assert sum(router.breakers[p].failures for p in router.breakers) == 1
    assert all(p.in_flight == 0 for p in router.monitor.pods.values()) and router.flow.in_flight == 0


async def test_other_methods_and_paths_still_go_through_starlette() -> None:
    router = make_router(lambda pod, req: completion(pod))
    async with asgi(router) as c:
        assert (await c.get("/v1/completions")).status_code == 405
        assert (await c.post("/v1/unknown", json=BODY)).status_code == 404
        assert (await c.get("/health")).json()["status"] == "ok"


async def test_health_and_metrics_show_engine_addresses_only_behind_the_key() -> None:
    """Unnamed engines are pods named by address: /health is a summary for everyone, the per-pod view
    (/health/detail) and /metrics need the key."""
    pods = {"127.0.0.1:18001": "both", "127.0.0.1:18002": "both"}
    router = make_router(lambda pod, req: completion(pod), pods=pods, keys=("sk-good",))
    router.monitor.pods["127.0.0.1:18002"].healthy = False
    good = {"authorization": "Bearer sk-good"}
    async with asgi(router) as c:
        for headers in ({}, {"authorization": "Bearer sk-bad"}, {"authorization": "Basic sk-good"}):
            r = await c.get("/health", headers=headers)
            assert r.status_code == 200  # a liveness probe needs no key
            assert r.json() == {"status": "ok", "healthy_pods": 1, "total_pods": 2, "queue_depth": 0}
            assert "127.0.0.1" not in r.text and "1800" not in r.text
            metrics = await c.get("/metrics", headers=headers)
            assert metrics.status_code == 401 and "1800" not in metrics.text
            detail = await c.get("/health/detail", headers=headers)
            assert detail.status_code == 401 and "1800" not in detail.text
        assert "1800" not in (await c.get("/health", headers=good)).text  # the summary even with the key
        full = (await c.get("/health/detail", headers=good)).json()
        assert set(full["pods"]) == set(pods) and full["pods"]["127.0.0.1:18002"]["healthy"] is False
        assert full["pods"]["127.0.0.1:18001"]["in_flight"] == 0
        assert 'pod="127.0.0.1:18001"' in (await c.get("/metrics", headers=good)).text


async def test_without_keys_health_is_still_a_summary_and_the_detail_is_open() -> None:
    """No keys configured: /health still names no pod (a probe's view); /health/detail and /metrics are open,
    as every other route is."""
    router = make_router(lambda pod, req: completion(pod))
    async with asgi(router) as c:
        assert "pods" not in (await c.get("/health")).json()
        health = (await c.get("/health/detail")).json()
        assert set(health["pods"]) == {"a", "b"} and health["pods"]["a"]["healthy"] is True
        assert (await c.get("/metrics")).status_code == 200


async def test_batch_results_keep_engine_answers_that_are_not_json() -> None:
    """A batch line whose engine answer is not JSON (a proxy's HTML error page, plain text) still gets a result
    line: the body as text, and for an error status its text as the error message."""

    def handler(pod: str, req: httpx.Request) -> httpx.Response:
        prompt = orjson.loads(req.content)["prompt"]
        if prompt == "plain":
            return httpx.Response(200, text="plain words \xff", headers={"content-type": "text/plain"})
        if prompt == "html":
            return httpx.Response(400, content=b"<html>bad \xff request</html>", headers={"content-type": "text/html"})
        return completion(pod)

    lines = [{"custom_id": name, "method": "POST", "url": "/v1/completions", "body": {**BODY, "prompt": name}}
             for name in ("ok", "plain", "html")]
    router = make_router(handler)
    async with asgi(router) as c:
        r = await c.post("/v1/batches", content=b"\n".join(orjson.dumps(line) for line in lines))
    assert r.status_code == 200
    results = {res["custom_id"]: res for res in map(orjson.loads, r.content.splitlines())}
    assert results["ok"]["response"]["body"]["choices"][0]["text"] == " ok" and results["ok"]["error"] is None
    assert results["plain"]["response"] == {**results["plain"]["response"], "status_code": 200, "body": "plain words \xff"}
    assert results["plain"]["error"] is None
    html = results["html"]
    assert html["response"]["status_code"] == 400 and html["response"]["body"] == "<html>bad \ufffd request</html>"
    assert html["error"] == {"code": "400", "message": "<html>bad \ufffd request</html>"}
