"""The LLM-D router end to end: two simulated vLLM engines (separate processes, so one can be killed)
and ``python -m serving.llmd.serve`` in front of them, driven with the ``openai`` SDK and raw HTTP."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from support import FIXTURES, free_port, python_module, running, wait_http, wait_until

pytestmark = pytest.mark.integration

MODEL = "sim-llama"
KEY = "sk-test-router"
MAX_LEN = 512


@pytest.fixture(scope="module")
def stack() -> Iterator[dict]:
    ports = [free_port(), free_port()]
    zmq_ports = [free_port(), free_port()]
    router_port = free_port()
    with contextlib.ExitStack() as stack:
        engines = []
        for port, zport in zip(ports, zmq_ports, strict=True):
            proc = stack.enter_context(running(python_module(
                "serving.llmd.sim", "--model", MODEL, "--engines", "1", "--base-port", str(port),
                "--zmq-base-port", str(zport), "--decode-ms-per-token", "2", "--max-model-len", str(MAX_LEN),
                "--block-size", "16")))
            engines.append(proc)
        for port, proc in zip(ports, engines, strict=True):
            wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
        args = ["--port", str(router_port), "--model", MODEL, "--api-key", KEY]
        for port, zport in zip(ports, zmq_ports, strict=True):
            args += ["--engine", f"http://127.0.0.1:{port}=tcp://127.0.0.1:{zport}"]
        router = stack.enter_context(running(python_module("serving.llmd.serve", *args)))
        base = f"http://127.0.0.1:{router_port}"
        wait_http(base + "/ready", proc=router)
        yield {"base": base, "engines": engines, "ports": ports, "router": router}


def client(stack: dict, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["base"] + "/v1", api_key=key, max_retries=0, timeout=20)


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {KEY}"}


def pod_health(base: str) -> dict:
    """The per-pod part of /health: behind the key (pod names are engine addresses)."""
    return httpx.get(base + "/health/detail", headers=auth()).json()["pods"]


def test_health_names_no_engine_without_the_key(stack: dict) -> None:
    summary = httpx.get(stack["base"] + "/health")
    assert summary.status_code == 200 and summary.json()["healthy_pods"] >= 1
    assert "pods" not in summary.json() and all(str(port) not in summary.text for port in stack["ports"])
    assert set(pod_health(stack["base"])) == {f"127.0.0.1:{port}" for port in stack["ports"]}


def test_openai_sdk_completions_chat_and_streaming(stack: dict) -> None:
    c = client(stack)
    models = c.models.list()
    assert [m.id for m in models.data] == [MODEL]
    done = c.completions.create(model=MODEL, prompt="hello world", max_tokens=5)
    assert done.choices[0].text and done.usage.completion_tokens == 5
    chat = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert chat.choices[0].message.content
    pieces = []
    arrivals = []
    for chunk in c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "stream me"}],
                                           max_tokens=60, stream=True):
        arrivals.append(time.monotonic())
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) == 60
    assert arrivals[-1] - arrivals[0] > 0.05  # 60 tokens x 2 ms arrive over time, not all at once
    text = "".join(p.choices[0].text for p in c.completions.create(model=MODEL, prompt="x y", max_tokens=6, stream=True))
    assert len(text.split()) == 6


def test_response_cache_for_deterministic_requests(stack: dict) -> None:
    body = {"model": MODEL, "prompt": "cache me please", "max_tokens": 3, "temperature": 0}
    first = httpx.post(stack["base"] + "/v1/completions", json=body, headers=auth())
    second = httpx.post(stack["base"] + "/v1/completions", json=body, headers=auth())
    assert first.status_code == second.status_code == 200
    assert second.headers.get("x-odh-cache") == "hit" and second.json() == first.json()
    assert httpx.get(stack["base"] + "/metrics").status_code == 401  # its pod labels are engine addresses
    metrics = httpx.get(stack["base"] + "/metrics", headers=auth()).text
    assert "llmd_router_cache_hits_total 1.0" in metrics
    assert "llmd_router_decision_seconds_bucket" in metrics


def test_client_errors(stack: dict) -> None:
    base = stack["base"]
    with pytest.raises(openai.AuthenticationError):
        client(stack, "sk-wrong").completions.create(model=MODEL, prompt="hi", max_tokens=2)
    missing = httpx.post(base + "/v1/completions", json={"model": MODEL, "prompt": "hi"})
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    bad = httpx.post(base + "/v1/completions", content=b"{not json", headers={**auth(), "content-type": "application/json"})
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client(stack).completions.create(model="no-such-model", prompt="hi", max_tokens=2)
    no_prompt = httpx.post(base + "/v1/completions", json={"model": MODEL}, headers=auth())
    assert no_prompt.status_code == 400 and no_prompt.json()["error"]["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as too_long:
        client(stack).completions.create(model=MODEL, prompt="word " * (MAX_LEN * 2), max_tokens=2)
    assert too_long.value.status_code == 400


def test_batch_endpoint(stack: dict) -> None:
    lines = [json.dumps(line) for line in (
        {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"model": MODEL, "prompt": "one", "max_tokens": 2}},
        {"custom_id": "b", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": MODEL, "messages": [{"role": "user", "content": "two"}], "max_tokens": 2}},
        {"custom_id": "c", "method": "POST", "url": "/v1/completions", "body": {"model": "nope", "prompt": "x"}},
    )]
    response = httpx.post(stack["base"] + "/v1/batches", content="\n".join(lines), headers=auth(), timeout=20)
    assert response.status_code == 200
    results = [json.loads(line) for line in response.text.splitlines()]
    assert [r["custom_id"] for r in results] == ["a", "b", "c"]
    assert [r["response"]["status_code"] for r in results] == [200, 200, 404]
    assert results[2]["error"] is not None
    bad = httpx.post(stack["base"] + "/v1/batches", content="{broken", headers=auth())
    assert bad.status_code == 400 and "line 1" in bad.json()["error"]["message"]


def test_shared_prefix_goes_to_same_engine(stack: dict) -> None:
    system = "You are a careful assistant. " * 40
    pods = set()
    for i in range(6):
        r = httpx.post(stack["base"] + "/v1/chat/completions", headers=auth(), timeout=20, json={
            "model": MODEL, "max_tokens": 2,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"question {i}"}]})
        assert r.status_code == 200, r.text
        pods.add(r.headers["x-odh-pod"])
    assert len(pods) == 1


def test_kill_engine_mid_run_retries_elsewhere(stack: dict) -> None:
    """Runs last: kills engine 0 while requests are in flight on both engines."""
    base = stack["base"]

    def one(i: int) -> httpx.Response:
        return httpx.post(base + "/v1/completions", headers=auth(), timeout=30,
                          json={"model": MODEL, "prompt": f"distinct prompt number {i} " * 3, "max_tokens": 450})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(8)]
        dead = f"127.0.0.1:{stack['ports'][0]}"
        wait_until(lambda: pod_health(base)[dead]["in_flight"] >= 1, timeout=5, interval=0.01,
                   what="a request in flight on engine 0")
        victim = stack["engines"][0]
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=5)
        # Each takes ~1 s of decoding: what ran on engine 0 was cut off, and its retry is answered well
        # within the bound below, not after the router's 600 s read timeout.
        results = [f.result(timeout=30) for f in futures]
    assert [r.status_code for r in results] == [200] * 8, [r.text for r in results if r.status_code != 200]
    assert {r.headers["x-odh-pod"] for r in results} == {f"127.0.0.1:{stack['ports'][1]}"}
    wait_until(lambda: not pod_health(base)[dead]["healthy"], timeout=5, what="engine 0 out of the pool")
    for i in range(4):  # the pool is now one engine; nothing hangs
        r = one(100 + i)
        assert r.status_code == 200
    metrics = httpx.get(base + "/metrics", headers=auth()).text
    retries = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("llmd_router_retries_total"))
    assert retries >= 1  # requests that were in flight on the killed engine were re-sent


TOKENIZER = FIXTURES / "vllm-kv-events" / "tokenizer"


def test_precise_prefix_routing_from_kv_events() -> None:
    """With the model's tokenizer and KV events, the router sends a prompt to the engine that already
    holds its prefix, even when that engine was warmed behind the router's back."""
    ports = [free_port(), free_port()]
    zmq_ports = [free_port(), free_port()]
    router_port = free_port()
    with contextlib.ExitStack() as stack:
        engines = [stack.enter_context(running(python_module(
            "serving.llmd.sim", "--model", MODEL, "--engines", "1", "--base-port", str(port),
            "--zmq-base-port", str(zport), "--decode-ms-per-token", "1", "--block-size", "16",
            "--tokenizer", str(TOKENIZER)))) for port, zport in zip(ports, zmq_ports, strict=True)]
        for port, proc in zip(ports, engines, strict=True):
            wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
        args = ["--port", str(router_port), "--model", MODEL, "--tokenizer", str(TOKENIZER)]
        for port, zport in zip(ports, zmq_ports, strict=True):
            args += ["--engine", f"http://127.0.0.1:{port}=tcp://127.0.0.1:{zport}"]
        router = stack.enter_context(running(python_module("serving.llmd.serve", *args)))
        base = f"http://127.0.0.1:{router_port}"
        wait_http(base + "/ready", proc=router)
        def indexed() -> dict[str, int]:
            return httpx.get(base + "/health/detail").json()["index"]["pods"]

        # Events published before a SUB socket connects are lost: probe each engine with fresh prompts
        # until the router's index shows its blocks, so the warm-up below is seen.
        for port in ports:
            pod, probes = f"127.0.0.1:{port}", iter(range(1000))

            def probe_seen(port: int = port, pod: str = pod, probes: Iterator[int] = probes) -> bool:
                httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=10, json={
                    "model": MODEL, "prompt": f"probe {next(probes)} " + "words to fill a block " * 8, "max_tokens": 1})
                return indexed().get(pod, 0) > 0

            wait_until(probe_seen, timeout=30, interval=0.1, what=f"KV events from {pod} in the router's index")
        before = indexed()
        prefix = "The quick brown fox jumps over the lazy dog near the river bank. " * 12
        for warm, port in enumerate(ports):
            # Warm each engine directly with its own prefix; the router never saw these requests.
            r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=10,
                           json={"model": MODEL, "prompt": f"{warm} {prefix}", "max_tokens": 1})
            assert r.status_code == 200
        wait_until(lambda: all(indexed().get(f"127.0.0.1:{p}", 0) >= before[f"127.0.0.1:{p}"] + 4 for p in ports),
                   timeout=10, what="the warm-up prefixes in the router's index")
        for warm, port in enumerate(ports):
            for i in range(3):
                r = httpx.post(base + "/v1/completions", timeout=10,
                               json={"model": MODEL, "prompt": f"{warm} {prefix} question {i}", "max_tokens": 2})
                assert r.status_code == 200, r.text
                assert r.headers["x-odh-pod"] == f"127.0.0.1:{port}"


def test_sigterm_lets_in_flight_streams_finish() -> None:
    """SIGTERM: the router stops accepting, the stream in flight runs to its end, and the process exits 0."""
    port, router_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        engine = stack.enter_context(running(python_module(
            "serving.llmd.sim", "--model", MODEL, "--engines", "1", "--base-port", str(port),
            "--decode-ms-per-token", "2", "--max-model-len", str(MAX_LEN))))
        wait_http(f"http://127.0.0.1:{port}/health", proc=engine)
        router = stack.enter_context(running(python_module(
            "serving.llmd.serve", "--port", str(router_port), "--model", MODEL,
            "--engine", f"http://127.0.0.1:{port}")))
        base = f"http://127.0.0.1:{router_port}"
        wait_http(base + "/ready", proc=router)
        events = []
        with httpx.stream("POST", base + "/v1/completions", timeout=20,
                          json={"model": MODEL, "prompt": "p", "max_tokens": 200, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
                    if len(events) == 1:
                        os.kill(router.pid, signal.SIGTERM)
        assert events[-1] == "data: [DONE]" and len(events) == 201  # 200 tokens, then [DONE]
        assert router.wait(timeout=5) == 0
