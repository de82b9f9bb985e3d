"""Pure parts of the LLM-D router: cache keys, the circuit breaker, batch JSONL, API keys, metrics parsing."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
import pytest

from serving.llmd.auth import KeyRing, parse_key
from serving.llmd.batch import BatchError, parse_batch, result_line
from serving.llmd.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from serving.llmd.cache import LRUCache, cache_key, cacheable
from serving.llmd.monitor import apply_metrics, parse_engine, parse_vllm_metrics
from serving.llmd.router import CHAT, COMPLETIONS, prompt_text, validate_body
from serving.llmd.scheduler import PodState, Priority
from serving.llmd.upstream import ConnectFailed
from serving.llmd.upstream import Response as UpstreamResponse

# -- cache keys ---------------------------------------------------------------------------------------


def test_cache_key_only_for_deterministic_unstreamed_requests() -> None:
    base = {"model": "m", "prompt": "hi", "temperature": 0}
    assert cache_key(COMPLETIONS, base) is not None
    assert cache_key(COMPLETIONS, {"model": "m", "prompt": "hi"}) is None  # vLLM defaults to 1.0
    assert cache_key(COMPLETIONS, {**base, "temperature": 0.7}) is None
    assert cache_key(COMPLETIONS, {**base, "stream": True}) is None
    assert cache_key(COMPLETIONS, {**base, "n": 3}) is None
    assert not cacheable({**base, "temperature": False})
    assert cacheable({**base, "temperature": 0.0})


def test_cache_key_is_canonical_and_distinguishes_requests() -> None:
    a = cache_key(COMPLETIONS, {"model": "m", "prompt": "hi", "temperature": 0, "max_tokens": 5})
    b = cache_key(COMPLETIONS, {"max_tokens": 5, "temperature": 0, "prompt": "hi", "model": "m", "user": "x"})
    assert a == b
    assert a != cache_key(CHAT, {"model": "m", "prompt": "hi", "temperature": 0, "max_tokens": 5})
    assert a != cache_key(COMPLETIONS, {"model": "m", "prompt": "hi!", "temperature": 0, "max_tokens": 5})
    assert a != cache_key(COMPLETIONS, {"model": "m", "prompt": "hi", "temperature": 0, "max_tokens": 5}, "other")


def test_lru_cache_evicts_and_expires() -> None:
    now = [0.0]
    cache = LRUCache(max_entries=2, ttl_s=10, clock=lambda: now[0])
    cache.set("a", b"1")
    cache.set("b", b"2")
    assert cache.get("a") == b"1"  # a is now most recent
    cache.set("c", b"3")
    assert cache.get("b") is None and cache.get("a") == b"1" and cache.get("c") == b"3"
    now[0] = 11
    assert cache.get("a") is None and len(cache) == 1


# -- breaker ------------------------------------------------------------------------------------------


def test_breaker_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    b = CircuitBreaker(threshold=3, cooldown_s=5)
    for _ in range(2):
        b.failure(0)
    assert b.state == CLOSED and b.allow(0)
    b.failure(1)
    assert b.state == OPEN and not b.allow(2) and not b.available(5.9)
    assert b.available(6.0) and b.allow(6.0) and b.state == HALF_OPEN
    assert not b.allow(6.1)  # one probe at a time
    b.failure(6.2)
    assert b.state == OPEN and not b.allow(7)
    assert b.allow(11.3)
    b.success()
    assert b.state == CLOSED and b.failures == 0 and b.allow(11.4)


def test_breaker_success_resets_the_count() -> None:
    b = CircuitBreaker(threshold=2)
    b.failure(0)
    b.success()
    b.failure(0)
    assert b.state == CLOSED


# -- batch --------------------------------------------------------------------------------------------


def test_parse_batch_lines() -> None:
    data = (b'{"custom_id": "1", "method": "POST", "url": "/v1/completions", "body": {"prompt": "a"}}\n\n'
            b'{"custom_id": "2", "url": "/v1/chat/completions", "body": {"messages": []}}\n')
    lines = parse_batch(data)
    assert [(line.custom_id, line.url) for line in lines] == [("1", "/v1/completions"), ("2", "/v1/chat/completions")]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "empty"),
        (b"{oops", "line 1: not valid JSON"),
        (b"[1]", "line 1: must be a JSON object"),
        (b'{"url": "/v1/completions", "body": {}}', "custom_id"),
        (b'{"custom_id": "a", "url": "/v1/embeddings", "body": {}}', "url"),
        (b'{"custom_id": "a", "method": "GET", "url": "/v1/completions", "body": {}}', "POST"),
        (b'{"custom_id": "a", "url": "/v1/completions", "body": {"stream": true}}', "streaming"),
        (b'{"custom_id": "a", "url": "/v1/completions", "body": {}}\n'
         b'{"custom_id": "a", "url": "/v1/completions", "body": {}}', "line 2: duplicate"),
    ],
)
def test_parse_batch_rejects(data: bytes, needle: str) -> None:
    with pytest.raises(BatchError, match=needle):
        parse_batch(data)


def test_result_line_shape() -> None:
    ok = orjson.loads(result_line("x", 200, {"choices": []}))
    assert ok["custom_id"] == "x" and ok["response"]["status_code"] == 200 and ok["error"] is None
    bad = orjson.loads(result_line("y", 404, {"error": {}}, {"code": "404", "message": "nope"}))
    assert bad["response"]["status_code"] == 404 and bad["error"]["message"] == "nope"


# -- auth ---------------------------------------------------------------------------------------------


def test_parse_key_specs() -> None:
    assert parse_key("sk-1").tier is None
    key = parse_key("sk-2:batch:team-a")
    assert key.key == "sk-2" and key.tier is Priority.BATCH and key.tenant == "team-a"
    with pytest.raises(ValueError):
        parse_key(":batch")
    with pytest.raises(ValueError):
        parse_key("sk:bogus-tier")


def test_keyring_checks_bearer_tokens() -> None:
    ring = KeyRing(["sk-a", "sk-b:streaming:t"])
    assert ring.check("Bearer sk-a").key == "sk-a"
    assert ring.check("bearer sk-b").tenant == "t"
    assert ring.check("Bearer sk-c") is None
    assert ring.check(None) is None
    assert ring.check("Basic sk-a") is None
    assert ring.check("Bearer ") is None
    open_ring = KeyRing()
    assert not open_ring.enabled and open_ring.check(None) is not None


# -- request validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        (COMPLETIONS, [], 400, None),
        (COMPLETIONS, {"prompt": "x"}, 400, "model"),
        (COMPLETIONS, {"model": "other", "prompt": "x"}, 404, "model"),
        (COMPLETIONS, {"model": "m"}, 400, "prompt"),
        (COMPLETIONS, {"model": "m", "prompt": 5}, 400, "prompt"),
        (COMPLETIONS, {"model": "m", "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        (COMPLETIONS, {"model": "m", "prompt": "x", "stream": "yes"}, 400, "stream"),
        (CHAT, {"model": "m", "messages": []}, 400, "messages"),
        (CHAT, {"model": "m", "messages": [{"content": "x"}]}, 400, "messages[0]"),
        (CHAT, {"model": "m", "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
        (COMPLETIONS, {"model": "m", "prompt": [1, -2]}, 400, "prompt"),
        (COMPLETIONS, {"model": "m", "prompt": [[1, True]]}, 400, "prompt"),
        (COMPLETIONS, {"model": "m", "prompt": "x", "max_tokens": None, "max_completion_tokens": "3"}, 400,
         "max_completion_tokens"),
        (COMPLETIONS, {"model": "m", "prompt": "x", "n": 0}, 400, "n"),
        (COMPLETIONS, {"model": "m", "prompt": "x", "temperature": "hot"}, 400, "temperature"),
        (COMPLETIONS, {"model": "m", "prompt": "x", "temperature": True}, 400, "temperature"),
        (COMPLETIONS, {"model": "m", "prompt": "x", "temperature": -0.5}, 400, "temperature"),
        (COMPLETIONS, {"model": "m", "prompt": "x", "user": {"id": 1}}, 400, "user"),
        (COMPLETIONS, {"model": "m", "prompt": "x", "stream_options": "usage"}, 400, "stream_options"),
        (COMPLETIONS, {"model": ["m"], "prompt": "x"}, 404, "model"),
    ],
)
def test_validate_body_errors(path: str, body: object, status: int, param: str | None) -> None:
    response = validate_body(path, body, "m")
    assert response is not None and response.status_code == status
    error = orjson.loads(response.body)["error"]
    assert error["param"] == param and error["message"]


def test_validate_body_accepts_good_requests() -> None:
    assert validate_body(COMPLETIONS, {"model": "m", "prompt": [1, 2, 3]}, "m") is None
    assert validate_body(COMPLETIONS, {"model": "m", "prompt": ["a"]}, "m") is None
    assert validate_body(CHAT, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "m") is None
    assert validate_body(CHAT, {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]},
                                                           {"role": "assistant", "content": None}],
                                "max_completion_tokens": 3, "temperature": 0, "n": 1, "user": "u",
                                "stream_options": {"include_usage": True}}, "m") is None
    assert validate_body(COMPLETIONS, {"model": "m", "prompt": [[0, 1], [2]], "temperature": 1.5}, "m") is None


def test_prompt_text_shares_prefixes_across_chat_turns() -> None:
    one = prompt_text(CHAT, {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}]})
    two = prompt_text(CHAT, {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "b"}]})
    assert one.split("<user>")[0] == two.split("<user>")[0]


# -- monitor parsing ----------------------------------------------------------------------------------

METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="32",cache_dtype="auto",engine="0",num_gpu_blocks="1024"} 1.0
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 100.0
"""


def test_parse_vllm_metrics() -> None:
    values = parse_vllm_metrics(METRICS)
    assert values == {"running": 3, "waiting": 2, "kv_usage": 0.25, "block_size": 32, "num_blocks": 1024}
    pod = PodState("p")
    apply_metrics(pod, values)
    assert (pod.running, pod.waiting, pod.kv_usage, pod.block_size, pod.num_blocks) == (3, 2, 0.25, 32, 1024)



TRICKY = """\
# HELP vllm:num_requests_running Number of requests; vllm:num_requests_running{x="1"} 99 is not a sample.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="a, b {c} = d"} 2.0
vllm:num_requests_running{engine="1",model_name="say \\"hi\\", then\\nleave"} 1e0
vllm:num_requests_running_extra{engine="0"} 50
vllm:num_requests_waiting 4 1700000000000
vllm:num_requests_waiting{engine="1"} +Inf
vllm:kv_cache_usage_perc{engine="0"} 2.5e-1
vllm:kv_cache_usage_perc{engine="1"} NaN
vllm:kv_cache_usage_perc{engine="2"} 1.25E-1
vllm:cache_config_info{cache_dtype="a \\"b\\", c",block_size="16",num_gpu_blocks="2048.0",sliding_window="None"} 1.0
"""


def test_parse_vllm_metrics_tricky_lines() -> None:
    values = parse_vllm_metrics(TRICKY)
    # NaN and +Inf gauges say nothing about load and are skipped; the rest are summed over label sets.
    assert values == {"running": 3, "waiting": 4, "kv_usage": 0.375, "block_size": 16, "num_blocks": 2048}
    assert parse_vllm_metrics("vllm:cache_config_info{block_size=\"x\",num_gpu_blocks=\"None\"} 1\n") == {}
    assert parse_vllm_metrics("") == {}


def test_parse_vllm_metrics_agrees_with_the_prometheus_parser() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = TRICKY.replace("NaN", "0.5").replace("+Inf", "3")
    expected: dict[str, float] = {}
    names = {"vllm:num_requests_running": "running", "vllm:num_requests_waiting": "waiting",
             "vllm:kv_cache_usage_perc": "kv_usage"}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                expected[names[sample.name]] = expected.get(names[sample.name], 0.0) + sample.value
            elif sample.name == "vllm:cache_config_info":
                assert sample.labels["cache_dtype"] == 'a "b", c'
    values = parse_vllm_metrics(text)
    assert values["running"] == expected["running"] and values["waiting"] == expected["waiting"]
    assert values["kv_usage"] == pytest.approx(expected["kv_usage"])


def test_parse_engine_specs() -> None:
    spec = parse_engine("http://127.0.0.1:8001/=tcp://127.0.0.1:5557")
    assert spec.url == "http://127.0.0.1:8001" and spec.zmq_endpoint == "tcp://127.0.0.1:5557"
    assert spec.pod == "127.0.0.1:8001"
    assert parse_engine("http://h:1").zmq_endpoint is None
    full = parse_engine("http://h:1=tcp://h:2,replay=tcp://h:3,role=prefill")
    assert (full.zmq_endpoint, full.replay_endpoint, full.role) == ("tcp://h:2", "tcp://h:3", "prefill")
    assert parse_engine("http://h:1,role=decode").role == "decode"
    with pytest.raises(ValueError):
        parse_engine("http://h:1=tcp://h:2,color=red")
    with pytest.raises(ValueError):
        parse_engine("h:1")
    with pytest.raises(ValueError):
        parse_engine("http://h:1=h:2")


# -- monitor health transitions -----------------------------------------------------------------------


class _FakePool:
    """upstream.EnginePool's ``get`` over an httpx-style handler (httpx.ConnectError = refused)."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        self.paths: list[str] = []

    async def get(self, path: str) -> UpstreamResponse:
        self.paths.append(path)
        try:
            res = self.handler(httpx.Request("GET", "http://a" + path))
        except httpx.ConnectError as exc:
            raise ConnectFailed(str(exc)) from exc
        answer = UpstreamResponse(res.status_code, dict(res.headers), None)
        answer._chunks = [res.content]
        return answer

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("filtered_answer", [404, 200], ids=["no-filtered-route", "filter-yields-nothing"])
async def test_monitor_reads_whole_metrics_from_engines_that_do_not_filter_by_name(filtered_answer: int) -> None:
    from serving.llmd.monitor import FILTERED_METRICS_PATH, FULL_METRICS_PATH, EngineSpec, LoadMonitor

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/metrics/":  # e.g. another server, or vLLM with multi-process metrics
            return httpx.Response(filtered_answer, text="")
        if req.url.path == "/v1/models":
            return httpx.Response(200, json={"data": []})
        return httpx.Response(200, text=METRICS)

    monitor = LoadMonitor([EngineSpec("http://a", name="a")])
    pool = _FakePool(handler)
    monitor.clients = {"a": pool}  # type: ignore[dict-item]
    await monitor.scrape_once()
    await monitor.scrape_once()
    pod = monitor.pods["a"]
    assert pod.healthy and pod.running == 3 and pod.num_blocks == 1024  # the first pass already had figures
    metrics_reads = [p for p in pool.paths if p.startswith("/metrics")]
    assert metrics_reads == [FILTERED_METRICS_PATH, FULL_METRICS_PATH, FULL_METRICS_PATH]
    await monitor.stop()


async def test_monitor_scrapes_and_follows_health() -> None:
    from serving.llmd.monitor import EngineSpec, LoadMonitor

    up = {"a": True}
    downs: list[str] = []
    ups: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if not up["a"]:
            raise httpx.ConnectError("refused", request=req)
        if req.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 2048}]})
        return httpx.Response(200, text=METRICS)

    monitor = LoadMonitor([EngineSpec("http://a", name="a")], fail_threshold=2, on_down=downs.append, on_up=ups.append)
    monitor.clients = {"a": _FakePool(handler)}  # type: ignore[dict-item]
    assert not monitor.pods["a"].healthy  # joins only once it answers
    await monitor.scrape_once()
    pod = monitor.pods["a"]
    assert pod.healthy and pod.running == 3 and pod.num_blocks == 1024 and monitor.max_model_len == {"a": 2048}
    monitor.begin("a")
    monitor.begin("a")
    monitor.end("a")
    assert pod.in_flight == 1 and pod.load == 4
    up["a"] = False
    await monitor.scrape_once()
    assert pod.healthy
    await monitor.scrape_once()
    assert not pod.healthy and downs == ["a"]
    up["a"] = True
    await monitor.scrape_once()
    assert pod.healthy and ups == ["a", "a"]
    monitor.mark_down("a")
    assert not pod.healthy
    await monitor.stop()


# -- shared (Redis) cache -----------------------------------------------------------------------------


async def test_response_cache_uses_redis_and_survives_its_outage() -> None:
    from serving.llmd.cache import ResponseCache

    class FakeRedis:
        def __init__(self) -> None:
            self.data: dict[str, bytes] = {}
            self.down = False

        async def get(self, key: str) -> bytes | None:
            if self.down:
                raise ConnectionError("down")
            return self.data.get(key)

        async def set(self, key: str, value: bytes, ex: int) -> None:
            if self.down:
                raise ConnectionError("down")
            self.data[key] = value

    shared = FakeRedis()
    one, two = ResponseCache(), ResponseCache()
    one.redis = two.redis = shared
    await one.set("k", b"v")
    assert await two.get("k") == b"v"  # another replica's answer
    assert two.local.get("k") == b"v"  # and now local too
    shared.down = True
    assert await two.get("other") is None and two.redis_errors == 1
    await one.set("k2", b"w")
    assert await one.get("k2") == b"w" and one.redis_errors == 1


def test_tokenized_prompts_are_memoised_by_text() -> None:
    from serving.llmd.monitor import EngineSpec, LoadMonitor
    from serving.llmd.router import CHAT, COMPLETIONS, Router, RouterConfig
    from serving.llmd.scheduler import Scheduler, load_config

    class Counting:
        def __init__(self) -> None:
            self.calls = 0

        def encode_prompt(self, text: str) -> list[int]:
            self.calls += 1
            return [len(w) for w in text.split()]

        def encode_chat(self, messages: list[dict]) -> list[int]:
            self.calls += 1
            return [len(m["content"]) for m in messages]

    tok = Counting()
    router = Router(RouterConfig(model="m", block_size=2), LoadMonitor([EngineSpec("http://a", name="a")]),
                    Scheduler(load_config(None)), tokenizer=tok)
    first = router._analyze(COMPLETIONS, {"prompt": "a bb ccc dddd"})
    again = router._analyze(COMPLETIONS, {"prompt": "a bb ccc dddd"})
    other = router._analyze(COMPLETIONS, {"prompt": "a bb"})
    assert tok.calls == 2 and again.token_ids == first.token_ids == [1, 2, 3, 4]
    assert again.approx_keys == first.approx_keys and len(first.approx_keys) == 2 and other.token_count == 2
    chat = [{"role": "user", "content": "hey"}]
    assert router._analyze(CHAT, {"messages": chat}).token_ids == router._analyze(CHAT, {"messages": chat}).token_ids
    assert tok.calls == 3
    router._analyze(COMPLETIONS, {"prompt": "x " * 5000})  # long texts are not remembered
    router._analyze(COMPLETIONS, {"prompt": "x " * 5000})
    assert tok.calls == 5


def test_the_index_learns_the_block_size_from_the_engines_metrics_before_any_event() -> None:
    from serving.llmd.monitor import EngineSpec
    from serving.llmd.serve import build

    router, index = build("tiny", [EngineSpec("http://127.0.0.1:1", "tcp://127.0.0.1:2"),
                                   EngineSpec("http://127.0.0.1:3", "tcp://127.0.0.1:4")])
    assert index is not None and index.block_size is None
    pods = list(router.monitor.pods.values())
    router.monitor.on_scrape()
    assert index.block_size is None  # nobody reported vllm:cache_config_info yet
    apply_metrics(pods[0], {"block_size": 32, "num_blocks": 96})
    router.monitor.on_scrape()
    assert index.block_size == 32
    apply_metrics(pods[1], {"block_size": 64, "num_blocks": 96})
    router.monitor.on_scrape()
    assert index.block_size == 32  # learned once; a later disagreement never re-keys the index


def test_the_serve_command_line_reaches_the_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    from serving.llmd import serve as serve_module

    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(serve_module, "serve", lambda *args, **kwargs: calls.append((args, kwargs)))
    with pytest.raises(SystemExit):
        serve_module.main(["--port", "1", "--model", "tiny", "--engine", "http://127.0.0.1:2",
                           "--scrape-interval-ms", "50"])
    (args, kwargs), = calls
    # Every option main passes on must be one serve_async (behind serve's **kwargs) accepts.
    inspect.signature(serve_module.serve_async).bind(*args, **kwargs)
    router, _ = serve_module.build(args[1], args[2], scrape_interval_s=kwargs["scrape_interval_s"])
    assert router.monitor.interval_s == pytest.approx(0.05)
