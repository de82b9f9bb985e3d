"""The daemon's control API as an attacker and a careless user meet it: a real daemon on a real socket.

Who may connect (file modes, then the peer's uid by SO_PEERCRED, checked as another uid for real in a
forked child), which kinds are taken, what a bad body gets, the replica limit, and a database holding
junk that must not stop anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from support import IRIS_DIR, running_platform, wait_until

from serving.errors import AdmissionError
from serving.platform.local import LocalPlatform
from serving.platform.local.store import ObjectStore

pytestmark = pytest.mark.integration

NOBODY = 65534  # another local user, as the attacker
DAEMON_USER = 1  # a third uid, for a daemon that itself runs as NOBODY
MAX_REPLICAS = 2
USER_KINDS = ("InferenceService", "LLMInferenceService", "ServingRuntime", "ClusterServingRuntime")


def iris_isvc(name: str = "iris", **predictor: object) -> dict:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"predictor": {"sklearn": {"storageUri": IRIS_DIR.as_uri()}, **predictor}}}


@pytest.fixture(scope="module")
def state() -> Iterator[Path]:
    # Directly under /tmp (pytest's own temporary directories are 0700 root, which would hide the socket
    # from other users whatever the daemon does), and 0755 as `mkdir` leaves it: the daemon must tighten it.
    path = Path(tempfile.mkdtemp(prefix="odh-control-api-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def platform(state: Path) -> Iterator[LocalPlatform]:
    with running_platform(state, env={"ODH_MAX_REPLICAS": str(MAX_REPLICAS)}) as client:
        yield client


@pytest.fixture(scope="module")
def api(state: Path, platform: LocalPlatform) -> Iterator[httpx.Client]:
    """Raw HTTP on the control socket: what any program could send, not just our client."""
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(state / "api.sock")), base_url="http://odh", timeout=30) as client:
        yield client


# -- running code as another uid ------------------------------------------------------------------


def as_uid(uid: int, action: Callable[[], str], timeout: float = 30.0) -> str:
    """Run ``action`` in a forked child whose real and effective uid (and gid) are ``uid``; its result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to uid, act, report, leave without running the parent's cleanups
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            result = action()
        except BaseException as exc:  # reported to the parent
            result = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(BaseException):
            os.write(write_end, result.encode())
        os._exit(0)
    os.close(write_end)
    try:
        wait_until(lambda: select.select([read_end], [], [], 0)[0], timeout=timeout, what=f"uid {uid}'s answer")
        chunks = []
        while chunk := os.read(read_end, 65536):  # to EOF: the child has written all and exited
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)


def http_get(socket_path: Path, path: str = "/healthz") -> Callable[[], str]:
    """A raw HTTP GET over the Unix socket; answers ``"<status> <body>"``."""

    def get() -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(20)
            sock.connect(str(socket_path))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: odh\r\nConnection: close\r\n\r\n".encode())
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        head, _, body = response.partition(b"\r\n\r\n")
        return f"{head.split(b' ')[1].decode()} {body.decode()}"

    return get


# -- item 2: who may use the socket ---------------------------------------------------------------


def test_the_state_directory_is_0700_and_the_socket_0600(state: Path, platform: LocalPlatform) -> None:
    assert platform.is_running()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    sock = state / "api.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600


def test_another_user_cannot_even_reach_the_socket(state: Path, platform: LocalPlatform) -> None:
    assert as_uid(NOBODY, http_get(state / "api.sock")).startswith("PermissionError")
    # Our own client says why, in a sentence (not a traceback, not "start it with odh up").
    said = as_uid(NOBODY, lambda: repr(LocalPlatform(state).info()))
    assert said.startswith("PlatformError") and "belongs to another user" in said, said
    assert platform.is_running()


def test_another_uid_is_refused_by_its_peer_credentials_even_when_the_modes_are_loosened(
        state: Path, platform: LocalPlatform) -> None:
    sock = state / "api.sock"
    try:  # as a user's careless chmod would leave them: now only the uid check stands in the way
        state.chmod(0o755)
        sock.chmod(0o666)
        answer = as_uid(NOBODY, http_get(sock, "/info"))
        said = as_uid(NOBODY, lambda: repr(LocalPlatform(state).info()))
    finally:
        state.chmod(0o700)
        sock.chmod(0o600)
    status, _, body = answer.partition(" ")
    assert status == "403", answer
    assert "uid 65534" in json.loads(body)["error"] and "gateway" not in body
    assert said.startswith("PlatformError") and "403" in said and "forbidden" in said, said
    log = wait_until(lambda: "refused" in (text := (state / "daemon.log").read_text()) and text, what="the refusal logged")
    assert "refused a control API connection from uid 65534" in log
    assert http_get(sock, "/healthz")().startswith("200 ")  # root still is served


def test_a_daemon_running_as_another_user_serves_that_user_and_root_only() -> None:
    """The rule is "the daemon's own uid or root": shown with a server whose own uid is not root."""
    from serving.platform.local.peercred import allowed_uids, bind_private_socket, peer_checked_protocol

    workdir = Path(tempfile.mkdtemp(prefix="odh-peercred-"))
    os.chown(workdir, NOBODY, NOBODY)
    workdir.chmod(0o755)
    sock_path = workdir / "api.sock"
    pid = os.fork()
    if pid == 0:  # the server, as NOBODY
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock = bind_private_socket(sock_path)
            sock_path.chmod(0o666)  # the file mode is not what is under test here: the peer check alone decides
            asyncio.run(_serve_hello(sock, peer_checked_protocol(allowed_uids())))
        finally:
            os._exit(0)
    try:
        wait_until(sock_path.exists, timeout=30, what="the server's socket")
        wait_until(lambda: stat.S_IMODE(sock_path.stat().st_mode) == 0o666, timeout=30, what="the socket opened up")
        assert as_uid(NOBODY, http_get(sock_path)) == "200 hello"  # its own uid
        assert http_get(sock_path)() == "200 hello"  # root
        refused = as_uid(DAEMON_USER, http_get(sock_path))
        assert refused.startswith("403 ") and "uid 1" in refused, refused
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for child in workdir.iterdir():
            child.unlink()
        workdir.rmdir()


async def _serve_hello(sock: socket.socket, protocol: type[asyncio.Protocol]) -> None:
    import uvicorn

    async def hello(scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})

    config = uvicorn.Config(hello, http=protocol, ws="none", lifespan="off", log_level="warning")
    await uvicorn.Server(config).serve(sockets=[sock])


# -- item 3: only the kinds users own, validated before storing ----------------------------------


@pytest.mark.parametrize(
    ("path_kind", "body"),
    [
        ("Deployment", {"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "x", "ownerReferences": ["x"]}, "spec": {}}),
        ("Nope", {"apiVersion": "v1", "kind": "Nope", "metadata": {"name": "x"}}),
        ("Nope", {"apiVersion": "v1", "metadata": {"name": "x"}}),  # no kind in the body
        ("InferenceService", {**iris_isvc("x"), "kind": "Deployment"}),
    ],
)
def test_kinds_users_do_not_own_are_refused_naming_kind_and_nothing_is_stored(
        api: httpx.Client, platform: LocalPlatform, path_kind: str, body: dict) -> None:
    response = api.post(f"/apis/{path_kind}", json=body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["field"] == "kind"
    if path_kind != "InferenceService":
        assert all(kind in error["reason"] for kind in USER_KINDS), error
    assert api.get(f"/apis/{body.get('kind', path_kind)}/default/x").status_code == 404


def test_a_user_kind_in_another_api_group_is_refused_naming_api_version(api: httpx.Client) -> None:
    response = api.post("/apis/InferenceService", json={**iris_isvc("x"), "apiVersion": "apps/v1"})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["apiVersion"]
    assert api.get("/apis/InferenceService/default/x").status_code == 404


def test_the_client_refuses_a_missing_kind_with_the_same_words(platform: LocalPlatform) -> None:
    with pytest.raises(AdmissionError) as refused:
        platform.apply({"apiVersion": "serving.kserve.io/v1beta1", "metadata": {"name": "x"}})
    assert refused.value.field == "kind" and "accepted kinds: InferenceService" in refused.value.reason


# -- items 4 and 7: bounded, and every bad body is a 4xx naming the body ---------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"{", "not valid JSON"),
        (b"{'a': 1}", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"InferenceService"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}", "nests deeper than 64"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests deeper than 64"),
    ],
)
def test_a_body_that_is_not_one_json_object_is_400_naming_the_body(api: httpx.Client, body: bytes, words: str) -> None:
    response = api.post("/apis/InferenceService", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "body" and words in response.json()["error"]


def test_a_body_over_the_limit_is_413_whether_or_not_it_says_its_length(api: httpx.Client) -> None:
    big = b'{"a": "' + b"x" * (4 << 20) + b'"}'
    declared = api.post("/apis/InferenceService", content=big)
    assert declared.status_code == 413 and "limit" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to refuse early on
        for start in range(0, len(big), 1 << 20):
            yield big[start:start + (1 << 20)]

    streamed = api.post("/apis/InferenceService", content=chunks())
    assert streamed.status_code == 413 and "limit" in streamed.json()["error"]
    assert api.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        (iris_isvc("big", minReplicas=MAX_REPLICAS + 1), "spec.predictor.minReplicas"),
        (iris_isvc("big", minReplicas=1, maxReplicas=500), "spec.predictor.maxReplicas"),
        ({"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService", "metadata": {"name": "big"},
          "spec": {"model": {"uri": "hf://org/m"}, "replicas": 500}}, "spec.replicas"),
    ],
)
def test_replicas_beyond_the_platform_limit_are_refused_naming_the_field_and_how_to_raise_it(
        platform: LocalPlatform, obj: dict, field: str) -> None:
    assert platform.info()["limits"] == {"max_replicas": MAX_REPLICAS}
    with pytest.raises(AdmissionError) as refused:
        platform.apply(obj)
    reasons = {e.field: e.reason for e in refused.value.errors}
    assert f"limit of {MAX_REPLICAS} replicas" in reasons[field]
    assert "--max-replicas" in reasons[field] and "ODH_MAX_REPLICAS" in reasons[field]
    assert platform.list(obj["kind"]) == []


# -- item 3: one bad object must not stop the platform --------------------------------------------


def _conditions(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}


def test_junk_in_the_database_stops_nothing_else_is_reported_and_can_be_deleted(
        state: Path, platform: LocalPlatform, gateway_answers: Callable[[str], bool]) -> None:
    # As a database from an older version could hold them, written past admission, while the daemon runs.
    junk = ObjectStore(state / "platform.db")
    try:
        junk.put({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "ownerReferences": ["x"]}})
        junk.put({"apiVersion": "v1", "kind": "Nope", "metadata": {"name": "n"}})
        junk.put({**iris_isvc("broken"), "spec": {"predictor": "junk"}})
        junk.put(iris_isvc("huge", minReplicas=500))
    finally:
        junk.close()
    platform.apply(iris_isvc("iris"))
    iris = platform.wait_ready("InferenceService", "default", "iris", timeout=120)
    assert gateway_answers(iris["status"]["url"])

    def reported(name: str) -> dict | None:
        ready = _conditions(platform.get("InferenceService", "default", name)).get("Ready", {})
        return ready if ready.get("reason") == "InvalidSpec" else None

    assert "spec.predictor" in wait_until(lambda: reported("broken"), timeout=30, what="broken's status")["message"]
    huge = wait_until(lambda: reported("huge"), timeout=30, what="huge's status")["message"]
    assert "spec.predictor.minReplicas: is 500" in huge and f"limit of {MAX_REPLICAS}" in huge
    assert not [p for p in platform.pods() if p["deployment"] == "huge-predictor"]  # 500 processes never started

    ignored = wait_until(lambda: {(i["kind"], i["name"]): i["message"] for i in platform.info()["ignored"]},
                         timeout=30, what="the ignored objects listed")
    assert set(ignored) == {("Deployment", "x"), ("Nope", "n")}
    assert "odh delete Deployment x -n default" in ignored[("Deployment", "x")]
    ignored_condition = wait_until(lambda: _conditions(platform.get("Deployment", "default", "x")).get("Ignored"),
                                   timeout=30, what="the Deployment's Ignored condition")
    assert ignored_condition["status"] == "True"

    # What `odh delete` does: any stored kind goes, also those no one can apply any more.
    for kind, name in (("Deployment", "x"), ("Nope", "n"), ("InferenceService", "broken"), ("InferenceService", "huge")):
        assert platform.delete(kind, "default", name)
    assert wait_until(lambda: platform.info()["ignored"] == [], timeout=30, what="nothing ignored any more")
    assert gateway_answers(platform.get("InferenceService", "default", "iris")["status"]["url"])
    assert platform.delete("InferenceService", "default", "iris")


@pytest.fixture()
def gateway_answers() -> Callable[[str], bool]:
    body = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())

    def answers(url: str) -> bool:
        response = httpx.post(f"{url}/v1/models/iris:predict", json=body, timeout=30)
        return response.status_code == 200 and response.json()["predictions"] == [1, 1]

    return answers


def test_the_api_still_answers_after_all_of_that(api: httpx.Client, platform: LocalPlatform) -> None:
    runtime = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime", "metadata": {"name": "rt"},
               "spec": {"supportedModelFormats": [{"name": "sklearn"}], "containers": [{"name": "c", "image": "i"}]}}
    assert platform.apply(runtime)["metadata"]["generation"] == 1
    assert platform.get("ServingRuntime", "default", "rt")["spec"] == runtime["spec"]
    assert platform.delete("ServingRuntime", "default", "rt")
    assert api.get("/apis/ServingRuntime/default/rt").status_code == 404
