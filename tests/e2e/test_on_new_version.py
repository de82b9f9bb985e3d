"""A new MLflow model version reaches the deployment that serves the model, without anyone running a command.

Webhooks: a real ``mlflow server`` (SQLite backend, the platform's own registry database) sends
``model_version.created`` over HTTP to the receiver process; the receiver checks MLflow's signature and
starts the ``on-new-model-version`` deployment through the Prefect API; a flow worker (deployments/flow_worker.py,
in a thread) runs it, and its ``rollout`` subflow canaries v2, watches it under load and promotes it.
Polling: ``poll_model_versions`` run directly finds v2 once, then nothing.

Real Prefect (the session's test server), the embedded platform's daemon, gateway and replicas.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from load import LoadResult, drive, load_in_background
from mlflow.webhooks.delivery import _generate_hmac_signature
from support import IRIS_DIR, free_port, prefect_call, running, served_by, wait_http, wait_until, write_constant_model

from serving.artifacts import upload_model
from serving.config import mlflow_tracking_uri
from serving.lifecycle import ANALYSIS_WINDOW, CANARY_PERCENT, ROLLOUT_STRATEGY
from serving.platform.local import LocalPlatform
from serving.policy import MODEL_VERSION_LABEL, ServingPolicy, inference_service
from serving.registry import ModelRegistry
from serving.storage import StorageSettings

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())


def deploy_v1(state: Path, name: str, annotations: dict[str, str]) -> str:
    """KServe's iris registered as version 1 of ``name`` and deployed (Standard) with ``annotations``; its URL."""
    uploaded = upload_model(str(IRIS_DIR / "model.joblib"), state / "artifacts", StorageSettings.for_state(state))
    registry = ModelRegistry(mlflow_tracking_uri(state))
    v1 = registry.register_version(name, uploaded.uri, digest=uploaded.digest, tags={"odh.model_format": "sklearn"})
    registry.set_alias(name, "champion", v1.version)
    manifest = inference_service(name, v1.source, "sklearn", model_name=name, model_version=v1.version,
                                 policy=ServingPolicy(deployment_mode="Standard"))
    manifest["metadata"]["annotations"].update(annotations)
    with LocalPlatform(state) as platform:
        platform.apply(manifest)
        return str(platform.wait_ready("InferenceService", "default", name, timeout=180)["status"]["url"])


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value()).rstrip("/")


@contextmanager
def mlflow_server(state: Path) -> Iterator[str]:
    """``mlflow server`` on the platform's registry database, allowed to call a loopback receiver over http."""
    from cryptography.fernet import Fernet

    port = free_port()
    env = {"MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true", "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
           "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(), "MLFLOW_WEBHOOK_CACHE_TTL": "1"}
    args = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", mlflow_tracking_uri(state),
            "--default-artifact-root", (state / "mlartifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
    with running(args, env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", timeout=180, proc=proc)
        yield url


@contextmanager
def flow_worker(*names: str) -> Iterator[None]:
    """The platform's flow worker serving ``names`` from the catalog, in a thread of this process."""
    from deployments.catalog import CATALOG
    from deployments.flow_worker import FlowWorker, apply_deployments, load_catalog

    loaded, missing = load_catalog([entry for entry in CATALOG if entry.name in names])
    assert not missing, missing
    worker = FlowWorker(apply_deployments(loaded))
    context = contextvars.copy_context()  # the test harness's Prefect settings travel with the thread
    thread = threading.Thread(target=context.run, args=(worker.run_forever,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        worker.stopping.set()
        thread.join(timeout=60)


def load_through(url: str, name: str, clients: int = 3) -> AbstractContextManager[LoadResult]:
    return load_in_background(f"{url}/v1/models/{name}:predict", V1_BODY, clients=clients, identify=served_by)


def runs_named(name: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = prefect_call("POST", f"{api_url()}/flow_runs/filter",
                                              {"flow_runs": {"name": {"any_": [name]}}})
    return runs


def test_mlflow_webhook_rolls_the_new_version_out(odh_state: Path, tmp_path: Path) -> None:
    from deployments.webhooks import load_or_create_secret, register_mlflow_webhook, start_receiver, stop_receiver

    name = "hook-iris"
    url = deploy_v1(odh_state, name, {CANARY_PERCENT: "50", ANALYSIS_WINDOW: "4"})
    # MLflow's server takes no local path as a version's source without a run: v2 lives in the session's S3.
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="webhook-models")
    s3.put_object(Bucket="webhook-models", Key="hook-iris/v2/model.joblib",
                  Body=(write_constant_model(tmp_path) / "model.joblib").read_bytes())
    receiver = start_receiver(odh_state, free_port(), api_url())
    try:
        with mlflow_server(odh_state) as tracking, flow_worker("on-new-model-version"):
            secret = load_or_create_secret(odh_state)
            register_mlflow_webhook(tracking, receiver, secret)

            # A forged delivery (MLflow's format, another secret) is refused and starts nothing.
            payload = json.dumps({"entity": "model_version", "action": "created", "timestamp": "x",
                                  "data": {"name": name, "version": "9", "source": "x", "run_id": None, "tags": {},
                                           "description": None}})
            delivery_id, now = str(uuid.uuid4()), str(int(time.time()))
            forged = httpx.post(receiver, content=payload, timeout=30, headers={
                "Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": now,
                "X-MLflow-Signature": _generate_hmac_signature("not-" + secret, delivery_id, now, payload)})
            assert forged.status_code == 401 and forged.json()["check"] == "signature"

            import mlflow

            client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
            with load_through(url, name) as during:
                created = client.create_model_version(name, source="s3://webhook-models/hook-iris/v2",
                                                      tags={"odh.model_format": "sklearn"})
                assert str(created.version) == "2"
                registered_at = time.monotonic()
                first_v2 = wait_until(lambda: during.by().get("v2"), timeout=300, interval=0.05,
                                      what="a request served by v2 through the deployment's URL")
                webhook_to_canary = time.monotonic() - registered_at
                run = wait_until(lambda: next((r for r in runs_named(f"{name}-v2")
                                               if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED")), None),
                                 timeout=420, interval=0.5, what="the on-new-model-version run to finish")
            assert run["state"]["type"] == "COMPLETED", run["state"]
            assert run["parameters"] == {"model_name": name, "version": "2", "alias": None, "state_dir": str(odh_state)}
            assert not runs_named(f"{name}-v9")
            assert first_v2 and webhook_to_canary > 0
            print(f"webhook -> first answer from the canary: {webhook_to_canary:.2f} s")
    finally:
        stop_receiver(odh_state)
    assert not during.failures, during.describe_failures()
    with LocalPlatform(odh_state) as platform:
        isvc = platform.get("InferenceService", "default", name)
    assert isvc["metadata"]["labels"][MODEL_VERSION_LABEL] == "2"
    registry = ModelRegistry(mlflow_tracking_uri(odh_state))
    assert registry.get_version(name, "2").tags.get("odh.rollout.status") == "promoted"
    after = asyncio.run(drive(f"{url}/v1/models/{name}:predict", V1_BODY, clients=2, total=20, identify=served_by))
    assert after.by() == {"v2": 20}


def test_polling_finds_a_new_version_once(odh_state: Path, tmp_path: Path) -> None:
    from flows.on_new_version import on_new_model_version, poll_model_versions

    name = "poll-iris"
    deploy_v1(odh_state, name, {ROLLOUT_STRATEGY: "manual"})
    state = str(odh_state)
    before = [p for p in poll_model_versions(state_dir=state) if p.model_name == name]
    assert before == []  # v1 serves, v1 is the newest: nothing new
    uploaded = upload_model(str(write_constant_model(tmp_path) / "model.joblib"), odh_state / "artifacts",
                            StorageSettings.for_state(odh_state))
    v2 = ModelRegistry(mlflow_tracking_uri(odh_state)).register_version(name, uploaded.uri, digest=uploaded.digest)
    found = [p for p in poll_model_versions(state_dir=state) if p.model_name == name]
    assert [(p.version, p.alias, p.state) for p in found] == [(v2.version, None, "Completed")]
    assert runs_named(f"{name}-v{v2.version}"), "the subflow is named after model and version"
    again = [p for p in poll_model_versions(state_dir=state) if p.model_name == name]
    assert again == []
    # What on-new-model-version did for v2: the policy says manual, so nothing, and it says so.
    outcomes = on_new_model_version(name, v2.version, state_dir=state)
    assert [(o.name, o.action) for o in outcomes] == [(name, "skip")] and "manual" in outcomes[0].reason
    with LocalPlatform(odh_state) as platform:
        assert platform.get("InferenceService", "default", name)["metadata"]["labels"][MODEL_VERSION_LABEL] == "1"
    assert os.path.exists(odh_state / "poll-seen.json")


def test_no_deployment_serves_the_model(odh_state: Path) -> None:
    from flows.on_new_version import on_new_model_version

    assert on_new_model_version("nobody-serves-this", "3", state_dir=str(odh_state)) == []
    with pytest.raises(ValueError, match="version 'latest' is not a registry version number"):
        on_new_model_version("iris", "latest", state_dir=str(odh_state))
