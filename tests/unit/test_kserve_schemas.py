"""What we admit, ship and report validates against KServe's own CRD schemas (openAPIV3Schema)."""

from __future__ import annotations

from pathlib import Path

import pytest
from schemas import assert_valid, sample_files

from serving.kserve import PredictorObservation, admit_inference_service, builtin_runtimes, observe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kserve"
CRDS = FIXTURES / "crds"


def _admitted_samples() -> list[tuple[str, dict]]:
    admitted = []
    for path, docs in sample_files():
        for doc in docs or []:
            try:
                admitted.append((f"{path.name}:{doc['metadata']['name']}", admit_inference_service(doc).to_dict()))
            except Exception:  # any rejection: those are covered by test_kserve_admission
                continue
    return admitted


ADMITTED = _admitted_samples()


def test_helper_catches_schema_violations():
    bad = dict(ADMITTED[0][1])
    bad["spec"] = {"predictor": {"minReplicas": "one"}}
    with pytest.raises(AssertionError):
        assert_valid(bad, "serving.kserve.io_inferenceservices.yaml", "v1beta1")


@pytest.mark.parametrize("isvc", [a[1] for a in ADMITTED], ids=[a[0] for a in ADMITTED])
def test_admitted_inference_services_validate_against_the_crd(isvc):
    assert_valid(isvc, "serving.kserve.io_inferenceservices.yaml", "v1beta1")


def test_enough_samples_admitted():
    assert len(ADMITTED) >= 80


@pytest.mark.parametrize("runtime", builtin_runtimes(), ids=lambda rt: rt.name)
def test_builtin_runtimes_validate_against_the_crd(runtime):
    assert_valid(runtime.to_dict(), "serving.kserve.io_clusterservingruntimes.yaml", "v1alpha1")


@pytest.mark.parametrize(
    "observation",
    [
        PredictorObservation(2, 2, url="http://iris.example.com", runtime="odh-sklearnserver"),
        PredictorObservation(1, 0),
        PredictorObservation(0, 0, failure_reason="NoSupportingRuntime", failure_message="none"),
        PredictorObservation(1, 0, failure_reason="ModelLoadFailed", failure_message="bad pickle"),
    ],
)
def test_observed_status_validates_against_the_crd(observation):
    isvc = admit_inference_service(dict(ADMITTED[0][1]))
    obj = isvc.to_dict()
    obj["status"] = observe(isvc, observation)
    assert_valid(obj, "serving.kserve.io_inferenceservices.yaml", "v1beta1")
