"""Fuzzing the LLM-D router from outside: ``python -m serving.llmd.serve`` with an API key in front of two
simulated engines, sent over a thousand generated malformed OpenAI requests (bad JSON, wrong types for
every field the router reads, huge numbers, unicode, nested garbage, bad or missing keys, bad paths and
methods, oversized bodies). None may get a 5xx, and afterwards the router still answers a normal request
correctly with every engine healthy and every breaker closed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support import FIXTURES, free_port, python_module, running, wait_http, wait_until

pytestmark = pytest.mark.integration

MODEL = "sim-llama"
KEY = "sk-fuzz"
MAX_LEN = 256
MAX_BODY = 256 << 10  # small, so that oversized bodies are cheap to send
TOKENIZER = FIXTURES / "vllm-kv-events" / "tokenizer"
AUTH = {"authorization": f"Bearer {KEY}"}
FIELDS = ("model", "prompt", "messages", "max_tokens", "max_completion_tokens", "stream", "temperature", "top_p",
          "n", "user", "stream_options", "stop", "seed", "logprobs", "kv_transfer_params")


def fuzz(examples: int) -> settings:
    """Deterministic in CI: the same examples every run, no example database, no per-example deadline."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def router() -> Iterator[httpx.Client]:
    """The router with the model's tokenizer and KV events on, so that its tokenizing, indexing and
    context-length paths see the garbage too."""
    router_port = free_port()
    with contextlib.ExitStack() as stack:
        engines = []
        for _ in range(2):
            port, events = free_port(), free_port()
            proc = stack.enter_context(running(python_module(
                "serving.llmd.sim", "--model", MODEL, "--engines", "1", "--base-port", str(port),
                "--zmq-base-port", str(events), "--tokenizer", str(TOKENIZER), "--block-size", "16",
                "--max-model-len", str(MAX_LEN), "--prefill-ms-per-token", "0", "--decode-ms-per-token", "0")))
            engines.append((port, events, proc))
        for port, _, proc in engines:
            wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
        flags = [arg for port, events, _ in engines for arg in ("--engine", f"http://127.0.0.1:{port}=tcp://127.0.0.1:{events}")]
        proc = stack.enter_context(running(python_module(
            "serving.llmd.serve", "--port", str(router_port), "--model", MODEL, "--api-key", KEY,
            "--tokenizer", str(TOKENIZER), "--max-request-body-bytes", str(MAX_BODY), *flags)))
        base = f"http://127.0.0.1:{router_port}"
        wait_http(base + "/ready", proc=proc)
        with httpx.Client(base_url=base, timeout=30) as client:
            wait_until(lambda: client.get("/v1/models", headers=AUTH).json()["data"][0].get("max_model_len"),
                       timeout=30, what="the router learned the engines' context length")
            yield client
        assert proc.poll() is None, "the router exited during the fuzz"


# -- strategies ------------------------------------------------------------------------------------

text = st.text(max_size=40)
huge_int = st.sampled_from([-(2**63), -1, 0, 2**31, 2**53 + 1, 2**63 - 1, 2**64 - 1])
scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), huge_int,
                   st.floats(allow_nan=False, allow_infinity=False), text)
json_value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(text, inner, max_size=4)), max_leaves=12)
token_ids = st.lists(st.one_of(st.integers(-5, 50_000), huge_int, st.booleans()), max_size=8)
good_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]), "content": text})
message = st.one_of(good_message, json_value, st.fixed_dictionaries({"role": json_value, "content": json_value}),
                    st.fixed_dictionaries({"role": st.just("user"), "content": st.lists(json_value, max_size=3)}))
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "model": st.one_of(st.just(MODEL), json_value),
    "prompt": st.one_of(text, st.lists(text, max_size=3), token_ids, st.lists(token_ids, max_size=3), json_value),
    "messages": st.one_of(st.lists(message, max_size=4), json_value),
    "max_tokens": st.one_of(st.integers(-3, 8), huge_int, json_value),
    "max_completion_tokens": st.one_of(st.integers(-3, 8), huge_int, json_value),
    "stream": st.one_of(st.booleans(), json_value),
    "temperature": st.one_of(st.floats(-1, 3), st.sampled_from([0, 1e308, -1e308]), json_value),
    "top_p": st.one_of(st.floats(-1, 2), json_value),
    "n": st.one_of(st.integers(-1, 3), json_value),
    "user": st.one_of(text, json_value),
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": json_value}), json_value),
    "stop": json_value, "seed": st.one_of(huge_int, json_value), "logprobs": json_value,
    "kv_transfer_params": json_value,
}


@st.composite
def openai_body(draw: st.DrawFn) -> dict[str, Any]:
    """A request body that is mostly right: the model, a prompt or messages and a few tokens, with some
    fields replaced by wrong values, dropped, or joined by garbage."""
    body: dict[str, Any] = {"model": MODEL, "prompt": "hello", "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": 2}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        body[name] = draw(VALUES[name])
    for name in draw(st.lists(st.sampled_from(["model", "prompt", "messages", "max_tokens"]), max_size=2)):
        body.pop(name, None)
    body.update(draw(st.dictionaries(text, json_value, max_size=2)))
    return body


def assert_client_error_or_success(response: httpx.Response, what: object) -> None:
    event(f"status {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.text[:500], what)
    if response.status_code >= 400 and response.status_code not in (404, 405):
        error = response.json()["error"]  # an OpenAI error body that says what was wrong
        assert isinstance(error, dict) and error["message"], response.text



@fuzz(500)
@given(path=st.sampled_from(["/v1/completions", "/v1/chat/completions"]), body=openai_body())
def test_malformed_fields(router: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = router.post(path, content=orjson.dumps(body), headers={**AUTH, "content-type": "application/json"})
    assert_client_error_or_success(response, body)


raw_json = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    json_value.map(orjson.dumps),
    openai_body().map(lambda b: orjson.dumps(b)[: max(1, len(orjson.dumps(b)) // 2)]),  # cut off
    st.sampled_from([b"", b"null", b"[]", b"1e400", b'{"model": NaN}', b'{"model": "%s", "prompt": "\\ud800"}' % MODEL.encode(),
                     b'{"model": "%s", "max_tokens": 1e400, "prompt": "x"}' % MODEL.encode(),
                     b'{"model": "%s", "max_tokens": 123456789012345678901234567890, "prompt": "x"}' % MODEL.encode(),
                     b'{"a":' * 5000 + b"1" + b"}" * 5000, b'[' * 100_000,
                     b'{"model": "%s", "prompt": "%s"}' % (MODEL.encode(), b"x" * MAX_BODY)]),
)


@fuzz(200)
@given(path=st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/batches"]), raw=raw_json,
       content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1"]))
def test_bad_json(router: httpx.Client, path: str, raw: bytes, content_type: str) -> None:
    response = router.post(path, content=raw, headers={**AUTH, "content-type": content_type})
    assert_client_error_or_success(response, raw[:200])


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)


@fuzz(200)
@given(authorization=st.one_of(st.none(), header_text, header_text.map(lambda t: "Bearer " + t),
                               st.sampled_from([f"Bearer {KEY}", f"bearer {KEY}", f"Bearer  {KEY} ", f"Basic {KEY}",
                                                "Bearer", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}"])),
       priority=st.one_of(st.none(), header_text, st.sampled_from(["interactive", "batch", "streaming", "BATCH"])),
       session=st.one_of(st.none(), header_text),
       path=st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/batches", "/health",
                             "/metrics", "/ready"]))
def test_keys_and_routing_headers(router: httpx.Client, authorization: str | None, priority: str | None,
                                  session: str | None, path: str) -> None:
    headers = {name: value.strip(" ").encode("latin-1") for name, value in (  # h11 sends no edge spaces
        ("authorization", authorization), ("x-priority", priority), ("x-session-id", session)) if value is not None}
    body = {"model": MODEL, "prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    if path in ("/v1/models", "/health", "/metrics", "/ready"):
        response = router.get(path, headers=headers)
    elif path == "/v1/batches":
        line = {"custom_id": "a", "url": "/v1/completions", "body": body}
        response = router.post(path, content=orjson.dumps(line), headers=headers)
    else:
        response = router.post(path, json=body, headers=headers)
    assert_client_error_or_success(response, headers)
    valid = (authorization or "").strip().split(" ", 1)
    if path.startswith("/v1/") and not (len(valid) == 2 and valid[0].lower() == "bearer" and valid[1].strip() == KEY):
        assert response.status_code == 401


@fuzz(150)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO"]),
       path=st.one_of(st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/batches",
                                       "/health", "/metrics", "/ready", "/", "//v1/completions", "/v1/completions/",
                                       "/v1/../v1/completions", "/v1/completions?x=1", "/v1/%63ompletions",
                                       "/v1/completions%00", "/" + "a" * 8000]),
                      st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80).map(lambda t: "/" + t)))
def test_paths_and_methods(router: httpx.Client, method: str, path: str) -> None:
    try:
        request = router.build_request(method, path, content=b'{"model": "%s", "prompt": "x"}' % MODEL.encode(),
                                       headers=AUTH)
    except (httpx.InvalidURL, ValueError):
        return  # httpx cannot send it: nothing to test
    response = router.send(request)
    assert response.status_code < 500, (method, path, response.status_code, response.text[:300])


batch_line = st.one_of(
    st.fixed_dictionaries({"custom_id": st.one_of(text, json_value), "method": st.one_of(st.just("POST"), json_value),
                           "url": st.one_of(st.sampled_from(["/v1/completions", "/v1/chat/completions"]), json_value),
                           "body": st.one_of(openai_body(), json_value)}),
    json_value)


@fuzz(150)
@given(lines=st.lists(batch_line, max_size=4))
def test_batches(router: httpx.Client, lines: list[Any]) -> None:
    raw = b"\n".join(orjson.dumps(line) for line in lines)
    response = router.post("/v1/batches", content=raw, headers=AUTH)
    assert_client_error_or_success(response, lines)


def test_limits_set_by_flags_hold_over_the_wire(router: httpx.Client) -> None:
    too_big = router.post("/v1/completions", headers=AUTH, content=b"x" * (MAX_BODY + 1))
    assert too_big.status_code == 413
    assert too_big.json()["error"]["message"] == f"the request body is larger than {MAX_BODY} bytes"
    too_long = router.get("/v1/models", headers={**AUTH, "x-big": "h" * (70 << 10)})
    assert too_long.status_code == 431 and "head" in too_long.json()["error"]["message"]
    assert router.get("/v1/models", headers=AUTH).json()["data"][0]["id"] == MODEL


def test_the_router_still_answers_correctly_afterwards(router: httpx.Client) -> None:
    """Runs last: the fuzz left no engine out of the pool, no breaker open and nothing stuck in flight."""
    done = router.post("/v1/completions", headers=AUTH, json={"model": MODEL, "prompt": "after the fuzz",
                                                               "max_tokens": 3})
    assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] == 3
    chat = router.post("/v1/chat/completions", headers=AUTH, json={
        "model": MODEL, "messages": [{"role": "user", "content": "still there?"}], "max_tokens": 2})
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
    health = wait_until(lambda: (h := router.get("/health/detail", headers=AUTH).json())["queue_depth"] == 0 and
                        all(p["in_flight"] == 0 for p in h["pods"].values()) and h, timeout=10,
                        what="nothing left in flight")
    assert all(p["healthy"] and p["breaker"] == "closed" for p in health["pods"].values()), health
