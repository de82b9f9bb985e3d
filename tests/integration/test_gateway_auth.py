"""API keys per namespace at the gateway, on a real daemon and real replicas: an InferenceService annotated
``security.opendatahub.io/enable-auth: "true"`` answers only with a key of its namespace (a Secret of type
``serving.odh.io/api-key``); key changes count at once; routes without auth do not notice; hostile headers
get 401s and break nothing. With ``ODH_GATEWAY_AUTH=required`` every route asks for a key."""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import IRIS_DIR, free_port, running_platform

from serving.platform.local import LocalPlatform

pytestmark = pytest.mark.integration

V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())
KEY_A = "team-a-" + secrets.token_hex(16)
KEY_B = "team-b-" + secrets.token_hex(16)


def apply_tenancy_object(platform: LocalPlatform, obj: dict[str, Any]) -> dict[str, Any]:
    """A Secret through the client `odh apply -f` uses."""
    return platform.apply(obj)


def key_secret(namespace: str, **keys: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "serving.odh.io/api-key",
            "metadata": {"name": "api-keys", "namespace": namespace}, "stringData": keys}


def iris(name: str, namespace: str, auth: bool) -> dict[str, Any]:
    annotations = {"security.opendatahub.io/enable-auth": "true"} if auth else {}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"predictor": {"sklearn": {"storageUri": IRIS_DIR.as_uri()}}}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalPlatform, str]]:
    port = free_port()
    with running_platform(tmp_path_factory.mktemp("odh-auth"), port) as platform:
        apply_tenancy_object(platform, key_secret("team-a", ci=KEY_A))
        apply_tenancy_object(platform, key_secret("team-b", ci=KEY_B))
        platform.apply(iris("guarded", "team-a", auth=True))
        platform.apply(iris("open", "team-b", auth=False))
        for ns, name in (("team-a", "guarded"), ("team-b", "open")):
            platform.wait_ready("InferenceService", ns, name, timeout=120)
        yield platform, f"http://127.0.0.1:{port}"


def predict(base: str, ns: str, name: str, key: str | None = None, **headers: str) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{base}/serving/{ns}/{name}/v1/models/{name}:predict", json=V1_BODY, headers=headers, timeout=30)


def test_no_key_401_namespace_key_200_other_namespace_key_refused(gateway: tuple[LocalPlatform, str]) -> None:
    _, base = gateway
    missing = predict(base, "team-a", "guarded")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "team-a" in missing.json()["error"]
    assert predict(base, "team-a", "guarded", KEY_A).json()["predictions"] == [1, 1]
    other = predict(base, "team-a", "guarded", KEY_B)
    assert other.status_code == 403
    assert other.json() == {"error": "the API key does not grant access to namespace team-a"}
    assert "www-authenticate" not in other.headers
    # The same route by Host, and by the bare V1 path: the key is asked for whichever way it is reached.
    by_host = httpx.post(f"{base}/v1/models/guarded:predict", json=V1_BODY, headers={"Host": "guarded.team-a.example.com"})
    assert by_host.status_code == 401
    assert httpx.post(f"{base}/v1/models/guarded:predict", json=V1_BODY).status_code == 401


def test_routes_without_auth_are_unaffected(gateway: tuple[LocalPlatform, str]) -> None:
    _, base = gateway
    assert predict(base, "team-b", "open").json()["predictions"] == [1, 1]
    assert predict(base, "team-b", "open", "any-garbage-at-all").status_code == 200  # not checked, passed on
    assert httpx.get(f"{base}/healthz").status_code == 200


def test_deleting_the_secret_revokes_at_once_and_applying_it_again_restores(gateway: tuple[LocalPlatform, str]) -> None:
    platform, base = gateway
    assert predict(base, "team-a", "guarded", KEY_A).status_code == 200
    assert platform.delete("Secret", "team-a", "api-keys")
    assert predict(base, "team-a", "guarded", KEY_A).status_code == 401  # no wait: the delete returned after it counted
    rotated = "team-a-" + secrets.token_hex(16)
    apply_tenancy_object(platform, key_secret("team-a", ci=rotated))
    assert predict(base, "team-a", "guarded", rotated).status_code == 200
    assert predict(base, "team-a", "guarded", KEY_A).status_code == 401
    apply_tenancy_object(platform, key_secret("team-a", ci=KEY_A, rotated=rotated))
    assert predict(base, "team-a", "guarded", KEY_A).status_code == 200
    stored = platform.get("Secret", "team-a", "api-keys")
    assert "stringData" not in stored and set(stored["data"]) == {"ci", "rotated"}


def raw_status(base: str, header_lines: bytes) -> tuple[int, bytes]:
    """Send a request with ``header_lines`` exactly as given (no client tidies them) and read the answer."""
    port = int(base.rsplit(":", 1)[1])
    body = json.dumps(V1_BODY).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /serving/team-a/guarded/v1/models/guarded:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), header_lines, body))
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return int(received.split(b" ", 2)[1]), received


@pytest.mark.parametrize("value", [
    b"", b"Bearer", b"Bearer ", b"Bearer \t ", b"Basic dXNlcjpwYXNz", b"bearer" + KEY_A.encode(), f"Bearer {KEY_A} {KEY_A}".encode(),
    f"Token {KEY_A}".encode(), b"Bearer " + KEY_A[:-1].encode(), b"Bearer " + KEY_A.encode() + b"x",
    "Bearer \u00e9\u00e9\u00e9".encode(), b"Bearer \xff\xfe\x80", b"Bearer " + b"A" * 40_000, b"Bearer\t" + KEY_A.encode(),
])
def test_malformed_or_wrong_authorization_is_401(gateway: tuple[LocalPlatform, str], value: bytes) -> None:
    _, base = gateway
    status, received = raw_status(base, b"Authorization: " + value + b"\r\n")
    assert status == 401, received[:200]
    assert b"www-authenticate: bearer" in received.lower()
    assert KEY_A.encode() not in received


def test_two_authorization_headers_and_a_head_over_the_limit_are_refused(gateway: tuple[LocalPlatform, str]) -> None:
    _, base = gateway
    twice = httpx.post(f"{base}/serving/team-a/guarded/v1/models/guarded:predict", json=V1_BODY,
                       headers=[("Authorization", f"Bearer {KEY_A}"), ("Authorization", f"Bearer {KEY_A}")])
    assert twice.status_code == 401
    huge = httpx.post(f"{base}/serving/team-a/guarded/v1/models/guarded:predict", json=V1_BODY,
                      headers={"Authorization": "Bearer " + "k" * 70_000})
    assert huge.status_code == 431


def test_many_wrong_keys_get_401_and_the_right_key_still_works(gateway: tuple[LocalPlatform, str]) -> None:
    _, base = gateway
    with httpx.Client(base_url=base, timeout=30) as client:
        codes = {client.post("/serving/team-a/guarded/v1/models/guarded:predict", json=V1_BODY,
                             headers={"Authorization": f"Bearer {secrets.token_hex(20)}"}).status_code for _ in range(300)}
        assert codes == {401}
        right = client.post("/serving/team-a/guarded/v1/models/guarded:predict", json=V1_BODY,
                            headers={"Authorization": f"Bearer {KEY_A}"})
        assert right.status_code == 200 and right.json()["predictions"] == [1, 1]
    assert predict(base, "team-b", "open").status_code == 200


def test_a_refused_request_on_a_kept_alive_connection_leaves_it_usable(gateway: tuple[LocalPlatform, str]) -> None:
    _, base = gateway
    port = int(base.rsplit(":", 1)[1])
    body = json.dumps(V1_BODY).encode()
    request = (b"POST /serving/team-a/guarded/v1/models/guarded:predict HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request % (len(body), b"", body) + request % (len(body), b"Authorization: Bearer %s\r\n" % KEY_A.encode(), body))
        received = b""
        while received.count(b"HTTP/1.1 ") < 2 or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    first, _, second = received.partition(b"HTTP/1.1 200")
    assert first.startswith(b"HTTP/1.1 401") and b"www-authenticate: bearer" in first.lower()
    assert b'"predictions":[1,1]' in second.replace(b" ", b"")


def test_gateway_auth_required_asks_every_route_for_a_key(tmp_path: Path) -> None:
    port = free_port()
    with running_platform(tmp_path, port, env={"ODH_GATEWAY_AUTH": "required"}) as platform:
        apply_tenancy_object(platform, key_secret("default", ci=KEY_A))
        platform.apply(iris("plain", "default", auth=False))
        platform.wait_ready("InferenceService", "default", "plain", timeout=120)
        base = f"http://127.0.0.1:{port}"
        assert predict(base, "default", "plain").status_code == 401
        assert predict(base, "default", "plain", KEY_A).json()["predictions"] == [1, 1]
        assert httpx.get(f"{base}/healthz").status_code == 200  # the gateway's own endpoints stay open
        assert httpx.get(f"{base}/metrics").status_code == 200
