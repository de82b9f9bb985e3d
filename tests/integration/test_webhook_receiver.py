"""The webhook receiver as MLflow and as an attacker meet it: a real receiver process, a real Prefect server.

The ``on-new-model-version`` deployment is created through Prefect's REST API (what serving the flow
does); no worker runs it here, so every flow run the receiver starts stays Scheduled and can be counted.
"""

from __future__ import annotations

import json
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature
from support import free_port, prefect_call, temporary_env

from deployments.prefect_server import start_prefect_server, stop_prefect_server
from deployments.webhooks import (
    BODY_DEADLINE_ENV,
    SECRET_FILE,
    FlowStarter,
    create_app,
    receiver_url,
    start_receiver,
    stop_receiver,
)

DEADLINE_S = 2.0


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("prefect-for-webhooks")
    api = start_prefect_server(state, free_port(), timeout=240)
    try:
        yield api
    finally:
        stop_prefect_server(state)


@pytest.fixture(scope="module")
def deployment_id(prefect_api: str) -> str:
    # Both upserts by name: sending them again is harmless.
    flow = prefect_call("POST", f"{prefect_api}/flows/", {"name": "on-new-model-version"})
    made = prefect_call("POST", f"{prefect_api}/deployments/", {"name": "on-new-model-version", "flow_id": flow["id"]})
    return str(made["id"])


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory, prefect_api: str, deployment_id: str) -> Iterator[tuple[str, Path]]:
    state = tmp_path_factory.mktemp("odh-webhooks")
    with temporary_env(**{BODY_DEADLINE_ENV: str(DEADLINE_S)}):
        url = start_receiver(state, free_port(), prefect_api)
    try:
        yield url, state
    finally:
        stop_receiver(state)


def secret_of(state: Path) -> str:
    return (state / SECRET_FILE).read_text().strip()


def delivery(secret: str, data: dict[str, object], entity: str = "model_version", action: str = "created",
             timestamp: float | None = None) -> tuple[dict[str, str], bytes]:
    """Headers and body as MLflow builds them, signed with MLflow's own function."""
    payload = json.dumps({"entity": entity, "action": action, "timestamp": "2025-10-09T00:00:00+00:00", "data": data})
    delivery_id, unix = str(uuid.uuid4()), str(int(time.time() if timestamp is None else timestamp))
    return {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": unix,
            "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, unix, payload)}, payload.encode()


def created(version: str, name: str = "iris") -> dict[str, object]:
    return {"name": name, "version": version, "source": "models:/m-1", "run_id": None, "tags": {}, "description": None}


def runs_of(api: str, deployment: str) -> list[dict[str, object]]:
    runs: list[dict[str, object]] = prefect_call("POST", f"{api}/flow_runs/filter",
                                                 {"flow_runs": {"deployment_id": {"any_": [deployment]}}})
    return runs


def test_secret_is_generated_once_and_private(receiver: tuple[str, Path]) -> None:
    _, state = receiver
    path = state / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret_of(state)) >= 32
    assert receiver_url(state) == receiver[0]


def test_a_signed_new_version_starts_one_flow_run_with_the_right_parameters(
        receiver: tuple[str, Path], prefect_api: str, deployment_id: str) -> None:
    url, state = receiver
    headers, body = delivery(secret_of(state), created("7", "sig-model"))
    answer = httpx.post(url, content=body, headers=headers, timeout=30)
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["flow_run_id"]
    run = prefect_call("GET", f"{prefect_api}/flow_runs/{run_id}")
    assert run["deployment_id"] == deployment_id
    assert run["name"] == "sig-model-v7"
    assert run["parameters"] == {"model_name": "sig-model", "version": "7", "alias": None, "state_dir": str(state)}
    assert run["state"]["type"] == "SCHEDULED"
    # MLflow retries a delivery with the same id: the same run answers, no second one is made.
    again = httpx.post(url, content=body, headers=headers, timeout=30)
    assert again.status_code == 202 and again.json()["flow_run_id"] == run_id
    assert [r["id"] for r in runs_of(prefect_api, deployment_id) if r["name"] == "sig-model-v7"] == [run_id]


def test_a_duplicate_after_a_receiver_restart_still_starts_nothing_new(
        receiver: tuple[str, Path], prefect_api: str, deployment_id: str, tmp_path: Path) -> None:
    """The delivery id is Prefect's idempotency key: a fresh receiver (empty memory) finds the same run."""
    _, state = receiver
    headers, body = delivery(secret_of(state), {"name": "dup-model", "alias": "champion", "version": "4"},
                             entity="model_version_alias")
    other = tmp_path / "second"
    with temporary_env(ODH_WEBHOOK_SECRET=secret_of(state)):
        second = start_receiver(other, free_port(), prefect_api)
    try:
        first_id = httpx.post(receiver[0], content=body, headers=headers, timeout=30).json()["flow_run_id"]
        answer = httpx.post(second, content=body, headers=headers, timeout=30)
        assert answer.status_code == 202 and answer.json()["flow_run_id"] == first_id
    finally:
        stop_receiver(other)
    run = prefect_call("GET", f"{prefect_api}/flow_runs/{first_id}")
    assert run["parameters"]["alias"] == "champion" and run["name"] == "dup-model-v4"
    assert not (other / SECRET_FILE).exists()  # the variable won: no file secret was made


@pytest.mark.parametrize("attack", ["wrong secret", "no signature", "altered body", "stale", "future", "replayed id"])
def test_forged_deliveries_get_401_and_start_nothing(
        receiver: tuple[str, Path], prefect_api: str, deployment_id: str, attack: str) -> None:
    url, state = receiver
    secret = "guessed" if attack == "wrong secret" else secret_of(state)
    when = {"stale": time.time() - 600, "future": time.time() + 600}.get(attack)
    headers, body = delivery(secret, created("99", f"forged-{attack.replace(' ', '-')}"), timestamp=when)
    if attack == "no signature":
        del headers["X-MLflow-Signature"]
    elif attack == "altered body":
        body = body.replace(b'"99"', b'"98"')
    elif attack == "replayed id":  # a signed delivery's signature on a new delivery id
        headers["X-MLflow-Delivery-Id"] = str(uuid.uuid4())
    before = len(runs_of(prefect_api, deployment_id))
    answer = httpx.post(url, content=body, headers=headers, timeout=30)
    assert answer.status_code == 401, answer.text
    check = {"no signature": "headers", "stale": "timestamp", "future": "timestamp"}.get(attack, "signature")
    assert answer.json()["check"] == check
    assert len(runs_of(prefect_api, deployment_id)) == before


@pytest.mark.parametrize(("content_type", "body", "status", "check"), [
    ("text/plain", None, 415, "content-type"),
    (None, None, 415, "content-type"),
    ("application/json", b"{not json", 400, "json"),
    ("application/json", b"[]", 400, "payload"),
    ("application/json", b'{"entity": "model_version", "action": "created", "data": {"name": "x"}}', 400, "payload"),
])
def test_bodies_that_are_not_mlflows_get_4xx(receiver: tuple[str, Path], content_type: str | None, body: bytes | None,
                                             status: int, check: str) -> None:
    url, state = receiver
    headers, signed = delivery(secret_of(state), created("1"))
    if body is not None:  # signed properly: the check after the signature refuses it
        headers["X-MLflow-Signature"] = _generate_hmac_signature(
            secret_of(state), headers["X-MLflow-Delivery-Id"], headers["X-MLflow-Timestamp"], body.decode())
    if content_type is None:
        del headers["Content-Type"]
    else:
        headers["Content-Type"] = content_type
    answer = httpx.post(url, content=body if body is not None else signed, headers=headers, timeout=30)
    assert (answer.status_code, answer.json()["check"]) == (status, check)


def test_oversized_bodies_are_refused_declared_or_streamed(receiver: tuple[str, Path]) -> None:
    url, state = receiver
    headers, _ = delivery(secret_of(state), created("1"))
    big = b"{" + b" " * 100_000 + b"}"
    assert httpx.post(url, content=big, headers=headers, timeout=30).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked, counted as it comes
        for _ in range(100):
            yield b" " * 1024

    answer = httpx.post(url, content=chunks(), headers=headers, timeout=30)
    assert answer.status_code == 413 and answer.json()["check"] == "size"


def test_a_slow_body_gets_408_and_others_are_served_meanwhile(receiver: tuple[str, Path]) -> None:
    url, state = receiver
    port = int(url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        slow.sendall(b"POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 500\r\n\r\n{\"entity\":")
        started = time.monotonic()
        # Meanwhile the receiver answers others at once.
        headers, body = delivery(secret_of(state), {"name": "x"}, entity="registered_model")
        assert httpx.post(url, content=body, headers=headers, timeout=5).status_code == 200
        answer = slow.recv(4096)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert DEADLINE_S - 0.5 <= elapsed < DEADLINE_S + 10


def test_oversized_headers_and_garbage_are_refused_without_a_500(receiver: tuple[str, Path]) -> None:
    url, _ = receiver
    port = int(url.split(":")[2].split("/")[0])
    for request in (b"POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40_000 + b"\r\n\r\n",
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",
                    b"POST /webhooks/mlflow HTTP/1.1\r\nContent-Length: -1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(request)
            answer = conn.recv(4096)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:80]
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_wrong_method_and_path(receiver: tuple[str, Path]) -> None:
    url, _ = receiver
    assert httpx.get(url, timeout=5).status_code == 405
    assert httpx.post(url.replace("/mlflow", "/github"), content=b"{}", timeout=5).status_code == 404


def test_ignored_events_are_acknowledged_and_start_nothing(
        receiver: tuple[str, Path], prefect_api: str, deployment_id: str) -> None:
    url, state = receiver
    before = len(runs_of(prefect_api, deployment_id))
    headers, body = delivery(secret_of(state), {"name": "iris", "version": "1", "key": "k", "value": "v"},
                             entity="model_version_tag", action="set")
    answer = httpx.post(url, content=body, headers=headers, timeout=30)
    assert answer.status_code == 200 and answer.json() == {"ignored": "model_version_tag.set"}
    assert len(runs_of(prefect_api, deployment_id)) == before


async def test_prefect_unreachable_or_without_the_deployment_is_503_with_retry_after(prefect_api: str) -> None:
    """MLflow retries 503 (and honours Retry-After): a delivery while Prefect is down is not lost."""
    secret = "s" * 32
    for api in (f"http://127.0.0.1:{free_port()}/api", prefect_api.replace("/api", "/nowhere")):
        app = create_app(secret, FlowStarter(api, None))
        headers, body = delivery(secret, created("1"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as client:
            answer = await client.post("/webhooks/mlflow", content=body, headers=headers)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5", answer.text
        assert "on-new-model-version" in answer.json()["error"]
