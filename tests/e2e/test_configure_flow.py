"""configure follows the decision trees end to end: deploy-model with bursty traffic serves iris Serverless,
and the run's configure artifact (read back through the Prefect API) shows the inputs, branches and results."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from support import IRIS_DIR, write_tiny_llm_dir

from serving.platform.local import LocalPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())


def read_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                      sort=ArtifactSort.CREATED_DESC, limit=1)
    assert found, f"no artifact {key}"
    return str(found[0].data)


def flow_run_names(flow_name: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    return [run.name for run in runs]


def test_bursty_traffic_deploys_iris_serverless_and_explains_why(odh_state: Path) -> None:
    from flows.deploy_model import deploy_model
    from flows.retire import retire

    name = "iris-bursty"
    try:
        result = deploy_model(model_uri=str(IRIS_DIR / "model.joblib"), name=name, traffic_pattern="bursty",
                              max_replicas=2, state_dir=str(odh_state))
        assert result.ready
        platform = LocalPlatform(odh_state)
        isvc = platform.get("InferenceService", "default", name)
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
        assert isvc["metadata"]["annotations"]["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"
        assert {c["type"]: c["status"] for c in isvc["status"]["conditions"]}["Ready"] == "True"
        # Served by a Knative revision, not a Standard Deployment.
        revisions = [r for r in platform.list("Revision.serving.knative.dev")
                     if r["metadata"].get("labels", {}).get("serving.kserve.io/inferenceservice") == name]
        assert revisions and not [d for d in platform.list("Deployment") if d["metadata"]["name"] == f"{name}-predictor"]
        answer = httpx.post(f"{result.url}/v1/models/{name}:predict", json=V1_BODY, timeout=30).raise_for_status().json()
        assert answer["predictions"] == [1, 1]

        artifact = read_artifact(f"configure-default-{name}")
        assert "| deployment mode | Serverless (InferenceService) |" in artifact
        assert "| traffic_pattern | bursty | bursty | Serverless |" in artifact
        assert "| primary metric (default for Serverless) | concurrency | concurrency on Serverless -> KPA |" in artifact
        assert "## What Serverless gives" in artifact
        assert "serving.kserve.io/deploymentMode: Serverless" in artifact  # the manifest, as applied
        assert f"{name}-v{result.model_version}" in flow_run_names("deploy-model")
    finally:
        retire(name=name, state_dir=str(odh_state))


def test_an_llm_without_cache_optimization_cannot_run_embedded_and_the_artifact_says_so(odh_state: Path,
                                                                                          tmp_path: Path) -> None:
    from flows.deploy_model import deploy_model
    from tasks.configure import CannotRunHere

    model = write_tiny_llm_dir(tmp_path)
    (model / "model.safetensors").write_bytes(b"\0" * 1024)  # what makes the directory a Hugging Face model
    name = "tiny-no-cache"
    with pytest.raises(CannotRunHere, match=r"no InferenceService runtime for vLLM.*LLM-D"):
        deploy_model(model_uri=str(model), name=name, cache_optimization=False, state_dir=str(odh_state))
    artifact = read_artifact(f"configure-default-{name}")
    assert "Cannot run on the embedded platform" in artifact
    assert "| target | embedded | no vLLM InferenceService runtime on the embedded platform | cannot run here; use LLM-D |" \
        in artifact
    # Nothing was deployed.
    assert not [i for i in LocalPlatform(odh_state).list("InferenceService") if i["metadata"]["name"] == name]
