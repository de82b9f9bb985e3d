"""Prometheus scrape targets of the embedded platform: a real daemon keeps ``<state>/prometheus/targets.json``
current (serving/platform/local/scrape_targets.py) as replicas come and go; every target's /metrics answers
over HTTP with the names the Grafana dashboards use for its job; and, where Prometheus is installed, a real
Prometheus run with infra/prometheus/prometheus.yml scrapes them all with the labels the dashboards select on."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support import FIXTURES, IRIS_DIR, REPO_ROOT, free_port, running_platform, wait_until, write_tiny_llm_dir

from serving.platform.local import LocalPlatform
from serving.platform.local.scrape_targets import (
    JOB_GATEWAY,
    JOB_LLM_ENGINE,
    JOB_LLMD_ROUTER,
    JOB_MODEL_SERVER,
    ScrapeTargetsFile,
    targets_path,
)

pytestmark = pytest.mark.integration

SAMPLE = FIXTURES / "kserve" / "samples" / "v1beta1__sklearn__v1__sklearn.yaml"
DASHBOARDS = sorted((REPO_ROOT / "infra" / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS_YML = REPO_ROOT / "infra" / "prometheus" / "prometheus.yml"
# vLLM-only names (the simulator serves the LLM engines here): see tests/unit/test_grafana_dashboards.py.
VLLM_ONLY = {"vllm:e2e_request_latency_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
             "vllm:num_preemptions_total"}
IRIS_V1 = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}


def kserve_sample(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """KServe's own sklearn iris sample, served from the local copy of its model."""
    manifest = yaml.safe_load(SAMPLE.read_text())
    manifest["metadata"] = {"name": name, "namespace": "default", "annotations": annotations or {}}
    manifest["spec"]["predictor"]["sklearn"]["storageUri"] = IRIS_DIR.as_uri()
    return manifest


def sim_llm(name: str, model_dir: Path) -> dict[str, Any]:
    return {"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"model": {"uri": str(model_dir), "name": "tiny-llama"}, "replicas": 1,
                     "template": {"containers": [{"name": "main", "command": ["python", "-m", "serving.llmd.sim_vllm"],
                                                  "args": ["--max-model-len", "1024", "--num-gpu-blocks-override", "64"]}]}}}


def dashboard_names_by_job() -> dict[str, set[str]]:
    """The names each job's targets must serve: those the dashboards select with that job, and for the
    gateway (selected without a job) every odh_gateway_* and odh_autoscaler_* name."""
    by_job: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        text = path.read_text()
        exprs = [json.loads(f'"{e}"') for e in re.findall(r'"(?:expr|definition)": "((?:[^"\\]|\\.)*)"', text)]
        for expr in exprs:
            for name, job in re.findall(r'([A-Za-z_:][A-Za-z0-9_:]*)\{[^}]*\bjob="([^"]+)"', expr):
                by_job.setdefault(job, set()).add(name)
            by_job.setdefault(JOB_GATEWAY, set()).update(re.findall(r"\b(odh_(?:gateway|autoscaler)_[a-z_]+)", expr))
    return {job: names - {"up"} for job, names in by_job.items()}


def served_names(text: str) -> set[str]:
    """Sample names in a /metrics text, and the names of families declared without samples yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        names |= {family.name + s for s in suffixes}
    return names


def read_targets(state: Path) -> list[dict[str, Any]]:
    path = targets_path(state)
    return json.loads(path.read_text()) if path.exists() else []


def targets_of(state: Path, job: str, **labels: str) -> list[dict[str, Any]]:
    return [g for g in read_targets(state) if g["labels"]["job"] == job
            and all(g["labels"].get(k) == v for k, v in labels.items())]


# -- the targets file alone ---------------------------------------------------------------------------------


def test_the_file_is_replaced_whole_and_only_when_the_set_changes(tmp_path: Path) -> None:
    path = targets_path(tmp_path)
    targets = ScrapeTargetsFile(path)
    group = {"targets": ["127.0.0.1:9"], "labels": {"job": JOB_GATEWAY}}
    assert targets.write([group]) is True
    first = path.stat().st_ino
    assert targets.write([dict(group)]) is False and path.stat().st_ino == first  # unchanged: not rewritten
    replica = {"targets": ["127.0.0.1:10"], "labels": {"job": JOB_MODEL_SERVER, "namespace": "default", "pod": "p"}}
    assert targets.write([replica, group]) is True
    assert path.stat().st_ino != first  # a new file renamed over the old one, never the old one rewritten
    assert json.loads(path.read_text()) == [group, replica]  # stable order: by job, then namespace and pod
    assert [p.name for p in path.parent.iterdir()] == ["targets.json"]  # no temporary file left


# -- a real daemon ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("odh-scrape")


@pytest.fixture(scope="module")
def platform(state: Path) -> Iterator[LocalPlatform]:
    with running_platform(state) as client:
        yield client


@pytest.fixture(scope="module")
def iris(platform: LocalPlatform) -> dict[str, Any]:
    platform.apply(kserve_sample("iris"))
    ready = platform.wait_ready("InferenceService", "default", "iris", timeout=120)
    response = httpx.post(f"{ready['status']['url']}/v1/models/iris:predict", json=IRIS_V1, timeout=30)
    assert response.json() == {"predictions": [1, 1]}
    return ready


@pytest.fixture(scope="module")
def llm(platform: LocalPlatform, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    platform.apply(sim_llm("chat", write_tiny_llm_dir(tmp_path_factory.mktemp("tiny-llama"))))
    ready = platform.wait_ready("LLMInferenceService", "default", "chat", timeout=120)
    answer = httpx.post(f"{ready['status']['url']}/v1/completions", timeout=60,
                        json={"model": "tiny-llama", "prompt": "hello there", "max_tokens": 4})
    assert answer.status_code == 200, answer.text
    return ready


def scrape(group: dict[str, Any]) -> str:
    (address,) = group["targets"]
    response = httpx.get(f"http://{address}/metrics", timeout=10)
    assert response.status_code == 200, f"{group['labels']}: {response.status_code}"
    return response.text


def assert_serves_dashboard_names(group: dict[str, Any], expected: set[str]) -> None:
    missing = expected - served_names(scrape(group))
    assert not missing, f"{group['labels']['job']} target {group['targets']} lacks {sorted(missing)}"


def test_gateway_and_model_server_are_listed_and_serve_the_dashboards_names(platform: LocalPlatform, state: Path,
                                                                             iris: dict[str, Any]) -> None:
    port = platform.info()["gateway_port"]
    (gateway,) = wait_until(lambda: targets_of(state, JOB_GATEWAY), timeout=30, what="the gateway target")
    assert gateway["targets"] == [f"127.0.0.1:{port}"]
    (replica,) = wait_until(lambda: targets_of(state, JOB_MODEL_SERVER, deployment="iris-predictor"), timeout=30,
                            what="iris' replica in targets.json")
    pod = next(p for p in platform.pods() if p["deployment"] == "iris-predictor")
    assert replica["targets"] == [f"127.0.0.1:{pod['port']}"]
    assert replica["labels"] == {"job": JOB_MODEL_SERVER, "namespace": "default", "deployment": "iris-predictor",
                                 "revision": "iris-predictor", "pod": pod["name"], "inferenceservice": "iris"}
    wanted = dashboard_names_by_job()
    assert_serves_dashboard_names(gateway, wanted[JOB_GATEWAY])
    assert_serves_dashboard_names(replica, wanted[JOB_MODEL_SERVER])
    # The predict request sent above is counted where the dashboards look for it.
    text = scrape(replica)
    assert re.search(r'odh_model_server_requests_total\{[^}]*model="iris"[^}]*status="200"', text)
    assert re.search(r'odh_gateway_revision_request_duration_seconds_count\{[^}]*revision="iris-predictor"', scrape(gateway))


def test_a_serverless_revision_is_labelled_with_its_revision(platform: LocalPlatform, state: Path) -> None:
    platform.apply(kserve_sample("iris-sl", {"serving.kserve.io/deploymentMode": "Serverless",
                                             "autoscaling.knative.dev/min-scale": "1"}))
    ready = platform.wait_ready("InferenceService", "default", "iris-sl", timeout=120)
    revision = ready["status"]["components"]["predictor"]["latestReadyRevision"]
    (group,) = wait_until(lambda: targets_of(state, JOB_MODEL_SERVER, inferenceservice="iris-sl"), timeout=30,
                          what="the Serverless replica in targets.json")
    assert group["labels"]["revision"] == revision and group["labels"]["deployment"] == f"{revision}-deployment"
    (gateway,) = targets_of(state, JOB_GATEWAY)
    assert f'revision_name="{revision}"' in scrape(gateway)  # its KPA, on the gateway's /metrics


def test_llm_engine_and_router_are_listed_and_serve_the_dashboards_names(state: Path, llm: dict[str, Any]) -> None:
    (engine,) = wait_until(lambda: targets_of(state, JOB_LLM_ENGINE, inferenceservice="chat"), timeout=30,
                           what="the engine target")
    (router,) = wait_until(lambda: targets_of(state, JOB_LLMD_ROUTER, inferenceservice="chat"), timeout=30,
                           what="the router target")
    assert engine["labels"]["role"] == "both" and engine["labels"]["deployment"] == "chat-kserve"
    assert router["labels"]["deployment"] == "chat-kserve-router-scheduler"
    wanted = dashboard_names_by_job()
    assert_serves_dashboard_names(engine, wanted[JOB_LLM_ENGINE] - VLLM_ONLY)
    assert_serves_dashboard_names(router, wanted[JOB_LLMD_ROUTER])


def test_a_deleted_inference_service_leaves_the_targets(platform: LocalPlatform, state: Path, iris: dict[str, Any]) -> None:
    platform.apply(kserve_sample("iris-gone"))
    platform.wait_ready("InferenceService", "default", "iris-gone", timeout=120)
    wait_until(lambda: targets_of(state, JOB_MODEL_SERVER, inferenceservice="iris-gone"), timeout=30,
               what="iris-gone's replica listed")
    assert platform.delete("InferenceService", "default", "iris-gone")
    wait_until(lambda: not targets_of(state, JOB_MODEL_SERVER, inferenceservice="iris-gone"), timeout=60,
               what="iris-gone's replica gone from targets.json")
    assert targets_of(state, JOB_MODEL_SERVER, inferenceservice="iris")  # the others stay
    assert targets_of(state, JOB_GATEWAY)


# -- a real Prometheus --------------------------------------------------------------------------------------


@pytest.fixture
def prometheus(platform: LocalPlatform, state: Path, tmp_path: Path) -> Iterator[str]:
    """Prometheus with infra/prometheus/prometheus.yml, pointed at this test's state and gateway port."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Prometheus is not installed (Debian: apt-get install prometheus)")
    gateway = f"127.0.0.1:{platform.info()['gateway_port']}"
    config = (PROMETHEUS_YML.read_text().replace("/root/.odh/prometheus/targets.json", str(targets_path(state)))
              .replace("127.0.0.1:8080", gateway).replace(r"127\.0\.0\.1:8080", re.escape(gateway)))
    (tmp_path / "prometheus.yml").write_text(config)
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "prometheus.log").open("w"))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    try:
        body = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    except httpx.TransportError:
        return []  # not listening yet
    return list(body["data"]["result"]) if body.get("status") == "success" else []


def test_prometheus_scrapes_every_target_with_the_dashboards_labels(prometheus: str, state: Path, iris: dict[str, Any],
                                                                    llm: dict[str, Any]) -> None:
    jobs = {JOB_GATEWAY, JOB_MODEL_SERVER, JOB_LLM_ENGINE, JOB_LLMD_ROUTER}
    up = wait_until(lambda: (r := query(prometheus, 'up{job=~"odh-.*"} == 1')) and
                    jobs <= {s["metric"]["job"] for s in r} and r, timeout=90, interval=1, what="every job up")
    gateways = [s for s in up if s["metric"]["job"] == JOB_GATEWAY]
    assert len(gateways) == 1  # the static job's; the file's copy of the same address is dropped
    served = wait_until(lambda: query(prometheus, 'odh_model_server_requests_total{job="odh-model-server", model="iris"}'),
                        timeout=60, interval=1, what="the model server's requests")
    assert {"namespace", "deployment", "revision", "pod", "inferenceservice"} <= set(served[0]["metric"])
    # The router's per-engine series keep the engine as engine_pod; pod is the router's own.
    per_engine = wait_until(lambda: query(prometheus, 'llmd_router_pod_in_flight{job="odh-llmd-router"}'), timeout=60,
                            interval=1, what="the router's per-engine gauge")
    assert per_engine[0]["metric"]["engine_pod"] and per_engine[0]["metric"]["pod"].startswith("chat-kserve-router-scheduler")
    assert "exported_pod" not in per_engine[0]["metric"]
