"""The embedded platform end to end: a real daemon, real model-server replicas, the real gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import IRIS_DIR, free_port, running_platform, wait_until

from serving.errors import AdmissionError
from serving.platform.local import LocalPlatform, start_daemon, stop_daemon

pytestmark = pytest.mark.integration

V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())
V2_BODY = json.loads((IRIS_DIR / "iris-input-v2.json").read_text())


def iris_isvc(name: str = "iris", storage_uri: str | None = None, **predictor) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"predictor": {"sklearn": {"storageUri": storage_uri or IRIS_DIR.as_uri()}, **predictor}},
    }


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("odh-state")


@pytest.fixture(scope="module")
def gateway_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def platform(state: Path, gateway_port: int) -> Iterator[LocalPlatform]:
    with running_platform(state, gateway_port) as client:
        yield client


def predictions(url: str, name: str = "iris") -> tuple[list, list]:
    v1 = httpx.post(f"{url}/v1/models/{name}:predict", json=V1_BODY, timeout=30).raise_for_status().json()
    v2 = httpx.post(f"{url}/v2/models/{name}/infer", json=V2_BODY, timeout=30).raise_for_status().json()
    return v1["predictions"], v2["outputs"][0]["data"]


def iris_pods(platform: LocalPlatform) -> list[dict]:
    return [p for p in platform.pods() if p["deployment"] == "iris-predictor"]


def test_iris_becomes_ready_and_answers_v1_and_v2_through_the_gateway(platform: LocalPlatform, gateway_port: int) -> None:
    applied = platform.apply(iris_isvc())
    assert applied["spec"]["predictor"]["model"]["modelFormat"]["name"] == "sklearn"  # shortcut defaulted
    isvc = platform.wait_ready("InferenceService", "default", "iris", timeout=90)
    url = isvc["status"]["url"]
    assert url == f"http://127.0.0.1:{gateway_port}/serving/default/iris"
    conditions = {c["type"]: c["status"] for c in isvc["status"]["conditions"]}
    assert conditions["PredictorReady"] == conditions["IngressReady"] == conditions["Ready"] == "True"
    assert predictions(url) == ([1, 1], [1, 1])
    deployment = platform.get("Deployment", "default", "iris-predictor")
    assert deployment["status"]["readyReplicas"] == 1
    metrics = httpx.get(f"http://127.0.0.1:{gateway_port}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.text) for s in family.samples}
    assert samples[("odh_gateway_requests_total", (("code", "200"), ("route", "default/iris")))] == 2


def test_the_kserve_sdk_rest_client_works_unchanged_v1_and_v2(platform: LocalPlatform) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    url = platform.wait_ready("InferenceService", "default", "iris", timeout=90)["status"]["url"]

    async def ask() -> tuple[object, object]:
        v1_client = InferenceRESTClient(RESTConfig(protocol="v1", timeout=30))
        v2_client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            v1 = await v1_client.infer(url, V1_BODY, model_name="iris")
            request = InferRequest(model_name="iris", infer_inputs=[
                InferInput(name="input-0", shape=[2, 4], datatype="FP32",
                           data=[6.8, 2.8, 4.8, 1.4, 6.0, 3.4, 4.5, 1.6])])
            v2 = await v2_client.infer(url, request, model_name="iris")
            return v1, v2
        finally:
            await v1_client._client.aclose()
            await v2_client._client.aclose()

    v1, v2 = asyncio.run(ask())
    assert v1["predictions"] == [1, 1]
    assert v2.outputs[0].data == [1, 1]


def test_a_killed_replica_is_restarted_and_answers_again(platform: LocalPlatform) -> None:
    url = platform.wait_ready("InferenceService", "default", "iris", timeout=90)["status"]["url"]
    (pod,) = iris_pods(platform)
    os.kill(pod["pid"], signal.SIGKILL)
    restarted = wait_until(lambda: [p for p in iris_pods(platform) if p["restarts"] >= pod["restarts"] + 1 and p["ready"]],
                           timeout=60, interval=0.2, what="the killed replica restarted and ready")
    assert restarted[0]["pid"] != pod["pid"]
    platform.wait_ready("InferenceService", "default", "iris", timeout=60)
    assert predictions(url) == ([1, 1], [1, 1])


def test_an_invalid_manifest_names_the_field_and_changes_nothing(platform: LocalPlatform) -> None:
    before = platform.wait_ready("InferenceService", "default", "iris", timeout=90)
    pods_before = [(p["pid"], p["port"]) for p in iris_pods(platform)]
    with pytest.raises(AdmissionError) as rejected:
        platform.apply(iris_isvc(minReplicas=-1, storage_uri="ftp://nowhere/model"))
    fields = {e.field for e in rejected.value.errors}
    assert "spec.predictor.minReplicas" in fields
    assert any("storageUri" in f for f in fields)
    after = platform.get("InferenceService", "default", "iris")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    assert [(p["pid"], p["port"]) for p in iris_pods(platform)] == pods_before
    assert predictions(before["status"]["url"]) == ([1, 1], [1, 1])


def test_a_failed_rollout_leaves_the_old_version_serving(platform: LocalPlatform, tmp_path: Path) -> None:
    url = platform.wait_ready("InferenceService", "default", "iris", timeout=90)["status"]["url"]
    old_pids = {p["pid"] for p in iris_pods(platform) if p["ready"]}
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.joblib").write_bytes(b"this is not a pickle")
    platform.apply(iris_isvc(storage_uri=broken.as_uri()))

    def rollout_failed() -> dict | None:
        deployment = platform.get("Deployment", "default", "iris-predictor")
        progressing = {c["type"]: c for c in deployment["status"].get("conditions", [])}["Progressing"]
        return deployment if progressing["status"] == "False" else None

    wait_until(rollout_failed, timeout=90, interval=0.2, what="the broken rollout marked failed")
    assert predictions(url) == ([1, 1], [1, 1])
    assert old_pids <= {p["pid"] for p in iris_pods(platform) if p["ready"]}
    isvc = platform.get("InferenceService", "default", "iris")
    assert isvc["status"]["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"
    # Roll back to the good model: the broken replica set goes away, the old one keeps serving.
    platform.apply(iris_isvc())
    wait_until(lambda: len(iris_pods(platform)) == 1, timeout=60, interval=0.2, what="the broken replica set gone")
    platform.wait_ready("InferenceService", "default", "iris", timeout=60)
    assert predictions(url) == ([1, 1], [1, 1])


def test_the_deployment_survives_a_daemon_restart(platform: LocalPlatform, state: Path, gateway_port: int) -> None:
    url = platform.wait_ready("InferenceService", "default", "iris", timeout=90)["status"]["url"]
    old_pids = [p["pid"] for p in iris_pods(platform)]
    assert stop_daemon(state)
    for pid in old_pids:  # replicas stop with their daemon
        wait_until(lambda pid=pid: not _alive(pid), timeout=20, interval=0.2, what=f"replica {pid} stopped")
    start_daemon(state, gateway_port)
    isvc = platform.wait_ready("InferenceService", "default", "iris", timeout=90)
    assert isvc["status"]["url"] == url
    assert predictions(url) == ([1, 1], [1, 1])


def test_delete_stops_the_replicas_and_the_route(platform: LocalPlatform) -> None:
    url = platform.wait_ready("InferenceService", "default", "iris", timeout=90)["status"]["url"]
    pids = [p["pid"] for p in iris_pods(platform)]
    assert platform.delete("InferenceService", "default", "iris")
    assert iris_pods(platform) == []
    assert all(not _alive(pid) for pid in pids)
    assert httpx.post(f"{url}/v1/models/iris:predict", json=V1_BODY).status_code == 404
    assert platform.list("Deployment") == []
    assert not platform.delete("InferenceService", "default", "iris")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False
