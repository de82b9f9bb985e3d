"""Rollout manifests: canary, promotion and rollback for Serverless and Standard, each admitted by KServe's rules."""

from __future__ import annotations

from typing import Any

import pytest

from serving.kserve import admit_inference_service
from serving.kserve.reconcile.canary import canary_predictor, validate_canaries
from serving.policy import MODEL_NAME_LABEL, MODEL_VERSION_LABEL, ServingPolicy, inference_service
from serving.rollout import (
    CANARY_VERSION_ANNOTATION,
    NewVersion,
    analysis_targets,
    canary_failure,
    canary_ready,
    deployment_mode,
    plan_rollout,
    serving_version,
)

V2 = NewVersion("iris", "2", "file:///models/v2")


def live(mode: str) -> dict[str, Any]:
    """A stored InferenceService as the platform returns it: admitted, with server metadata and status."""
    manifest = inference_service("iris", "file:///models/v1", "sklearn", model_name="iris", model_version="1",
                                 policy=ServingPolicy(deployment_mode=mode))
    admitted = admit_inference_service(manifest).to_dict()
    admitted["metadata"].update({"uid": "u-1", "generation": 3, "resourceVersion": "17"})
    admitted["status"] = {"deploymentMode": "Knative" if mode == "Serverless" else "RawDeployment",
                          "components": {"predictor": {"latestRolledoutRevision": "iris-predictor-00001",
                                                       "latestReadyRevision": "iris-predictor-00002"}}}
    return admitted


def storage(manifest: dict[str, Any]) -> str:
    return str(manifest["spec"]["predictor"]["model"]["storageUri"])


def test_the_mode_and_version_come_from_the_live_object() -> None:
    assert deployment_mode(live("Serverless")) == "Serverless"
    assert deployment_mode(live("Standard")) == "Standard"
    no_annotation = live("Serverless")
    no_annotation["metadata"]["annotations"] = {}
    assert deployment_mode(no_annotation) == "Serverless"  # the platform's default mode, seen in status
    assert serving_version(live("Standard")) == ("iris", "1")
    assert serving_version({"metadata": {"labels": {MODEL_NAME_LABEL: "iris"}}}) is None


def test_serverless_canary_promotion_and_rollback() -> None:
    current = live("Serverless")
    plan = plan_rollout(current, V2, 20)
    assert plan.mode == "Serverless"
    for manifest in (plan.stable, plan.canary, *(s.manifest for s in plan.promote + plan.rollback)):
        assert "status" not in manifest and "uid" not in manifest["metadata"]
        admit_inference_service(manifest)  # every step is a valid InferenceService
    canary = plan.canary
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert storage(canary) == V2.storage_uri and storage(plan.stable) == "file:///models/v1"
    assert canary["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"
    assert canary["metadata"]["annotations"][CANARY_VERSION_ANNOTATION] == "2"
    assert canary["metadata"]["labels"][MODEL_VERSION_LABEL] == "1"  # the labels move only on promotion
    (promote,) = plan.promote
    assert "canaryTrafficPercent" not in promote.manifest["spec"]["predictor"]
    assert promote.manifest["metadata"]["labels"][MODEL_VERSION_LABEL] == "2"
    assert CANARY_VERSION_ANNOTATION not in promote.manifest["metadata"]["annotations"]
    assert storage(promote.manifest) == V2.storage_uri
    zero, back_at_zero, back = plan.rollback
    assert (zero.manifest["spec"]["predictor"]["canaryTrafficPercent"], storage(zero.manifest)) == (0, V2.storage_uri)
    assert not zero.wait_ready  # instant: everything on the rolled-out revision
    assert (back_at_zero.manifest["spec"]["predictor"]["canaryTrafficPercent"], storage(back_at_zero.manifest)) == (
        0, "file:///models/v1")
    assert back_at_zero.wait_ready and back.wait_ready
    assert back.manifest == plan.stable
    assert analysis_targets(current, plan) == ("iris-predictor-00001", "iris-predictor-00002")


def test_serverless_targets_wait_for_the_canary_revision() -> None:
    current = live("Serverless")
    current["status"]["components"]["predictor"]["latestReadyRevision"] = "iris-predictor-00001"
    with pytest.raises(ValueError, match="not Ready yet"):
        analysis_targets(current, plan_rollout(current, V2, 20))


def test_standard_canary_is_kserves_spec_canary_entry() -> None:
    current = live("Standard")
    plan = plan_rollout(current, V2, 25)
    assert plan.mode == "Standard" and plan.canary_name == "v2"
    admitted = admit_inference_service(plan.canary).to_dict()
    validate_canaries(admitted)
    (entry,) = admitted["spec"]["canary"]
    assert entry["trafficPercent"] == 25
    merged = canary_predictor(admitted["spec"]["predictor"], entry)
    assert merged["model"]["storageUri"] == V2.storage_uri
    assert merged["model"]["modelFormat"]["name"] == "sklearn"  # the rest comes from the stable predictor
    (promote,) = plan.promote
    predictor = promote.manifest["spec"]["predictor"]
    assert predictor["name"] == "v2" and storage(promote.manifest) == V2.storage_uri
    assert "canary" not in promote.manifest["spec"]
    assert promote.manifest["metadata"]["labels"][MODEL_VERSION_LABEL] == "2"
    (rollback,) = plan.rollback
    assert rollback.manifest == plan.stable and "canary" not in rollback.manifest["spec"]
    assert analysis_targets(current, plan) == ("iris-predictor", "iris-v2-predictor")
    for step in plan.promote + plan.rollback:
        admit_inference_service(step.manifest)


def test_standard_after_a_promotion_names_the_next_canary_apart() -> None:
    promoted = plan_rollout(live("Standard"), V2, 25).promote[0].manifest
    again = plan_rollout(promoted, V2, 10)
    assert again.canary_name == "v2-canary"
    nxt = plan_rollout(promoted, NewVersion("iris", "3", "file:///models/v3"), 10)
    assert nxt.canary_name == "v3"
    assert analysis_targets(promoted, nxt) == ("iris-v2-predictor", "iris-v3-predictor")
    validate_canaries(admit_inference_service(nxt.canary).to_dict())


def test_a_canary_share_out_of_range_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="canary_percent 100"):
        plan_rollout(live("Serverless"), V2, 100)


def test_canary_readiness_is_read_from_status_at_the_applied_generation() -> None:
    serverless = live("Serverless")
    plan = plan_rollout(serverless, V2, 20)
    predictor = serverless["status"]["components"]["predictor"]
    serverless["status"]["observedGeneration"] = 4
    predictor["latestCreatedRevision"] = "iris-predictor-00002"
    assert canary_ready(serverless, plan, generation=4)
    assert not canary_ready(serverless, plan, generation=5)  # the platform has not seen the canary yet
    predictor["latestCreatedRevision"] = "iris-predictor-00003"  # a newer revision still starting
    assert not canary_ready(serverless, plan, generation=4)
    assert canary_failure(serverless, plan) is None
    serverless["status"]["conditions"] = [{"type": "PredictorConfigurationReady", "status": "False",
                                           "reason": "RevisionFailed", "message": "Revision 'x' failed"}]
    assert canary_failure(serverless, plan) == "RevisionFailed: Revision 'x' failed"
    standard = live("Standard")
    plan = plan_rollout(standard, V2, 20)
    standard["status"]["canaryStatuses"] = [{"name": "v2", "ready": False, "trafficPercent": 20}]
    assert not canary_ready(standard, plan, generation=None)
    standard["status"]["canaryStatuses"][0]["ready"] = True
    assert canary_ready(standard, plan, generation=None)


def test_a_new_model_format_is_refused_before_anything_changes() -> None:
    with pytest.raises(ValueError, match="model_format 'mlflow' differs from the 'sklearn'"):
        plan_rollout(live("Serverless"), V2, 20, model_format="mlflow")
    assert plan_rollout(live("Serverless"), V2, 20, model_format="sklearn").mode == "Serverless"


def test_retire_reads_what_remaining_objects_reference() -> None:
    from serving.operate.scrape import parse_metrics
    from serving.rollout.retire import referenced_uris, served_versions

    canaried = plan_rollout(live("Standard"), V2, 20).canary
    revision = {"metadata": {"annotations": {"internal.serving.kserve.io/storage-initializer-sourceuri": "s3://b/m"}},
                "spec": {"containers": [{"name": "kserve-container"}]}}
    llm = {"metadata": {"name": "tiny"}, "spec": {"model": {"uri": "hf://org/tiny", "name": "tiny"}}}
    assert referenced_uris([canaried, revision, llm]) == {"file:///models/v1", V2.storage_uri, "s3://b/m", "hf://org/tiny"}
    assert served_versions([live("Standard"), llm]) == {("iris", "1")}
    text = ('# HELP odh_gateway_in_flight Requests in flight per route.\n# TYPE odh_gateway_in_flight gauge\n'
            'odh_gateway_in_flight{route="default/iris"} 3.0\nodh_gateway_in_flight{route="team/iris"} 1.0\n')
    assert parse_metrics(text, 0.0).route_in_flight == {"default/iris": 3.0, "team/iris": 1.0}


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
def test_direct_replaces_the_model_in_place_with_no_canary(mode: str) -> None:
    plan = plan_rollout(live(mode), V2, 20)
    [step] = plan.direct
    manifest = step.manifest
    assert step.wait_ready
    assert storage(manifest) == "file:///models/v2"
    assert manifest["metadata"]["labels"][MODEL_VERSION_LABEL] == "2"
    assert "canary" not in manifest["spec"] and "canaryTrafficPercent" not in manifest["spec"]["predictor"]
    assert CANARY_VERSION_ANNOTATION not in manifest["metadata"].get("annotations", {})
    # Standard keeps the predictor's name: its Deployment rolls instead of a new one replacing it.
    assert manifest["spec"]["predictor"].get("name") == plan.stable["spec"]["predictor"].get("name")
    admit_inference_service(manifest)
