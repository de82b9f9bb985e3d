"""The rollout flow end to end: a good v2 is promoted and the alias moves; a bad v2 (its predict fails) is rolled
back automatically, the alias stays on v1 and the version's tags say why. Load runs through the deployment's URL
for the whole rollout: no request served by v1 fails, and after a rollback everything is served by v1.

Real Prefect (the session's test server), MLflow on SQLite, the embedded platform's daemon, gateway and replicas.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from load import LoadResult, drive, load_in_background
from prefect.artifacts import Artifact
from support import IRIS_DIR, served_by, write_constant_model

from serving.artifacts import upload_model
from serving.config import mlflow_tracking_uri
from serving.platform.local import LocalPlatform
from serving.policy import MODEL_VERSION_LABEL, ServingPolicy, inference_service
from serving.registry import ModelRegistry
from serving.storage import StorageSettings

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())
# A model whose predict raises IndexError (row 99 of a 2-row request): it loads, becomes Ready, and answers 500
# (a ValueError or TypeError would be a 400: the runtime takes those as the request's fault).
_FAILING_MODEL = """
import operator
import sys
import joblib
import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

classifier = DummyClassifier(strategy="constant", constant=2).fit(np.zeros((3, 4)), [0, 1, 2])
joblib.dump(make_pipeline(FunctionTransformer(operator.itemgetter(99)), classifier), sys.argv[1])
"""


@pytest.fixture(scope="module")
def good_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_constant_model(tmp_path_factory.mktemp("good-v2")) / "model.joblib"


@pytest.fixture(scope="module")
def bad_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad-v2") / "model.joblib"
    subprocess.run([sys.executable, "-c", _FAILING_MODEL, str(path)], check=True, timeout=120)
    return path


@pytest.fixture(autouse=True)
def removed_afterwards(odh_state: Path) -> Iterator[None]:
    """Each test's deployments go when it ends: the session's platform is shared with other test files."""
    with LocalPlatform(odh_state) as platform:
        before = {i["metadata"]["name"] for i in platform.list("InferenceService")}
    yield
    with LocalPlatform(odh_state) as platform:
        for isvc in platform.list("InferenceService"):
            if isvc["metadata"]["name"] not in before:
                platform.delete("InferenceService", isvc["metadata"]["namespace"], isvc["metadata"]["name"])


def deploy_v1(state: Path, name: str, mode: str, annotations: dict[str, str] | None = None) -> str:
    """v1 (KServe's iris) registered as version 1 with the champion alias and deployed in ``mode`` (with extra
    ``annotations``: the lifecycle policy); its URL."""
    uploaded = upload_model(str(IRIS_DIR / "model.joblib"), state / "artifacts", StorageSettings.for_state(state))
    registry = ModelRegistry(mlflow_tracking_uri(state))
    v1 = registry.register_version(name, uploaded.uri, digest=uploaded.digest, tags={"odh.model_format": "sklearn"})
    registry.set_alias(name, "champion", v1.version)
    manifest = inference_service(name, v1.source, "sklearn", model_name=name, model_version=v1.version,
                                 policy=ServingPolicy(deployment_mode=mode))
    manifest["metadata"]["annotations"].update(annotations or {})
    with LocalPlatform(state) as platform:
        platform.apply(manifest)
        return str(platform.wait_ready("InferenceService", "default", name, timeout=180)["status"]["url"])


def load_through(url: str, name: str, clients: int = 3) -> AbstractContextManager[LoadResult]:
    """Steady load on the deployment's predict URL from a thread of its own for the duration of the block."""
    return load_in_background(f"{url}/v1/models/{name}:predict", V1_BODY, clients=clients, identify=served_by)


def after(url: str, name: str) -> LoadResult:
    return asyncio.run(drive(f"{url}/v1/models/{name}:predict", V1_BODY, clients=2, total=40, identify=served_by))


def run_rollout(state: Path, name: str, model: Path, **options: Any) -> Any:
    from flows.rollout import rollout

    return rollout(model_uri=str(model), name=name, state_dir=str(state), min_requests=10,
                   **{"canary_percent": 30, "analysis_seconds": 4, **options})


# The Standard deployment says its policy in annotations; the flow's parameters are left None for them.
POLICY = {"serving.odh.io/canary-percent": "30", "serving.odh.io/analysis-window": "4"}


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
def test_a_good_v2_is_promoted_and_the_alias_moves(odh_state: Path, good_v2: Path, mode: str) -> None:
    name = f"good-{mode.lower()}"
    from_policy = mode == "Standard"
    url = deploy_v1(odh_state, name, mode, POLICY if from_policy else None)
    with load_through(url, name) as during:
        result = run_rollout(odh_state, name, good_v2,
                             **({"canary_percent": None, "analysis_seconds": None} if from_policy else {}))
    assert (result.outcome, result.model_version) == ("promoted", "2"), result.reason
    assert "canary 5xx 0 % <= 5 %" in result.reason
    assert not during.failures, during.describe_failures()
    seen = during.by()
    assert seen["v1"] > 0 and seen["v2"] > 0, seen  # the canary took a share while v1 served the rest
    assert after(url, name).by() == {"v2": 40}
    registry = ModelRegistry(mlflow_tracking_uri(odh_state))
    assert registry.alias_version(name, "champion") == "2"
    promoted = registry.get_version(name, "2")
    assert promoted.tags["odh.rollout.status"] == "promoted"
    assert promoted.tags["odh.deployment.status"] == "ready" and promoted.tags["odh.deployment.url"] == url
    assert registry.get_version(name, "1").tags["odh.deployment.status"] == "superseded"
    with LocalPlatform(odh_state) as platform:
        isvc = platform.get("InferenceService", "default", name)
    assert isvc["metadata"]["labels"][MODEL_VERSION_LABEL] == "2"
    assert "canary" not in isvc["spec"] and "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    artifact = Artifact.get(f"rollout-default-{name}")
    assert artifact is not None and isinstance(artifact.data, str)
    assert f"{mode} canary at 30 %, window 4 s" in artifact.data  # from the annotations for Standard
    # The same version again: nothing to do.
    again = run_rollout(odh_state, name, good_v2)
    assert again.outcome == "unchanged"


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
def test_a_bad_v2_is_rolled_back_and_v1_answers_every_request(odh_state: Path, bad_v2: Path, mode: str) -> None:
    name = f"bad-{mode.lower()}"
    url = deploy_v1(odh_state, name, mode)
    with load_through(url, name) as during:
        result = run_rollout(odh_state, name, bad_v2)
    assert (result.outcome, result.model_version) == ("rolled-back", "2")
    assert result.reason.startswith("canary 5xx ") and "> 5 %" in result.reason, result.reason
    # Every failure is the canary's own 500; every other answer is v1's.
    from_v2 = [a for a in during.failures if a.status == 500 and "IndexError" in (a.error or "")]
    assert from_v2, "the bad canary never took traffic"
    assert len(from_v2) == len(during.failures), during.describe_failures()
    assert set(during.by()) == {"v1"}, during.by()
    assert after(url, name).by() == {"v1": 40}
    registry = ModelRegistry(mlflow_tracking_uri(odh_state))
    assert registry.alias_version(name, "champion") == "1"
    tags = registry.get_version(name, "2").tags
    assert tags["odh.rollout.status"] == "rolled-back" and tags["odh.rollout.reason"] == result.reason
    with LocalPlatform(odh_state) as platform:
        isvc = platform.get("InferenceService", "default", name)
        pods = {p["deployment"] for p in platform.pods()}
    assert isvc["metadata"]["labels"][MODEL_VERSION_LABEL] == "1"
    assert "serving.odh.io/canary-version" not in isvc["metadata"].get("annotations", {})
    assert "canary" not in isvc["spec"] and "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    if mode == "Standard":
        assert f"{name}-v2-predictor" not in pods  # the canary's Deployment is gone
    artifact = Artifact.get(f"rollout-default-{name}")
    assert artifact is not None and isinstance(artifact.data, str)
    assert "rolled-back" in artifact.data and result.reason in artifact.data
    assert "| stable |" in artifact.data and "| canary |" in artifact.data and "## Timeline" in artifact.data


def test_nothing_deployed_yet_is_deployed_directly(odh_state: Path, good_v2: Path) -> None:
    result = run_rollout(odh_state, "fresh", good_v2)
    assert (result.outcome, result.model_name, result.model_version) == ("deployed", "fresh", "1")
    assert after(result.url, "fresh").by() == {"v2": 40}
    assert ModelRegistry(mlflow_tracking_uri(odh_state)).alias_version("fresh", "champion") == "1"


def test_a_canary_that_never_becomes_ready_is_rolled_back(odh_state: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model.joblib"
    broken.write_bytes(b"not a pickle")  # the replica cannot load it: the canary revision fails
    name = "never-ready"
    url = deploy_v1(odh_state, name, "Serverless")
    with load_through(url, name, clients=2) as during:
        result = run_rollout(odh_state, name, broken)
    assert result.outcome == "rolled-back"
    assert result.reason.startswith("canary never became Ready"), result.reason
    assert not during.failures, during.describe_failures()
    assert set(during.by()) == {"v1"}
    assert after(url, name).by() == {"v1": 40}
    registry = ModelRegistry(mlflow_tracking_uri(odh_state))
    assert registry.alias_version(name, "champion") == "1"
    assert registry.get_version(name, "2").tags["odh.rollout.status"] == "rolled-back"


def test_the_direct_strategy_replaces_the_version_without_a_canary(odh_state: Path, good_v2: Path) -> None:
    """``serving.odh.io/rollout-strategy: direct`` (the deployment's policy, no rollout parameter): v2 replaces v1
    in place, the alias moves, and the load sees only v1 then v2, never a failure."""
    name = "direct"
    url = deploy_v1(odh_state, name, "Standard", {"serving.odh.io/rollout-strategy": "direct"})
    with load_through(url, name, clients=2) as during:
        result = run_rollout(odh_state, name, good_v2)
    assert (result.outcome, result.model_version) == ("promoted", "2")
    assert result.reason.startswith("direct strategy"), result.reason
    assert not during.failures, during.describe_failures()
    assert after(url, name).by() == {"v2": 40}
    assert ModelRegistry(mlflow_tracking_uri(odh_state)).alias_version(name, "champion") == "2"
    artifact = Artifact.get(f"rollout-default-{name}")
    assert artifact is not None and isinstance(artifact.data, str)
    assert "direct replacement, no canary" in artifact.data and "| canary |" not in artifact.data
