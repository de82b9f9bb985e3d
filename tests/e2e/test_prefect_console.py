"""The Prefect UI as the console: a real `odh up` (daemon, Prefect server, flow worker) on a temporary state
directory, driven through Prefect's REST API as the UI drives it, and the UI itself in headless Chromium.

One `odh up` for the module (Prefect takes 10-60 s to start on a loaded 2-core machine); `odh down` always.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import IRIS_DIR, REPO_ROOT, free_port, prefect_call, wait_until

from deployments.catalog import CATALOG, OPERATE_INTERVAL_ENV, POLL_INTERVAL_ENV
from deployments.flow_client import run_flow_via_api, task_label
from serving.platform.local import LocalPlatform
from serving.policy import MODEL_NAME_LABEL, MODEL_VERSION_LABEL

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ODH = [sys.executable, "-m", "deployments.cli"]
CHROMIUM = Path("/usr/bin/chromium")
# Where the screenshots go: the test's own directory, unless ODH_UPDATE_SCREENSHOTS=1 asks to refresh the ones
# kept in docs/images (a test run does not change the checkout by itself).
DOC_IMAGES = REPO_ROOT / "docs" / "images"
OPERATE_EVERY_S = 6


@dataclass(frozen=True)
class Console:
    state: Path
    gateway: int
    api: str  # http://127.0.0.1:<port>/api

    @property
    def ui(self) -> str:
        return self.api.removesuffix("/api")


def odh(*args: str, state: Path, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "COLUMNS": "200", "ODH_STATE_DIR": str(state), **(env or {})}
    full.pop("PREFECT_API_URL", None)
    done = subprocess.run([*ODH, *args], capture_output=True, text=True, env=full, timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"odh {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    state = tmp_path_factory.mktemp("console") / "state"
    gateway, prefect_port = free_port(), free_port()
    try:
        up = odh("up", "--gateway-port", str(gateway), "--prefect-port", str(prefect_port), state=state,
                 env={OPERATE_INTERVAL_ENV: str(OPERATE_EVERY_S), POLL_INTERVAL_ENV: "30"})
        assert f"UI http://127.0.0.1:{prefect_port}" in up.stdout, up.stdout + up.stderr
        yield Console(state, gateway, f"http://127.0.0.1:{prefect_port}/api")
    finally:
        down = odh("down", state=state, check=False)
    assert "odh is down" in down.stdout
    for name in ("prefect.json", "flow_worker.json"):
        assert not (state / name).exists(), f"{name} left behind by odh down"


def api(console: Console, method: str, path: str, body: Any = None) -> Any:
    return prefect_call(method, console.api + path, body)


def deployments(console: Console) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in api(console, "POST", "/deployments/filter", {})}


def test_every_catalog_flow_is_a_deployment_with_typed_parameters_and_schedules(console: Console) -> None:
    served = deployments(console)
    assert {entry.name for entry in CATALOG} <= set(served), f"served: {sorted(served)}"
    flows = {f["id"]: f["name"] for f in api(console, "POST", "/flows/filter", {})}
    for entry in CATALOG:
        deployment = served[entry.name]
        assert flows[deployment["flow_id"]] == entry.name
        assert deployment["description"] == entry.description
        assert set(deployment["tags"]) >= {"odh", "lifecycle"}
        # "Ready" in the UI: the worker polls for this deployment's runs.
        assert wait_until(lambda d=entry.name: deployments(console)[d]["status"] == "READY", timeout=60,
                          interval=0.5, what=f"{entry.name} Ready")
        schedules = deployment["schedules"]
        if entry.interval_env:
            assert len(schedules) == 1 and schedules[0]["active"], f"{entry.name}: {schedules}"
            expected = OPERATE_EVERY_S if entry.name == "operate" else 30
            assert schedules[0]["schedule"]["interval"] == expected
        else:
            assert schedules == [], f"{entry.name} should run only when asked: {schedules}"
    # Typed parameters from the flow signatures: the UI builds its run form from these.
    schema = served["deploy-model"]["parameter_openapi_schema"]
    assert {"model_uri", "name"} <= set(schema["required"])
    assert schema["properties"]["model_uri"]["type"] == "string"
    assert schema["properties"]["min_replicas"]["type"] == "integer"
    assert "name" in served["retire"]["parameter_openapi_schema"]["required"]


def test_block_types_are_registered_with_secret_storage_credentials(console: Console) -> None:
    for slug in ("odh-local-platform", "odh-mlflow-registry", "odh-s3-storage"):
        api(console, "GET", f"/block_types/slug/{slug}")
    s3 = api(console, "GET", "/block_types/slug/odh-s3-storage")
    schemas = api(console, "POST", "/block_schemas/filter", {"block_schemas": {"block_type_id": {"any_": [s3["id"]]}}})
    fields = schemas[0]["fields"]["properties"]
    for secret in ("access_key_id", "secret_access_key"):
        options = fields[secret].get("anyOf", [fields[secret]])
        assert any(o.get("format") == "password" and o.get("writeOnly") for o in options), fields[secret]


def test_a_deploy_model_run_created_through_the_api_brings_iris_to_ready(console: Console) -> None:
    deployment = deployments(console)["deploy-model"]
    # What the UI's "Quick run" / "Custom run" posts: parameters only; no state_dir (the worker's platform).
    run = api(console, "POST", f"/deployments/{deployment['id']}/create_flow_run",
              {"parameters": {"model_uri": str(IRIS_DIR / "model.joblib"), "name": "iris-ui"}})
    platform = LocalPlatform(console.state)

    def ready() -> dict[str, Any] | None:
        try:
            isvc = platform.get("InferenceService", "default", "iris-ui")
        except Exception:
            return None
        conditions = isvc.get("status", {}).get("conditions", [])
        return isvc if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None

    isvc = wait_until(ready, timeout=300, interval=0.5, what="iris-ui Ready on the platform")
    labels = isvc["metadata"]["labels"]
    assert labels[MODEL_NAME_LABEL] == "iris-ui"
    answer = httpx.post(isvc["status"]["url"] + "/v1/models/iris-ui:predict",
                        json=json.loads((IRIS_DIR / "iris-input-v1.json").read_text()), timeout=30)
    assert answer.status_code == 200 and answer.json()["predictions"] == [1, 1]

    def finished() -> dict[str, Any] | None:
        found = api(console, "GET", f"/flow_runs/{run['id']}")
        return found if found["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

    final = wait_until(finished, timeout=120, interval=0.5, what="the deploy-model run over")
    assert final["state"]["type"] == "COMPLETED", final["state"]
    # Named after the model and its registry version once the flow knows it.
    assert final["name"] == f"iris-ui-v{labels[MODEL_VERSION_LABEL]}"
    tasks = api(console, "POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    assert {"upload", "register", "configure", "deploy", "initialize", "register-service"} <= {task_label(t["name"]) for t in tasks}


def test_odh_deploy_runs_in_the_worker_and_reports_progress_result_and_failure(console: Console) -> None:
    started = time.perf_counter()
    deployed = odh("deploy", str(IRIS_DIR / "model.joblib"), "--name", "iris-cli", state=console.state)
    elapsed = time.perf_counter() - started
    url = f"http://127.0.0.1:{console.gateway}/serving/default/iris-cli"
    assert url in deployed.stdout and "Ready default/iris-cli: iris-cli version 1" in deployed.stdout
    for phase in ("upload", "register", "configure", "deploy", "initialize", "register-service"):
        assert phase in deployed.stdout
    print(f"odh deploy iris-cli to Ready: {elapsed:.2f}s")
    # It ran in the worker: the server has the run, named after the model and version.
    runs = api(console, "POST", "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["iris-cli-v1"]}}})
    assert [r["state"]["type"] for r in runs] == ["COMPLETED"]

    failed = odh("deploy", str(console.state / "no-such-model.joblib"), "--name", "nothing", state=console.state, check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "deploy-model Failed" in failed.stderr and "no-such-model.joblib" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr
    assert "nothing" not in {i["metadata"]["name"] for i in LocalPlatform(console.state).list("InferenceService")}


def test_flow_client_names_a_missing_deployment_and_how_to_serve_it(console: Console) -> None:
    from deployments.flow_client import FlowClientError

    with pytest.raises(FlowClientError, match="no deployment no-such-flow/no-such-flow: `odh up` serves the flows"):
        run_flow_via_api(console.api, "no-such-flow", {})
    refused = pytest.raises(FlowClientError, match="refused")
    with refused:  # a parameter of the wrong type: the server validates against the flow's signature
        run_flow_via_api(console.api, "retire", {"name": {"not": "a string"}})


def test_operate_runs_on_its_schedule(console: Console) -> None:
    operate = deployments(console)["operate"]

    def scheduled_run_completed() -> list[dict[str, Any]]:
        return api(console, "POST", "/flow_runs/filter", {"flow_runs": {
            "deployment_id": {"any_": [operate["id"]]}, "state": {"type": {"any_": ["COMPLETED"]}}}})

    runs = wait_until(scheduled_run_completed, timeout=240, interval=1.0, what="an operate run from its schedule Completed")
    assert all(r["auto_scheduled"] for r in runs)
    artifact = wait_until(lambda: api(console, "POST", "/artifacts/latest/filter",
                                      {"artifacts": {"key": {"any_": ["serving-overview"]}}}),
                          timeout=60, interval=1.0, what="the serving-overview artifact")
    assert artifact[0]["key"] == "serving-overview"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing: `make setup` installs it (as root)")
def test_the_prefect_ui_shows_the_deployments_and_the_serving_overview(console: Console, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    images = DOC_IMAGES if os.environ.get("ODH_UPDATE_SCREENSHOTS") == "1" else tmp_path

    def overview_lists_iris_ui() -> str | None:
        latest = api(console, "POST", "/artifacts/latest/filter", {"artifacts": {"key": {"any_": ["serving-overview"]}}})
        return latest[0]["latest_id"] if latest and "iris-ui" in json.dumps(latest[0].get("data")) else None

    artifact_id = wait_until(overview_lists_iris_ui, timeout=240, interval=1.0,
                             what="operate's serving-overview listing iris-ui")
    images.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(90_000)
            page.goto(f"{console.ui}/deployments")
            for entry in CATALOG:
                page.get_by_text(entry.name, exact=True).first.wait_for()
            page.screenshot(path=str(images / "prefect-deployments.png"), full_page=True)

            page.goto(f"{console.ui}/artifacts/key/serving-overview")  # every version operate wrote
            page.get_by_text("operate-all-").first.wait_for()
            page.goto(f"{console.ui}/artifacts/artifact/{artifact_id}")  # the latest, rendered
            page.get_by_text("Serving overview:").first.wait_for()
            page.get_by_text("default/iris-ui").first.wait_for()  # the deployment made through the API is listed
            page.screenshot(path=str(images / "prefect-serving-overview.png"), full_page=True)

            page.goto(f"{console.ui}/runs")
            page.get_by_text("iris-ui-v1").first.wait_for()
            page.screenshot(path=str(images / "prefect-flow-runs.png"), full_page=True)
        finally:
            browser.close()
    for name in ("prefect-deployments.png", "prefect-serving-overview.png", "prefect-flow-runs.png"):
        assert (images / name).stat().st_size > 10_000
