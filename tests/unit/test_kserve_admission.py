"""Admission of InferenceServices and ServingRuntimes: KServe's defaults and validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemas import sample_files

from serving.errors import AdmissionError
from serving.kserve import (
    AdmissionConfig,
    admit_inference_service,
    admit_serving_runtime,
    deployment_mode,
)
from serving.kserve.objects import admit_object

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "kserve" / "samples"
MODE = "serving.kserve.io/deploymentMode"

# Samples that are not YAML at all: they carry template placeholders ({docker_username}) for the reader
# to fill in, so neither kubectl nor KServe can take them as they are.
NOT_YAML = {
    "bentoml__bentoml.yaml",
    "v1beta1__custom__torchserve__autoscale.yaml",
    "v1beta1__custom__torchserve__bert-sample__bert.yaml",
    "v1beta1__custom__torchserve__canary.yaml",
    "v1beta1__custom__torchserve__gpu.yaml",
    "v1beta1__custom__torchserve__logger__torchserve-logger.yaml",
    "v1beta1__custom__torchserve__metrics.yaml",
    "v1beta1__custom__torchserve__torchserve-custom-pv.yaml",
    "v1beta1__custom__torchserve__torchserve-custom.yaml",
}

# Documents we reject, each with the field and the reason; KServe rejects every one of them too.
V1BETA1_ONLY = ("apiVersion", "apiVersion must be serving.kserve.io/v1beta1")
EXPECTED_REJECTIONS = {
    # Older API versions (v1alpha2 was removed; serving.kubeflow.org is KFServing's group).
    ("explanation__aif__germancredit__bias-v1alpha1.yaml", "german-credit"): V1BETA1_ONLY,
    ("storage__pvc__mnist-pvc.yaml", "mnist-sample"): V1BETA1_ONLY,
    ("gcp-iap__sklearn-iap-no-authz.yaml", "sklearn-iap"): V1BETA1_ONLY,
    ("gcp-iap__sklearn-iap-with-authz.yaml", "sklearn-iap"): V1BETA1_ONLY,
    # InferenceGraphs (serving.kserve.io/v1alpha1) shipped next to the services they route between.
    ("graph__ensemble.yaml", "ensemble-model"): V1BETA1_ONLY,
    ("graph__sequence.yaml", "model-chainer"): V1BETA1_ONLY,
    ("graph__splitter.yaml", "splitter-model"): V1BETA1_ONLY,
    ("graph__switch.yaml", "model-switch"): V1BETA1_ONLY,
    # KServe's validatePredictor: "the 'name' field is not allowed in standard predictor".
    ("multimodelserving__sklearn__inferenceservice.yaml", "sklearn-iris-example"): (
        "spec.predictor.sklearn.name",
        "the 'name' field is not allowed",
    ),
    # model plus a container named kserve-container: two implementations (KServe's ExactlyOne check).
    ("rollout-strategy__rollout-strategy-example.yaml", "multinode-example"): (
        "spec.predictor",
        "set exactly one predictor implementation (found model, containers)",
    ),
}


def _sample_documents() -> list[tuple[str, str, dict | None]]:
    cases = []
    for path, docs in sample_files():
        if docs is None:
            cases.append((path.name, "", None))
            continue
        cases.extend((path.name, (d.get("metadata") or {}).get("name", ""), d) for d in docs)
    return cases


SAMPLE_DOCUMENTS = _sample_documents()


def test_all_96_samples_are_covered():
    assert len(list(SAMPLES.glob("*.yaml"))) == 96
    assert {name for name, _, doc in SAMPLE_DOCUMENTS if doc is None} == NOT_YAML


@pytest.mark.parametrize(
    ("filename", "name", "doc"),
    [case for case in SAMPLE_DOCUMENTS if case[2] is not None],
    ids=[f"{f}:{n}" for f, n, d in SAMPLE_DOCUMENTS if d is not None],
)
def test_upstream_sample(filename, name, doc):
    expected = EXPECTED_REJECTIONS.get((filename, name))
    if expected is None:
        isvc = admit_inference_service(doc)
        assert isvc.name == name
        if deployment_mode(isvc) != "ModelMesh":  # KServe leaves ModelMesh shortcuts as written
            assert isvc.spec.predictor.model is not None or isvc.spec.predictor.containers
        return
    with pytest.raises(AdmissionError) as caught:
        admit_inference_service(doc)
    field, reason = expected
    assert any(e.field == field and reason in e.reason for e in caught.value.errors), caught.value.errors


def _isvc(predictor: dict | None = None, name: str = "iris", annotations: dict | None = None) -> dict:
    metadata: dict = {"name": name}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": predictor or {"sklearn": {"storageUri": "gs://bucket/model"}}},
    }


# ---------------------------------------------------------------- defaulting


def test_defaults_namespace_mode_and_rewrites_the_framework_shortcut():
    isvc = admit_inference_service(_isvc({"sklearn": {"storageUri": "s3://b/m", "args": ["--workers=2"]}}))
    assert isvc.metadata.namespace == "default"
    assert isvc.annotations[MODE] == "Standard"
    predictor = isvc.to_dict()["spec"]["predictor"]
    assert "sklearn" not in predictor
    assert predictor["model"] == {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://b/m", "args": ["--workers=2"]}
    assert isvc.spec.predictor.model.protocol_version is None  # unset means v1


@pytest.mark.parametrize(("shortcut", "protocol"), [("triton", "v2"), ("onnx", "v2"), ("huggingface", "v2"), ("pytorch", None)])
def test_shortcut_protocol_defaults_follow_kserve(shortcut, protocol):
    isvc = admit_inference_service(_isvc({shortcut: {"storageUri": "gs://b/m"}}))
    assert isvc.spec.predictor.model.model_format.name == shortcut
    assert isvc.spec.predictor.model.protocol_version == protocol


def test_model_mesh_predictors_keep_their_shortcut():
    isvc = admit_inference_service(_isvc(annotations={MODE: "ModelMesh"}))
    assert isvc.spec.predictor.model is None and isvc.spec.predictor.sklearn is not None


def test_configured_default_mode_and_given_mode_are_kept():
    assert admit_inference_service(_isvc(), config=AdmissionConfig("Knative")).annotations[MODE] == "Knative"
    assert admit_inference_service(_isvc(annotations={MODE: "RawDeployment"})).annotations[MODE] == "RawDeployment"


@pytest.mark.parametrize(
    ("written", "normalised"),
    [("Standard", "Standard"), ("RawDeployment", "Standard"), ("Knative", "Knative"), ("Serverless", "Knative"),
     ("ModelMesh", "ModelMesh")],
)
def test_deployment_mode_normalises_kserve_aliases(written, normalised):
    assert deployment_mode(admit_inference_service(_isvc(annotations={MODE: written}))) == normalised


def test_input_is_not_mutated_and_unknown_fields_survive():
    manifest = _isvc({"sklearn": {"storageUri": "gs://b/m"}, "nodeSelector": {"gpu": "a100"}, "futureField": {"x": 1}})
    manifest["metadata"]["labels"] = {"team": "a"}
    snapshot = yaml.safe_dump(manifest)
    dumped = admit_inference_service(manifest).to_dict()
    assert yaml.safe_dump(manifest) == snapshot
    assert dumped["spec"]["predictor"]["nodeSelector"] == {"gpu": "a100"}
    assert dumped["spec"]["predictor"]["futureField"] == {"x": 1}
    assert dumped["metadata"]["labels"] == {"team": "a"}


# ---------------------------------------------------------------- validation


def _errors(manifest: dict, **kwargs) -> dict[str, str]:
    with pytest.raises(AdmissionError) as caught:
        admit_inference_service(manifest, **kwargs)
    assert caught.value.kind == "InferenceService"
    return {e.field: e.reason for e in caught.value.errors}


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda m: m["metadata"].update(name="Iris"), "metadata.name", "DNS-1035"),
        (lambda m: m["metadata"].update(name="1iris"), "metadata.name", "start with a letter"),
        (lambda m: m["metadata"].update(name="iris-"), "metadata.name", "end with a letter or digit"),
        (lambda m: m["metadata"].update(name="a" * 64), "metadata.name", "at most 63"),
        (lambda m: m["metadata"].pop("name"), "metadata.name", "required"),
        (lambda m: m["metadata"].update(namespace="Team_A"), "metadata.namespace", "DNS-1123"),
        (lambda m: m["spec"]["predictor"].update(minReplicas=-1), "spec.predictor.minReplicas", "0 or more"),
        (lambda m: m["spec"]["predictor"].update(maxReplicas=-2), "spec.predictor.maxReplicas", "0 or more"),
        (lambda m: m["spec"]["predictor"].update(minReplicas=3, maxReplicas=2), "spec.predictor.maxReplicas", "below minReplicas 3"),
        (lambda m: m["spec"]["predictor"].update(scaleMetric="gpu"), "spec.predictor.scaleMetric", "cpu, memory, concurrency, rps"),
        (lambda m: m["spec"]["predictor"].update(scaleMetric="rps"), "spec.predictor.scaleMetric", "use one of cpu, memory"),
        (lambda m: m["spec"]["predictor"].update(scaleTarget=0), "spec.predictor.scaleTarget", "1 or more"),
        (lambda m: m["spec"]["predictor"].update(scaleTarget=150), "spec.predictor.scaleTarget", "1 to 100"),
        (lambda m: m["spec"]["predictor"].update(containerConcurrency=-1), "spec.predictor.containerConcurrency", "0 (unlimited) or more"),
        (lambda m: m["spec"]["predictor"].update(canaryTrafficPercent=120), "spec.predictor.canaryTrafficPercent", "0 to 100"),
        (lambda m: m["spec"]["predictor"]["sklearn"].update(storageUri="ftp://x/m"), "spec.predictor.sklearn.storageUri",
         "gs://, s3://, pvc://"),
        (lambda m: m["spec"]["predictor"]["sklearn"].update(storageUri="models/iris"), "spec.predictor.sklearn.storageUri",
         "absolute path"),
        (lambda m: m["spec"]["predictor"]["sklearn"].update(storageUri=""), "spec.predictor.sklearn.storageUri", "non-empty"),
        (lambda m: m["spec"]["predictor"].update(xgboost={}), "spec.predictor", "found sklearn, xgboost"),
        (lambda m: m["spec"].update(predictor={"minReplicas": 1}), "spec.predictor", "found none"),
        (lambda m: m["spec"].pop("predictor"), "spec.predictor", "required"),
        (lambda m: m["spec"]["predictor"].update(minReplicas="two"), "spec.predictor.minReplicas", "valid integer"),
        (lambda m: m["spec"]["predictor"]["sklearn"].update(env=[{"value": "x"}]), "spec.predictor.sklearn.env[0].name", "required"),
        (lambda m: m["metadata"].update(annotations={MODE: "Raw"}), f"metadata.annotations[{MODE}]",
         "Standard, RawDeployment, Knative, Serverless, ModelMesh"),
        (lambda m: m.update(apiVersion="serving.kserve.io/v1alpha1"), "apiVersion", "apiVersion must be serving.kserve.io/v1beta1"),
        (lambda m: m.update(kind="InferenceGraph"), "kind", "kind must be InferenceService"),
    ],
)
def test_each_error_names_its_field_and_the_fix(mutate, field, words):
    manifest = _isvc()
    mutate(manifest)
    errors = _errors(manifest)
    assert field in errors, errors
    assert words in errors[field]


def test_model_format_name_is_required_under_model():
    errors = _errors(_isvc({"model": {"modelFormat": {}, "storageUri": "gs://b/m"}}))
    assert errors == {"spec.predictor.model.modelFormat.name": "is required"}


@pytest.mark.parametrize(
    "uri",
    ["gs://b/m", "s3://b/m", "pvc://claim/path", "file:///srv/m", "http://h/m.joblib", "https://h/m", "hf://org/model",
     "oci://registry/model:1", "models:/iris@champion", "models:/iris/3", "/mnt/models/iris", "hdfs://nn/m"],
)
def test_supported_storage_uris_are_accepted(uri):
    assert admit_inference_service(_isvc({"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}}))


def test_every_problem_is_listed_at_once():
    manifest = _isvc({"sklearn": {"storageUri": "ftp://x"}, "minReplicas": -1, "maxReplicas": -1, "scaleMetric": "gpu"}, name="Bad_Name")
    assert set(_errors(manifest)) == {
        "metadata.name",
        "spec.predictor.sklearn.storageUri",
        "spec.predictor.minReplicas",
        "spec.predictor.maxReplicas",
        "spec.predictor.scaleMetric",
    }


def test_max_replicas_zero_means_unbounded_and_knative_takes_request_metrics():
    assert admit_inference_service(_isvc({"sklearn": {"storageUri": "gs://b/m"}, "minReplicas": 2, "maxReplicas": 0}))
    knative = _isvc({"sklearn": {"storageUri": "gs://b/m"}, "scaleMetric": "rps", "scaleTarget": 500}, annotations={MODE: "Serverless"})
    assert admit_inference_service(knative)
    knative["spec"]["predictor"]["scaleMetric"] = "cpu"
    assert "Knative's KPA" in _errors(knative)["spec.predictor.scaleMetric"]


def test_admission_error_message_lists_fields():
    with pytest.raises(AdmissionError) as caught:
        admit_inference_service(_isvc({"sklearn": {"storageUri": "gs://b"}, "minReplicas": -3}, name="x-"))
    text = str(caught.value)
    assert "InferenceService 'x-' is invalid" in text and "spec.predictor.minReplicas" in text and "metadata.name" in text


# ---------------------------------------------------------------- ServingRuntime


def _runtime(**spec) -> dict:
    base = {
        "supportedModelFormats": [{"name": "sklearn", "version": "1", "autoSelect": True, "priority": 1}],
        "containers": [{"name": "kserve-container", "image": "img:1"}],
    }
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": "rt"},
        "spec": {**base, **spec},
    }


def test_admit_serving_runtime_accepts_upstream_runtimes():
    for path in sorted((SAMPLES.parent / "runtimes").glob("*.yaml")):
        runtime = admit_serving_runtime(yaml.safe_load(path.read_text()))
        assert runtime.kind == "ClusterServingRuntime" and runtime.spec.supported_model_formats


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"supportedModelFormats": []}, "spec.supportedModelFormats", "list the model formats"),
        ({"containers": []}, "spec.containers", "model server container"),
        ({"containers": [{"name": "kserve-container"}]}, "spec.containers[0].image", "required"),
        ({"supportedModelFormats": [{"name": "sklearn", "autoSelect": True, "priority": -1}]}, "spec.supportedModelFormats[0].priority",
         "0 or more"),
        ({"supportedModelFormats": [{"version": "1"}]}, "spec.supportedModelFormats[0].name", "required"),
    ],
)
def test_serving_runtime_errors_name_their_field(spec, field, words):
    with pytest.raises(AdmissionError) as caught:
        admit_serving_runtime(_runtime(**spec))
    errors = {e.field: e.reason for e in caught.value.errors}
    assert field in errors and words in errors[field], errors
    assert caught.value.kind == "ClusterServingRuntime"


def test_serving_runtime_kind_and_version_are_checked():
    manifest = _runtime()
    manifest["kind"] = "Deployment"
    with pytest.raises(AdmissionError) as caught:
        admit_serving_runtime(manifest)
    assert caught.value.field == "kind"


# ---------------------------------------------------------------- the kinds users apply, and the replica limit


@pytest.mark.parametrize(
    "manifest",
    [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "ownerReferences": ["x"]}},
        {"apiVersion": "v1", "kind": "Nope", "metadata": {"name": "x"}},
        {"apiVersion": "serving.kserve.io/v1beta1", "metadata": {"name": "x"}},
        {"apiVersion": "serving.kserve.io/v1beta1", "kind": ["InferenceService"], "metadata": {"name": "x"}},
    ],
)
def test_only_the_kinds_users_own_are_admitted_and_the_refusal_lists_them(manifest):
    with pytest.raises(AdmissionError) as caught:
        admit_object(manifest)
    assert caught.value.field == "kind"
    for kind in ("InferenceService", "LLMInferenceService", "ServingRuntime", "ClusterServingRuntime"):
        assert kind in caught.value.reason


def test_a_known_kind_in_the_wrong_api_group_names_api_version():
    manifest = _isvc()
    manifest["apiVersion"] = "apps/v1"
    with pytest.raises(AdmissionError) as caught:
        admit_object(manifest)
    assert caught.value.field == "apiVersion"


def test_admit_object_dispatches_each_user_kind_to_its_admission():
    assert admit_object(_isvc())["spec"]["predictor"]["model"]["modelFormat"]["name"] == "sklearn"
    assert admit_object(_runtime())["kind"] == "ClusterServingRuntime"
    llm = {"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService", "metadata": {"name": "tiny"},
           "spec": {"model": {"uri": "hf://org/tiny"}}}
    assert admit_object(llm)["spec"]["replicas"] == 1


@pytest.mark.parametrize("component", ["predictor", "transformer", "explainer"])
@pytest.mark.parametrize("field", ["minReplicas", "maxReplicas"])
def test_replicas_beyond_the_platform_limit_are_refused_naming_the_field_the_limit_and_how_to_raise_it(component, field):
    manifest = _isvc()
    manifest["spec"].setdefault(component, {})[field] = 500
    with pytest.raises(AdmissionError) as caught:
        admit_inference_service(manifest, max_replicas=16)
    errors = {e.field: e.reason for e in caught.value.errors}
    reason = errors[f"spec.{component}.{field}"]
    assert "500" in reason and "16" in reason and "--max-replicas" in reason and "ODH_MAX_REPLICAS" in reason
    # At the limit is fine, and without a limit (pure KServe admission) nothing is refused.
    manifest["spec"][component][field] = 16
    assert admit_inference_service(manifest, max_replicas=16)
    manifest["spec"][component][field] = 500
    assert admit_inference_service(manifest)


def test_admit_object_passes_the_replica_limit_on():
    manifest = _isvc({"sklearn": {"storageUri": "gs://b/m"}, "minReplicas": 3})
    with pytest.raises(AdmissionError, match=re.escape("spec.predictor.minReplicas")):
        admit_object(manifest, max_replicas=2)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_KEYS = ("apiVersion", "kind", "metadata", "spec", "name", "namespace", "annotations", "predictor", "sklearn",
         "model", "storageUri", "minReplicas", "maxReplicas", "replicas", "prefill", "uri",
         "supportedModelFormats", "containers", "transformer", "explainer")


def _shaped(kind: str, api_version: str) -> st.SearchStrategy[dict]:
    """Objects of ``kind`` whose fields are right, wrong or junk in every combination."""
    leaf = _JSON | st.sampled_from(_KEYS)
    tree = st.recursive(leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), c, max_size=5),
                        max_leaves=25)
    return st.fixed_dictionaries({"apiVersion": st.just(api_version) | _JSON, "kind": st.just(kind) | _JSON},
                                 optional={"metadata": tree, "spec": tree})


@settings(max_examples=400, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.one_of(
    _JSON,
    _shaped("InferenceService", "serving.kserve.io/v1beta1"),
    _shaped("LLMInferenceService", "serving.kserve.io/v1alpha2"),
    _shaped("ServingRuntime", "serving.kserve.io/v1alpha1"),
    _shaped("ClusterServingRuntime", "serving.kserve.io/v1alpha1"),
))
def test_admission_of_any_json_either_admits_or_names_the_fields(obj):
    try:
        admitted = admit_object(obj, max_replicas=4)
    except AdmissionError as exc:
        assert exc.errors and all(isinstance(e.field, str) and e.reason for e in exc.errors)
    else:
        assert isinstance(admitted, dict) and admitted["metadata"]["name"]
