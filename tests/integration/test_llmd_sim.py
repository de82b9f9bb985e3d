"""The engine simulator as a real process: the openai SDK, vLLM's metrics, KV events and replay."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import msgpack
import openai
import pytest
import zmq
from support import FIXTURES, free_port, python_module, running, wait_http

pytestmark = pytest.mark.integration

MODEL = "sim-llama"
TOKENIZER = FIXTURES / "vllm-kv-events" / "tokenizer"
RECORDING = FIXTURES / "vllm-kv-events" / "events.jsonl"
SHARED = " ".join(["the quick brown fox jumps over the lazy dog"] * 30)  # well over a few 32-token blocks


@dataclass
class Sim:
    urls: list[str]
    zmq: list[str]
    replay: list[str]


def _base(n: int) -> int:
    """A free run of ``n`` consecutive ports (engine i uses base + i)."""
    for _ in range(50):
        base = free_port()
        if base + n < 65535 and all(_is_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port run")


def _is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    base = _base(6)  # one run of six free ports: HTTP, PUB and replay for two engines
    http, pub, rep = base, base + 2, base + 4
    args = python_module(
        "serving.llmd.sim", "--model", MODEL, "--engines", "2", "--base-port", str(http),
        "--zmq-base-port", str(pub), "--replay-base-port", str(rep), "--tokenizer", str(TOKENIZER),
        "--max-model-len", "1024", "--num-blocks", "64", "--prefill-ms-per-token", "0.01",
        "--decode-ms-per-token", "1",
    )
    with running(args) as proc:
        urls = [f"http://127.0.0.1:{http + i}" for i in range(2)]
        for u in urls:
            wait_http(u + "/health", timeout=30, proc=proc)
        yield Sim(urls, [f"tcp://127.0.0.1:{pub + i}" for i in range(2)],
                  [f"tcp://127.0.0.1:{rep + i}" for i in range(2)])


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=10)


def _metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    m = re.search(rf"^{re.escape(name)}\{{[^}}]*model_name=\"{MODEL}\"[^}}]*\}} (\S+)$", text, re.M)
    assert m, f"{name} missing"
    return float(m.group(1))


def test_openai_sdk_completions_and_chat(sim: Sim) -> None:
    client = _client(sim.urls[0])
    assert [m.id for m in client.models.list().data] == [MODEL]
    done = client.completions.create(model=MODEL, prompt="hello world", max_tokens=5, temperature=0)
    assert done.usage.completion_tokens == 5 and done.usage.prompt_tokens > 0
    assert done.choices[0].finish_reason == "length" and done.choices[0].text
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content
    assert chat.usage.completion_tokens == 4


def test_openai_sdk_streaming(sim: Sim) -> None:
    client = _client(sim.urls[1])
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream please"}], max_tokens=6, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 6
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    pieces = list(client.completions.create(model=MODEL, prompt="a b c", max_tokens=3, stream=True))
    assert [p.choices[0].finish_reason for p in pieces][-1] == "length"
    raw = httpx.post(sim.urls[1] + "/v1/completions",
                     json={"model": MODEL, "prompt": "x", "max_tokens": 2, "stream": True}).text
    assert raw.rstrip().endswith("data: [DONE]")


def test_tokenize_matches_the_recorded_engine(sim: Sim) -> None:
    recorded = json.loads((FIXTURES / "vllm-kv-events" / "requests.json").read_text())
    first, chat = recorded[0], recorded[3]
    got = httpx.post(sim.urls[0] + "/tokenize", json={"model": MODEL, "prompt": first["prompt"]}).json()
    assert got["tokens"] == first["prompt_token_ids"] and got["count"] == len(got["tokens"])
    got = httpx.post(sim.urls[0] + "/tokenize", json={"model": MODEL, "messages": chat["messages"]}).json()
    assert got["tokens"] == chat["prompt_token_ids"]


def test_shared_prefix_raises_prefix_cache_hits(sim: Sim) -> None:
    url = sim.urls[0]
    client = _client(url)
    hits0 = _metric(url, "vllm:prefix_cache_hits_total")
    queries0 = _metric(url, "vllm:prefix_cache_queries_total")
    a = client.completions.create(model=MODEL, prompt=SHARED + " first question", max_tokens=2)
    client.completions.create(model=MODEL, prompt=SHARED + " second question", max_tokens=2)
    hits = _metric(url, "vllm:prefix_cache_hits_total") - hits0
    assert hits >= 32 and hits % 32 == 0  # whole blocks, counted in tokens
    assert _metric(url, "vllm:prefix_cache_queries_total") - queries0 >= 2 * a.usage.prompt_tokens - 4
    text = httpx.get(url + "/metrics").text
    assert re.search(r'vllm:cache_config_info\{[^}]*block_size="32"[^}]*num_gpu_blocks="64"[^}]*\} 1\.0', text)
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:time_to_first_token_seconds_count"):
        _metric(url, name)


async def test_the_monitor_reads_only_its_metrics_from_the_filtered_route(sim: Sim) -> None:
    from serving.llmd.monitor import FILTERED_METRICS_PATH, EngineSpec, LoadMonitor

    url = sim.urls[0]
    async with httpx.AsyncClient() as client:
        text = (await client.get(url + FILTERED_METRICS_PATH)).text
        whole = (await client.get(url + "/metrics")).text
    names = set(re.findall(r"^([a-z_:]+)[{ ]", text, re.M))
    assert names == {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                     "vllm:cache_config_info"}
    assert len(text) < len(whole) / 3
    monitor = LoadMonitor([EngineSpec(url)])
    try:
        await monitor.scrape_once()
        (pod,) = monitor.pods.values()
        assert pod.healthy and pod.block_size == 32 and pod.num_blocks == 64
        assert monitor.metrics_path == {pod.name: FILTERED_METRICS_PATH}  # no fallback to the whole text
    finally:
        await monitor.stop()


def test_kv_events_look_like_the_recording_and_replay(sim: Sim) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(sim.zmq[1])
    try:
        # PUB/SUB joins late: keep sending distinct prompts until one batch arrives.
        frames = None
        deadline = time.monotonic() + 10
        n = 0
        while frames is None and time.monotonic() < deadline:
            n += 1
            httpx.post(sim.urls[1] + "/v1/completions",
                       json={"model": MODEL, "prompt": f"{n} " + SHARED, "max_tokens": 1})
            if sub.poll(200):
                frames = sub.recv_multipart()
        assert frames is not None, "no KV event received"
        topic, seq_bytes, payload = frames
        assert topic == f"kv@127.0.0.1:{sim.urls[1].rsplit(':', 1)[1]}@{MODEL}".encode()
        assert len(seq_bytes) == 8
        ts, events, dp_rank = msgpack.unpackb(payload)
        assert isinstance(ts, float) and dp_rank == 0
        stored = [e for e in events if e["type"] == "BlockStored"]
        assert stored
        reference = next(
            e for line in RECORDING.read_text().splitlines()
            for e in msgpack.unpackb(base64.b64decode(json.loads(line)["payload_b64"]))[1]
            if e["type"] == "BlockStored"
        )
        for e in stored:
            assert list(e) == list(reference)  # same fields, same order
            assert e["block_size"] == 32 and len(e["token_ids"]) == 32 * len(e["block_hashes"])
            assert all(isinstance(h, int) and 0 <= h < 2**64 for h in e["block_hashes"])
            assert e["medium"] == reference["medium"] and e["kv_cache_spec_kind"] == reference["kv_cache_spec_kind"]

        # Replay from the start: the startup AllBlocksCleared, then every batch in order, then the end.
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(sim.replay[1])
        dealer.send_multipart([b"", (0).to_bytes(8, "big")])
        replayed = []
        while True:
            assert dealer.poll(5000), "replay did not answer"
            msg = dealer.recv_multipart()
            assert msg[0] == b"" and len(msg) == 4
            if msg[2] == (-1).to_bytes(8, "big", signed=True):
                assert msg[1] == b"" and msg[3] == b""
                break
            assert msg[1] == topic
            replayed.append((int.from_bytes(msg[2], "big"), msg[3]))
        seqs = [s for s, _ in replayed]
        assert seqs == list(range(len(seqs))) and int.from_bytes(seq_bytes, "big") in seqs
        assert msgpack.unpackb(replayed[0][1])[1] == [{"type": "AllBlocksCleared"}]
        assert dict(replayed)[int.from_bytes(seq_bytes, "big")] == payload
        # From a later seq: only the tail.
        dealer.send_multipart([b"", seqs[-1].to_bytes(8, "big")])
        assert dealer.poll(5000)
        assert int.from_bytes(dealer.recv_multipart()[2], "big") == seqs[-1]
        assert dealer.recv_multipart()[2] == (-1).to_bytes(8, "big", signed=True)
        dealer.close(0)
    finally:
        sub.close(0)
        ctx.term()


def test_disaggregated_prefill_hint(sim: Sim) -> None:
    prefill = httpx.post(sim.urls[0] + "/v1/completions", json={
        "model": MODEL, "prompt": SHARED, "max_tokens": 50, "kv_transfer_params": {"do_remote_decode": True}}).json()
    params = prefill["kv_transfer_params"]
    assert params["do_remote_prefill"] is True and prefill["usage"]["completion_tokens"] == 1
    decode = httpx.post(sim.urls[1] + "/v1/completions", json={
        "model": MODEL, "prompt": SHARED, "max_tokens": 3, "kv_transfer_params": params}).json()
    assert decode["usage"]["completion_tokens"] == 3 and decode["kv_transfer_params"] is None


def test_errors_like_vllm(sim: Sim) -> None:
    url = sim.urls[0]
    long = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": list(range(1025)), "max_tokens": 1})
    assert long.status_code == 400
    assert "maximum context length is 1024" in long.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        _client(url).completions.create(model=MODEL, prompt=SHARED * 10, max_tokens=1)
    missing = httpx.post(url + "/v1/chat/completions", json={"model": "nope", "messages": []})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"
    bad = httpx.post(url + "/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400


def test_render_endpoints_give_the_engine_token_ids_without_generating(sim: Sim) -> None:
    recorded = json.loads((FIXTURES / "vllm-kv-events" / "requests.json").read_text())
    first, chat = recorded[0], recorded[3]
    queries_before = _metric(sim.urls[1], "vllm:prefix_cache_queries_total")
    rendered = httpx.post(sim.urls[1] + "/v1/completions/render",
                          json={"model": MODEL, "prompt": first["prompt"], "max_tokens": 4}).json()
    assert [r["token_ids"] for r in rendered] == [first["prompt_token_ids"]]
    assert rendered[0]["sampling_params"]["max_tokens"] == 4
    one = httpx.post(sim.urls[1] + "/v1/chat/completions/render", json={"model": MODEL, "messages": chat["messages"]}).json()
    assert one["token_ids"] == chat["prompt_token_ids"]
    assert _metric(sim.urls[1], "vllm:prefix_cache_queries_total") == queries_before  # nothing was scheduled
    assert httpx.post(sim.urls[1] + "/v1/completions/render", json={"model": "nope", "prompt": "x"}).status_code == 404
