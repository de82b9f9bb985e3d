"""InferenceService status from predictor observations: conditions, URLs, modelStatus."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from serving.kserve import PredictorObservation, admit_inference_service, observe

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2025, 1, 1, 12, 5, tzinfo=UTC)
URL = "http://iris-ml.example.com"


@pytest.fixture
def isvc():
    return admit_inference_service(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "iris", "namespace": "ml", "generation": 3},
            "spec": {"predictor": {"sklearn": {"storageUri": "gs://b/m"}}},
        }
    )


def _conditions(status):
    return {c["type"]: c for c in status["conditions"]}


def test_ready_predictor(isvc):
    status = observe(isvc, PredictorObservation(2, 2, url=URL, runtime="odh-sklearnserver"), now=T0)
    conditions = _conditions(status)
    assert {t: c["status"] for t, c in conditions.items()} == {"PredictorReady": "True", "IngressReady": "True", "Ready": "True"}
    assert all(c["lastTransitionTime"] == "2025-01-01T12:00:00Z" for c in conditions.values())
    assert status["url"] == URL
    assert status["address"] == {"url": "http://iris-predictor.ml.svc.cluster.local"}
    assert status["components"] == {"predictor": {"url": URL}}
    assert status["observedGeneration"] == 3
    assert status["deploymentMode"] == "Standard"
    assert status["clusterServingRuntimeName"] == "odh-sklearnserver"
    assert status["modelStatus"] == {
        "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
        "transitionStatus": "UpToDate",
        "copies": {"failedCopies": 0, "totalCopies": 2},
    }


def test_loading_then_pending(isvc):
    loading = observe(isvc, PredictorObservation(1, 0), now=T0)
    assert _conditions(loading)["PredictorReady"]["status"] == "Unknown"
    assert _conditions(loading)["Ready"] == {
        "type": "Ready", "status": "Unknown", "reason": "MinimumReplicasUnavailable",
        "message": "0 of 1 replicas ready", "lastTransitionTime": "2025-01-01T12:00:00Z",
    }
    assert loading["modelStatus"]["states"] == {"activeModelState": "Pending", "targetModelState": "Loading"}
    assert loading["modelStatus"]["transitionStatus"] == "InProgress"
    assert "url" not in loading
    pending = observe(isvc, PredictorObservation(0, 0), now=T0)
    assert pending["modelStatus"]["states"]["targetModelState"] == "Pending"


def test_spec_failure_is_invalid_spec(isvc):
    failed = PredictorObservation(0, 0, failure_reason="NoSupportingRuntime", failure_message="no runtime found")
    status = observe(isvc, failed, now=T0)
    ready = _conditions(status)["Ready"]
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "NoSupportingRuntime", "no runtime found")
    assert status["modelStatus"]["transitionStatus"] == "InvalidSpec"
    assert status["modelStatus"]["lastFailureInfo"] == {
        "reason": "NoSupportingRuntime", "message": "no runtime found", "time": "2025-01-01T12:00:00Z"}


def test_load_failure_blocks_but_keeps_the_loaded_model_active(isvc):
    before = observe(isvc, PredictorObservation(1, 1, url=URL), now=T0)
    failed = PredictorObservation(1, 0, url=URL, failure_reason="ModelLoadFailed", failure_message="bad pickle")
    after = observe(isvc, failed, before, now=T1)
    assert after["modelStatus"]["states"] == {"activeModelState": "Loaded", "targetModelState": "FailedToLoad"}
    assert after["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"
    assert _conditions(after)["PredictorReady"]["status"] == "False"


def test_last_transition_time_only_moves_when_the_status_changes(isvc):
    first = observe(isvc, PredictorObservation(1, 0, url=URL), now=T0)
    second = observe(isvc, PredictorObservation(1, 1, url=URL), first, now=T1)
    third = observe(isvc, PredictorObservation(1, 1, url=URL), second, now=datetime(2025, 1, 2, tzinfo=UTC))
    assert _conditions(second)["IngressReady"]["lastTransitionTime"] == "2025-01-01T12:00:00Z"  # True throughout
    assert _conditions(second)["PredictorReady"]["lastTransitionTime"] == "2025-01-01T12:05:00Z"  # Unknown -> True
    assert _conditions(third) == _conditions(second)


def test_namespace_runtime_name(isvc):
    status = observe(isvc, PredictorObservation(1, 1, url=URL, runtime="mine", runtime_kind="ServingRuntime"), now=T0)
    assert status["servingRuntimeName"] == "mine" and "clusterServingRuntimeName" not in status
