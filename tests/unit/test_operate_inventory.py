"""Revision -> deployment mapping from the platform's objects, and the mode/model/traffic a deployment shows."""

from __future__ import annotations

from typing import Any

from serving.operate.inventory import TrafficTarget, build_inventory, owner_key
from serving.policy import MODEL_NAME_LABEL, MODEL_VERSION_LABEL

ISVC = "serving.kserve.io/inferenceservice"


def obj(kind: str, name: str, labels: dict[str, str] | None = None, **rest: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "default", "labels": labels or {}}, **rest}


def test_serverless_revisions_standard_deployments_and_canaries_map_to_their_inference_service() -> None:
    sless = obj("InferenceService", "sless", {MODEL_NAME_LABEL: "iris", MODEL_VERSION_LABEL: "3"}, status={
        "deploymentMode": "Knative", "components": {"predictor": {"traffic": [
            {"revisionName": "sless-predictor-00002", "percent": 80, "latestRevision": True},
            {"revisionName": "sless-predictor-00001", "percent": 20, "tag": "prev"}]}}})
    std = obj("InferenceService", "std", status={"deploymentMode": "Standard", "canaryStatuses": [
        {"name": "canary", "ready": True, "trafficPercent": 10}, {"name": "slow", "ready": False, "trafficPercent": 5}]})
    inventory = build_inventory(
        inference_services=[std, sless],
        deployments=[obj("Deployment", "std-predictor", {ISVC: "std"}, status={"replicas": 2, "readyReplicas": 1}),
                     obj("Deployment", "std-canary-predictor", {ISVC: "std"}, spec={"replicas": 1},
                         status={"readyReplicas": 1}),
                     obj("Deployment", "sless-predictor-00002-deployment", {ISVC: "sless"}, status={"replicas": 1}),
                     obj("Deployment", "unrelated", {"app": "x"})],
        revisions=[obj("Revision", "sless-predictor-00002", {ISVC: "sless"})])
    assert [s.key for s in inventory.served] == ["default/sless", "default/std"]
    owner = inventory.revision_owner
    assert owner["default/sless-predictor-00002"] == "default/sless"
    assert owner["default/sless-predictor-00001"] == "default/sless"  # only in the status' traffic: still its own
    assert owner["default/std-predictor"] == owner["default/std-canary-predictor"] == "default/std"
    assert "default/unrelated" not in owner
    sless_served, std_served = inventory.served
    assert sless_served.mode == "Serverless" and (sless_served.model_name, sless_served.model_version) == ("iris", "3")
    assert sless_served.traffic[1] == TrafficTarget("sless-predictor-00001", 20, "prev", False)
    # a raw canary that is not Ready gets no traffic; the stable one the rest
    assert std_served.mode == "Standard"
    assert std_served.traffic == (TrafficTarget("std-predictor", 90), TrafficTarget("std-canary-predictor", 10))
    assert inventory.replicas["default/std"].ready == 2 and inventory.replicas["default/std"].desired == 3


def test_llm_inference_service_objects_map_by_app_labels_and_pods_by_their_template_labels() -> None:
    llm_labels = {"app.kubernetes.io/name": "tiny", "app.kubernetes.io/part-of": "llminferenceservice"}
    pod = obj("Pod", "tiny-kserve-0", llm_labels, status={"containerStatuses": [
        {"ready": False, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "exit 1"}}}]})
    inventory = build_inventory(llm_services=[obj("LLMInferenceService", "tiny")],
                                deployments=[obj("Deployment", "tiny-kserve", llm_labels)], pods=[pod])
    (served,) = inventory.served
    assert (served.kind, served.mode) == ("LLMInferenceService", "LLM-D")
    assert inventory.revision_owner == {"default/tiny-kserve": "default/tiny"}
    (state,) = inventory.pods
    assert (state.owner, state.ready, state.restarts, state.waiting_reason, state.message) == ("default/tiny", False, 3,
                                                                                                "CrashLoopBackOff", "exit 1")
    assert inventory.restarts() == {"default/tiny": 3}


def test_objects_of_no_known_deployment_are_left_out() -> None:
    assert owner_key(obj("Pod", "p", {ISVC: "gone"})) == "default/gone"
    inventory = build_inventory(pods=[obj("Pod", "p", {ISVC: "gone"})], deployments=[obj("Deployment", "d", {ISVC: "gone"})])
    assert inventory.pods == () and dict(inventory.revision_owner) == {}
