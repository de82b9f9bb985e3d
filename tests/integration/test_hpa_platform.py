"""Autoscalers that act on the embedded platform (issue 11, item 7): a real daemon, real model-server replicas,
load through the real gateway.

- an HPA-class InferenceService scales up on the CPU its replica processes burn and back down after the
  (short, platform-configured) scale-down stabilization window, with no request failing;
- an LLMInferenceService with ``spec.scaling`` (min 1, max 2, simulated engines) scales on queue depth and
  back, and the router follows the pool;
- a Standard ``spec.canary[]`` splits traffic through the gateway by weight.

Nothing here predicts what an autoscaler picks or when: each test drives load, observes the count the
platform reports, and acts on what it saw.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from load import LoadResult, drive
from support import IRIS_DIR, running_platform, wait_until, wait_until_async, write_constant_model, write_tiny_llm_dir

from serving.config import RUNTIMES_DIR_ENV
from serving.platform.local import LocalPlatform
from serving.platform.local.autoscalers import DOWNSCALE_STABILIZATION_ENV, ENGINE_SCALE_DOWN_WINDOW_ENV, SYNC_PERIOD_ENV

pytestmark = pytest.mark.integration

# A brute-force nearest-neighbour search over 40,000 points: ~60 ms of CPU per 50-row prediction, where
# the iris model answers in microseconds. Plain sklearn, so it loads in any replica (forked or spawned).
BURNER = """
import sys
import joblib
import numpy as np
from sklearn.neighbors import KNeighborsClassifier

rng = np.random.default_rng(0)
points = rng.random((40000, 4))
model = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(points, (points[:, 0] > 0.5).astype(int))
joblib.dump(model, sys.argv[1])
"""
ROWS = [[0.1 * (i % 10), 0.5, 0.25, 0.75] for i in range(50)]
BURN_BODY = {"inputs": [{"name": "input-0", "shape": [len(ROWS), 4], "datatype": "FP32", "data": ROWS}]}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    state = tmp_path_factory.mktemp("odh-autoscale-state")
    env = {SYNC_PERIOD_ENV: "1", DOWNSCALE_STABILIZATION_ENV: "4", ENGINE_SCALE_DOWN_WINDOW_ENV: "4",
           RUNTIMES_DIR_ENV: str(tmp_path_factory.mktemp("no-runtimes"))}
    with running_platform(state, env=env) as client:
        yield client


@pytest.fixture(scope="module")
def burner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("burner")
    subprocess.run([sys.executable, "-c", BURNER, str(out / "model.joblib")], check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def constant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_constant_model(tmp_path_factory.mktemp("constant"))


def ready_pods(platform: LocalPlatform, deployment: str) -> list[dict]:
    return [p for p in platform.pods() if p["deployment"] == deployment and p["ready"]]


def running_pods(platform: LocalPlatform, deployment: str) -> list[dict]:
    return [p for p in platform.pods() if p["deployment"] == deployment and p["state"] not in ("Terminating", "Stopped")]


def test_an_hpa_scales_up_on_cpu_and_back_down_after_the_window_dropping_nothing(
        platform: LocalPlatform, burner_dir: Path) -> None:
    platform.apply({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "burn", "namespace": "default", "annotations": {"serving.kserve.io/autoscalerClass": "hpa"}},
        "spec": {"predictor": {
            "minReplicas": 1, "maxReplicas": 3, "scaleMetric": "cpu", "scaleTarget": 50,
            "sklearn": {"storageUri": burner_dir.as_uri(),
                        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}},
        }},
    })
    isvc = platform.wait_ready("InferenceService", "default", "burn", timeout=120)
    url = f"{isvc['status']['url']}/v2/models/burn/infer"
    assert httpx.post(url, json=BURN_BODY, timeout=30).status_code == 200

    def hpa() -> dict:
        return platform.get("HorizontalPodAutoscaler", "default", "burn-predictor")

    # Idle at the minimum: the HPA has measured and holds 1.
    idle = wait_until(lambda: (h := hpa()).get("status", {}).get("currentMetrics") and h, timeout=30, what="a measured HPA")
    assert idle["status"]["currentReplicas"] == 1

    async def scenario() -> tuple[LoadResult, int, dict]:
        stop = asyncio.Event()
        load = asyncio.create_task(drive(url, BURN_BODY, clients=4, stop=stop, request_timeout=60))
        try:
            def scaled() -> int:
                return len(ready_pods(platform, "burn-predictor"))

            # Scale-up observed as it happens: a second replica ready and serving under the same load.
            peak = await wait_until_async(lambda: (n := scaled()) >= 2 and n, timeout=90, interval=0.5,
                                          what="the HPA adding a ready replica under CPU load")
            up = hpa()
        finally:
            stop.set()
        return await load, peak, up

    result, peak, up = asyncio.run(scenario())
    assert not result.failures, result.describe_failures()
    assert len(result.answers) > 0
    assert 2 <= peak <= 3
    status = up["status"]
    assert status["desiredReplicas"] >= 2 and status.get("lastScaleTime")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["ScalingActive"]["status"] == "True" and conditions["ScalingActive"]["reason"] == "ValidMetricFound"
    assert status["currentMetrics"][0]["resource"]["name"] == "cpu"

    # No load: after the scale-down window the HPA returns to its minimum, and the one replica still answers.
    wait_until(lambda: len(running_pods(platform, "burn-predictor")) == 1 and hpa()["status"]["currentReplicas"] == 1,
               timeout=90, interval=0.5, what="the HPA back at minReplicas after the stabilization window")
    table = platform.kubectl_get("hpa", "default", "burn-predictor")
    assert table is not None
    assert httpx.post(url, json=BURN_BODY, timeout=30).status_code == 200
    platform.delete("InferenceService", "default", "burn")


def sim_llm(name: str, model_dir: Path, minimum: int, maximum: int) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1alpha2",
        "kind": "LLMInferenceService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "model": {"uri": str(model_dir), "name": "tiny-llama"},
            "scaling": {"minReplicas": minimum, "maxReplicas": maximum, "wva": {"hpa": {}}},
            "template": {"containers": [{
                "name": "main",
                "command": ["python", "-m", "serving.llmd.sim_vllm"],
                "args": ["--max-model-len", "1024", "--num-gpu-blocks-override", "256"],
            }]},
        },
    }


@pytest.fixture(scope="module")
def llm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llm_dir(tmp_path_factory.mktemp("tiny-llama"))


def test_llm_engines_scale_on_queue_depth_and_back_with_the_router_following(
        platform: LocalPlatform, llm_model_dir: Path) -> None:
    platform.apply(sim_llm("elastic", llm_model_dir, 1, 2))
    obj = platform.wait_ready("LLMInferenceService", "default", "elastic", timeout=90)
    assert len(running_pods(platform, "elastic-kserve")) == 1
    url = obj["status"]["url"] + "/v1/completions"
    # Each simulated engine runs 8 requests at a time, 5 ms per token: 24 clients asking for 200 tokens keep
    # about 16 waiting on one engine.
    body = {"model": "tiny-llama", "prompt": "count slowly", "max_tokens": 200, "ignore_eos": True}

    def router_engines() -> int:
        router = [p for p in ready_pods(platform, "elastic-kserve-router-scheduler")]
        if not router:
            return 0
        try:
            health = httpx.get(f"http://127.0.0.1:{router[0]['port']}/health/detail", timeout=5).json()
        except httpx.HTTPError:
            return 0
        return sum(1 for pod in health["pods"].values() if pod["healthy"])

    async def scenario() -> LoadResult:
        stop = asyncio.Event()
        load = asyncio.create_task(drive(url, body, clients=24, stop=stop, request_timeout=120))
        try:
            await wait_until_async(lambda: len(ready_pods(platform, "elastic-kserve")) == 2, timeout=90, interval=0.5,
                                   what="a second engine started on queue depth")
            await wait_until_async(lambda: router_engines() == 2, timeout=60, interval=0.5,
                                   what="the router serving both engines")
        finally:
            stop.set()
        return await load

    result = asyncio.run(scenario())
    assert result.statuses[200] > 0
    wait_until(lambda: len(running_pods(platform, "elastic-kserve")) == 1, timeout=90, interval=0.5,
               what="the pool back at one engine once the queue drained")
    wait_until(lambda: router_engines() == 1 and len(ready_pods(platform, "elastic-kserve-router-scheduler")) == 1,
               timeout=60, interval=0.5, what="the router rolled onto the one engine left")
    assert httpx.post(url, json={**body, "max_tokens": 2}, timeout=30).status_code == 200
    platform.delete("LLMInferenceService", "default", "elastic")


def test_a_standard_canary_splits_traffic_by_weight_through_the_gateway(platform: LocalPlatform, constant_dir: Path) -> None:
    platform.apply({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "split", "namespace": "default",
                     "annotations": {"serving.kserve.io/autoscalerClass": "none"}},
        "spec": {
            "predictor": {"minReplicas": 1, "sklearn": {"storageUri": IRIS_DIR.as_uri()}},
            "canary": [{"trafficPercent": 25, "predictor": {"name": "fixed", "sklearn": {"storageUri": constant_dir.as_uri()}}}],
        },
    })

    def canary_ready() -> dict | None:
        status = platform.get("InferenceService", "default", "split").get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        return status if conditions.get("CanaryPredictorReady") == "True" and conditions.get("Ready") == "True" else None

    status = wait_until(canary_ready, timeout=120, interval=0.3, what="the canary Ready and reported")
    assert status["canaryStatuses"] == [{"name": "fixed", "ready": True, "trafficPercent": 25}]
    # Both Deployments carry traffic once the canary is ready: the route lists both replicas' endpoints.
    wait_until(lambda: len(ready_pods(platform, "split-predictor")) == 1 and len(ready_pods(platform, "split-fixed-predictor")) == 1,
               timeout=60, what="one replica of each")
    # Which model answered: the iris model calls this row class 0 (a small flower), the canary class 2.
    rows = [[0.9, 0.1, 0.1, 0.1]]
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": rows}]}
    url = f"{status['url']}/v2/models/split/infer"

    def identify(response: httpx.Response) -> str | None:
        return str(response.json()["outputs"][0]["data"][0]) if response.status_code == 200 else None

    result = asyncio.run(drive(url, body, clients=4, total=400, identify=identify))
    assert not result.failures, result.describe_failures()
    assert set(result.by()) == {"0", "2"}, result.by()
    assert 0.17 <= result.share("2") <= 0.33, f"the canary got {result.share('2'):.0%} of the traffic, not 25% ({result.by()})"
    platform.delete("InferenceService", "default", "split")
