"""Serverless InferenceServices on the embedded platform, as a user meets them: KServe's own sklearn manifest in
Serverless mode through ``odh apply -f``, revisions, scale to zero and back through the activator, the KPA under
a burst, canaries and tags. A real daemon, real model-server replicas, the real gateway; no request may fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from load import drive
from prometheus_client.parser import text_string_to_metric_families
from support import IRIS_DIR, running_platform, served_by, wait_until, wait_until_async, write_constant_model

from serving.platform.local import LocalPlatform

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).parents[1] / "fixtures" / "kserve" / "samples"
V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())
V2_BODY = json.loads((IRIS_DIR / "iris-input-v2.json").read_text())
# Knative's shortest windows, so a test sees a whole scale-up and scale-down in seconds.
PLATFORM_CONFIG = {"autoscaler": {"stable-window": "6s", "scale-to-zero-grace-period": "1s"}}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("odh-serverless")
    (root / "config.yaml").write_text(yaml.safe_dump(PLATFORM_CONFIG))
    return root


@pytest.fixture(scope="module")
def platform(state: Path) -> Iterator[LocalPlatform]:
    with running_platform(state) as client:
        yield client


def odh(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ODH_STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-m", "deployments.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def kserve_sklearn_sample(name: str, annotations: dict[str, str], **predictor: Any) -> dict[str, Any]:
    """KServe's sklearn iris sample (docs/samples/v1beta1/sklearn/v1), served from the local copy of its model."""
    manifest = yaml.safe_load((SAMPLES / "v1beta1__sklearn__v1__sklearn.yaml").read_text())
    manifest["metadata"] = {"name": name, "namespace": "default",
                            "annotations": {"serving.kserve.io/deploymentMode": "Serverless", **annotations}}
    manifest["spec"]["predictor"]["sklearn"]["storageUri"] = IRIS_DIR.as_uri()
    manifest["spec"]["predictor"].update(predictor)
    return manifest


def revisions(state: Path, isvc: str) -> list[dict[str, Any]]:
    result = odh(state, "get", "revisions", "-o", "json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["kind"] == "List"
    return [r for r in listing["items"] if r["metadata"]["labels"].get("serving.kserve.io/inferenceservice") == isvc]


def autoscaler_metrics(gateway: str) -> dict[tuple[str, str], dict[str, float]]:
    """Each revision's KPA gauges from the gateway's /metrics: {(metric, revision): value}."""
    text = httpx.get(f"{gateway}/metrics", timeout=10).text
    found: dict[tuple[str, str], dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("odh_autoscaler_"):
                found.setdefault((sample.name, sample.labels["revision_name"]), {})["value"] = sample.value
    return found


def gauge(gateway: str, metric: str, revision: str) -> float:
    return autoscaler_metrics(gateway).get((f"odh_autoscaler_{metric}", revision), {}).get("value", -1.0)


def test_kserve_sample_in_serverless_mode_scales_to_zero_and_answers_the_next_request(platform: LocalPlatform, state: Path,
                                                                                      tmp_path: Path) -> None:
    manifest = tmp_path / "sklearn.yaml"
    manifest.write_text(yaml.safe_dump(kserve_sklearn_sample("sklearn-iris", {}, minReplicas=0)))
    applied = odh(state, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    isvc = platform.wait_ready("InferenceService", "default", "sklearn-iris", timeout=120)
    status = isvc["status"]
    assert status["deploymentMode"] == "Knative"
    predictor = status["components"]["predictor"]
    assert predictor["latestCreatedRevision"] == predictor["latestReadyRevision"] == "sklearn-iris-predictor-00001"
    assert predictor["latestRolledoutRevision"] == "sklearn-iris-predictor-00001"
    assert predictor["traffic"] == [{"revisionName": "sklearn-iris-predictor-00001", "percent": 100, "latestRevision": True}]
    url = status["url"]
    v1 = httpx.post(f"{url}/v1/models/sklearn-iris:predict", json=V1_BODY, timeout=30)
    v2 = httpx.post(f"{url}/v2/models/sklearn-iris/infer", json=V2_BODY, timeout=30)
    assert v1.status_code == v2.status_code == 200, (v1.text, v2.text)
    assert v1.json()["predictions"] == [1, 1] and v2.json()["outputs"][0]["data"] == [1, 1]

    ksvc = platform.get("Service.serving.knative.dev", "default", "sklearn-iris-predictor")
    assert ksvc["apiVersion"] == "serving.knative.dev/v1"
    assert ksvc["status"]["latestReadyRevisionName"] == "sklearn-iris-predictor-00001"

    # Idle: the KPA takes the revision to zero after its stable window; Knative's status says so.
    def scaled_to_zero() -> dict[str, Any] | None:
        (revision,) = revisions(state, "sklearn-iris")
        return revision if revision["status"].get("actualReplicas") == 0 and revision["status"].get("desiredReplicas") == 0 else None

    revision = wait_until(scaled_to_zero, timeout=90, interval=0.5, what="the idle revision to scale to zero")
    conditions = {c["type"]: c for c in revision["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True"  # a revision at zero stays Ready (Active is False)
    assert conditions["Active"]["status"] == "False"
    assert not [p for p in platform.pods() if p["deployment"] == "sklearn-iris-predictor-00001-deployment" and p["pid"]]
    assert platform.get("InferenceService", "default", "sklearn-iris")["status"]["conditions"]

    # The next request is held by the gateway's activator, wakes the revision and is answered.
    started = time.monotonic()
    woke = httpx.post(f"{url}/v1/models/sklearn-iris:predict", json=V1_BODY, timeout=60)
    elapsed = time.monotonic() - started
    assert woke.status_code == 200, woke.text
    assert woke.json()["predictions"] == [1, 1]
    print(f"scale from zero to first answer: {elapsed:.3f}s")
    (revision,) = revisions(state, "sklearn-iris")
    assert revision["status"]["desiredReplicas"] >= 1


def test_kpa_panics_under_a_burst_scales_up_and_back_down_and_no_request_fails(platform: LocalPlatform) -> None:
    name = "burst"
    platform.apply(kserve_sklearn_sample(name, {"autoscaling.knative.dev/target": "1"}, maxReplicas=8))
    isvc = platform.wait_ready("InferenceService", "default", name, timeout=120)
    gateway = isvc["status"]["url"].split("/serving/")[0]
    revision = f"{name}-predictor-00001"
    url = f"{isvc['status']['url']}/v1/models/{name}:predict"

    async def burst_and_watch() -> Any:
        load = asyncio.create_task(drive(url, V1_BODY, clients=8, duration=20.0))
        try:
            await wait_until_async(lambda: gauge(gateway, "panic_mode", revision) == 1, timeout=20, interval=0.2,
                                   what="the KPA to panic under the burst")
            await wait_until_async(lambda: gauge(gateway, "actual_pods", revision) > 1, timeout=20, interval=0.2,
                                   what="more than one ready replica under the burst")
        finally:
            result = await load
        return result

    result = asyncio.run(burst_and_watch())
    assert not result.failures, result.describe_failures()
    assert len(result.answers) > 100
    # After the stable window without load it comes back down to its minimum (1).
    wait_until(lambda: gauge(gateway, "desired_pods", revision) == 1 and gauge(gateway, "actual_pods", revision) == 1,
               timeout=120, interval=0.5, what="the burst revision to scale back down")
    assert gauge(gateway, "panic_mode", revision) == 0


@pytest.fixture(scope="module")
def v2_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_constant_model(tmp_path_factory.mktemp("v2-model"))


def traffic(platform: LocalPlatform, name: str) -> dict[str, int]:
    status = platform.get("InferenceService", "default", name)["status"]
    return {t["revisionName"]: t["percent"] for t in status["components"]["predictor"].get("traffic") or [] if t["percent"]}


def test_canary_split_rollback_promotion_and_tags_lose_no_request(platform: LocalPlatform, v2_model: Path) -> None:
    name = "canary"
    tags = {"serving.kserve.io/enable-tag-routing": "true"}
    v1_rev, v2_rev = f"{name}-predictor-00001", f"{name}-predictor-00002"
    platform.apply(kserve_sklearn_sample(name, tags))
    isvc = platform.wait_ready("InferenceService", "default", name, timeout=120)
    url = isvc["status"]["url"]
    predict = f"{url}/v1/models/{name}:predict"

    def canary(percent: int | None) -> dict[str, Any]:
        manifest = kserve_sklearn_sample(name, tags)
        manifest["spec"]["predictor"]["sklearn"]["storageUri"] = v2_model.as_uri()
        if percent is not None:
            manifest["spec"]["predictor"]["canaryTrafficPercent"] = percent
        return manifest

    async def scenario() -> dict[str, Any]:
        # A steady background load runs through every change: not one of its requests may fail.
        stop = asyncio.Event()
        background = asyncio.create_task(drive(predict, V1_BODY, clients=2, stop=stop, identify=served_by))
        found: dict[str, Any] = {}
        try:
            platform.apply(canary(20))
            await wait_until_async(lambda: traffic(platform, name) == {v1_rev: 80, v2_rev: 20}, timeout=120, interval=0.2,
                                   what="the 80/20 split once v2 is ready")
            found["split"] = await drive(predict, V1_BODY, clients=8, total=1000, identify=served_by)
            prefix = url.rsplit("/", 1)[0]
            found["latest"] = await drive(f"{prefix}/latest-{name}/v1/models/{name}:predict", V1_BODY, clients=2, total=20,
                                          identify=served_by)
            found["prev"] = await drive(f"{prefix}/prev-{name}/v1/models/{name}:predict", V1_BODY, clients=2, total=20,
                                        identify=served_by)
            platform.apply(canary(0))  # rollback: everything to the previous rolled-out revision, at once
            await wait_until_async(lambda: traffic(platform, name) == {v1_rev: 100}, timeout=30, interval=0.1,
                                   what="the rollback to v1")
            found["rollback"] = await drive(predict, V1_BODY, clients=8, total=200, identify=served_by)
            platform.apply(canary(None))  # promotion: the field removed
            await wait_until_async(lambda: traffic(platform, name) == {v2_rev: 100}, timeout=60, interval=0.1,
                                   what="the promotion of v2")
            found["promoted"] = await drive(predict, V1_BODY, clients=8, total=200, identify=served_by)
        finally:
            stop.set()
            found["background"] = await background
        return found

    found = asyncio.run(scenario())
    for phase, result in found.items():
        assert not result.failures, f"{phase}: {result.describe_failures()}"
    assert 0.15 <= found["split"].share("v2") <= 0.25, found["split"].by()
    assert found["latest"].by() == {"v2": 20}, found["latest"].by()
    assert found["prev"].by() == {"v1": 20}, found["prev"].by()
    assert found["rollback"].by() == {"v1": 200}, found["rollback"].by()
    assert found["promoted"].by() == {"v2": 200}, found["promoted"].by()
    predictor = platform.get("InferenceService", "default", name)["status"]["components"]["predictor"]
    assert predictor["latestRolledoutRevision"] == v2_rev
    assert predictor["previousRolledoutRevision"] == v1_rev
