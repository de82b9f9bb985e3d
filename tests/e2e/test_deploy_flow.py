"""The deploy and retire flows end to end: Prefect, MLflow on SQLite, S3 over HTTP, the embedded platform."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import httpx
import psutil
import pytest
from support import IRIS_DIR

from serving.config import mlflow_tracking_uri
from serving.platform.local import LocalPlatform
from serving.registry import ModelRegistry

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())
V2_BODY = json.loads((IRIS_DIR / "iris-input-v2.json").read_text())


def ask(url: str, name: str) -> tuple[list, list]:
    v1 = httpx.post(f"{url}/v1/models/{name}:predict", json=V1_BODY, timeout=30).raise_for_status().json()
    v2 = httpx.post(f"{url}/v2/models/{name}/infer", json=V2_BODY, timeout=30).raise_for_status().json()
    return v1["predictions"], v2["outputs"][0]["data"]


def test_deploying_twice_creates_one_version_and_one_deployment(odh_state: Path) -> None:
    from flows import deploy_model

    first = deploy_model(model_uri=str(IRIS_DIR / "model.joblib"), name="iris", state_dir=str(odh_state))
    platform = LocalPlatform(odh_state)
    pods_before = [(p["pid"], p["port"]) for p in platform.pods() if p["deployment"] == "iris-predictor"]
    second = deploy_model(model_uri=str(IRIS_DIR / "model.joblib"), name="iris", state_dir=str(odh_state))

    assert (first.model_name, first.model_version) == (second.model_name, second.model_version) == ("iris", "1")
    assert first.url == second.url
    assert ask(second.url, "iris") == ([1, 1], [1, 1])
    registry = ModelRegistry(mlflow_tracking_uri(odh_state))
    (version,) = registry.list_versions("iris")
    assert version.aliases == ("champion",)
    assert version.tags["odh.deployment.name"] == "iris"
    assert version.tags["odh.deployment.status"] == "ready"
    assert version.tags["odh.deployment.url"] == second.url
    (isvc,) = platform.list("InferenceService")
    assert isvc["metadata"]["generation"] == 1
    assert [(p["pid"], p["port"]) for p in platform.pods() if p["deployment"] == "iris-predictor"] == pods_before


def test_deploys_from_the_registry_alias(odh_state: Path) -> None:
    from flows import deploy_model

    deploy_model(model_uri=str(IRIS_DIR / "model.joblib"), name="iris", state_dir=str(odh_state))
    result = deploy_model(model_uri="models:/iris@champion", name="iris-champion", state_dir=str(odh_state))
    assert (result.model_name, result.model_version) == ("iris", "1")
    assert ask(result.url, "iris-champion") == ([1, 1], [1, 1])
    assert len(ModelRegistry(mlflow_tracking_uri(odh_state)).list_versions("iris")) == 1


def test_deploys_from_s3_and_retires(odh_state: Path, s3_server: str) -> None:
    from flows import deploy_model, retire

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(IRIS_DIR / "model.joblib"), "models", "iris/v1/model.joblib")
    result = deploy_model(model_uri="s3://models/iris/v1", name="iris-s3", state_dir=str(odh_state))
    assert result.storage_uri == "s3://models/iris/v1"
    assert ask(result.url, "iris-s3") == ([1, 1], [1, 1])

    platform = LocalPlatform(odh_state)
    pods = [p for p in platform.pods() if p["deployment"] == "iris-s3-predictor"]
    assert pods and all(p["ready"] for p in pods)
    # The daemon's storage initializer used the S3 credentials; the model server never had them.
    environ = psutil.Process(pods[0]["pid"]).environ()
    assert os.environ["AWS_SECRET_ACCESS_KEY"] and not {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"} & set(environ)
    retired = retire(name="iris-s3", state_dir=str(odh_state))
    assert retired == ["iris-s3/1"]
    assert [p for p in platform.pods() if p["deployment"] == "iris-s3-predictor"] == []
    assert httpx.post(f"{result.url}/v1/models/iris-s3:predict", json=V1_BODY).status_code == 404
    version = ModelRegistry(mlflow_tracking_uri(odh_state)).get_version("iris-s3", "1")
    assert version.tags["odh.deployment.status"] == "retired"
    assert retire(name="iris-s3", state_dir=str(odh_state)) == []  # retiring again is a no-op
