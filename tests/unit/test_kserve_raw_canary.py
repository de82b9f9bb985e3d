"""Standard-mode canaries (spec.canary[]) as KServe's RawDeployment reconciler renders them."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from serving.kserve import ReconcileConfig, ReconcileError, admit_inference_service, builtin_runtimes, render, resolve_runtime
from serving.kserve.reconcile.canary import canary_condition, canary_statuses, traffic_weights, validate_canaries
from serving.kserve.reconcile.standard import canary_inference_service, reconcile_standard
from serving.kserve.runtimes import split_runtimes


def _manifest(canaries, autoscaler="none", min_replicas=4, status=None, predictor_name=None, stable_uri="s3://m/v1"):
    predictor = {"sklearn": {"storageUri": stable_uri}}
    if min_replicas is not None:
        predictor["minReplicas"] = min_replicas
    if predictor_name:
        predictor["name"] = predictor_name
    manifest = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "annotations": {
            "serving.kserve.io/deploymentMode": "Standard", "serving.kserve.io/autoscalerClass": autoscaler}},
        "spec": {"predictor": predictor, "canary": canaries},
    }
    if status is not None:
        manifest["status"] = status
    return manifest


def _canary(name, percent, uri=None, **predictor):
    return {"trafficPercent": percent, "predictor": {"name": name, "sklearn": {"storageUri": uri or f"s3://m/{name}"}, **predictor}}


def _ready(*names):
    return {"canaryStatuses": [{"name": n, "ready": True, "trafficPercent": 0} for n in names]}


def _by(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _source_uri(deployment):
    return deployment["spec"]["template"]["metadata"]["annotations"]["internal.serving.kserve.io/storage-initializer-sourceuri"]


def test_each_canary_is_its_own_deployment_and_service_that_validate():
    objects = render(_manifest([_canary("v2", 25)]))
    deployments, services = _by(objects, "Deployment"), _by(objects, "Service")
    assert list(deployments) == ["iris-predictor", "iris-v2-predictor"] == list(services)
    assert _source_uri(deployments["iris-predictor"]) == "s3://m/v1"
    assert _source_uri(deployments["iris-v2-predictor"]) == "s3://m/v2"
    assert deployments["iris-v2-predictor"]["spec"]["selector"]["matchLabels"] == {"app": "isvc.iris-v2-predictor"}
    assert services["iris-v2-predictor"]["spec"]["selector"] == {"app": "isvc.iris-v2-predictor"}
    assert services["iris-predictor"]["spec"]["selector"] == {"app": "isvc.iris-predictor"}
    for obj in objects:
        assert obj["metadata"]["labels"]["serving.kserve.io/inferenceservice"] == "iris"
        assert obj["metadata"]["ownerReferences"][0]["name"] == "iris"
        kubernetes_validate.validate(obj, "1.30.0", strict=True)


@pytest.mark.parametrize(
    ("canaries", "ready", "replicas"),
    [
        # KServe's canary_controller_test: 25 % of 4 is 1 canary replica; the stable gives it up once it is Ready.
        ([_canary("v2", 25)], (), {"iris-predictor": 4, "iris-v2-predictor": 1}),
        ([_canary("v2", 25)], ("v2",), {"iris-predictor": 3, "iris-v2-predictor": 1}),
        ([_canary("v2", 50)], ("v2",), {"iris-predictor": 2, "iris-v2-predictor": 2}),
        ([_canary("v2", 25), _canary("v3", 25)], ("v2", "v3"), {"iris-predictor": 2, "iris-v2-predictor": 1, "iris-v3-predictor": 1}),
        # An explicit canary minReplicas wins; the stable never drops below 1.
        ([_canary("v2", 10, minReplicas=4)], ("v2",), {"iris-predictor": 1, "iris-v2-predictor": 4}),
    ],
)
def test_replicas_split_like_kserve(canaries, ready, replicas):
    objects = render(_manifest(canaries, status=_ready(*ready)))
    assert {n: d["spec"]["replicas"] for n, d in _by(objects, "Deployment").items()} == replicas


def test_traffic_goes_to_ready_canaries_only():
    before = render(_manifest([_canary("v2", 20)]))
    weights = {n: s["metadata"]["annotations"]["serving.odh.io/traffic-weight"] for n, s in _by(before, "Service").items()}
    assert weights == {"iris-predictor": "100", "iris-v2-predictor": "0"}
    after = render(_manifest([_canary("v2", 20), _canary("v3", 5)], status=_ready("v2", "v3")))
    weights = {n: s["metadata"]["annotations"]["serving.odh.io/traffic-weight"] for n, s in _by(after, "Service").items()}
    assert weights == {"iris-predictor": "75", "iris-v2-predictor": "20", "iris-v3-predictor": "5"}
    # Without canaries there is no split to announce.
    plain = render(_manifest([]))
    assert "serving.odh.io/traffic-weight" not in _by(plain, "Service")["iris-predictor"]["metadata"].get("annotations", {})


def test_hpa_class_gives_the_canary_a_fixed_hpa_and_keda_fixed_replicas():
    objects = render(_manifest([_canary("v2", 25)], autoscaler="hpa"))
    hpas = _by(objects, "HorizontalPodAutoscaler")
    assert (hpas["iris-v2-predictor"]["spec"]["minReplicas"], hpas["iris-v2-predictor"]["spec"]["maxReplicas"]) == (1, 1)
    assert hpas["iris-predictor"]["spec"]["minReplicas"] == 4
    assert all("replicas" not in d["spec"] for d in _by(objects, "Deployment").values())
    cpu = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}
    manifest = _manifest([_canary("v2", 25)], autoscaler="keda")
    manifest["spec"]["predictor"]["autoScaling"] = {"metrics": [cpu]}
    objects = render(manifest)
    assert list(_by(objects, "ScaledObject")) == ["iris-predictor"]
    assert _by(objects, "Deployment")["iris-v2-predictor"]["spec"]["replicas"] == 1


def test_canary_keeps_the_stable_spec_it_does_not_override():
    stable_env = [{"name": "A", "value": "1"}]
    manifest = _manifest([_canary("v2", 25, labels={"track": "canary"})])
    manifest["spec"]["predictor"]["sklearn"]["env"] = stable_env
    manifest["spec"]["predictor"]["labels"] = {"team": "a"}
    deployments = _by(render(manifest), "Deployment")
    canary_pod = deployments["iris-v2-predictor"]["spec"]["template"]
    main = next(c for c in canary_pod["spec"]["containers"] if c["name"] == "kserve-container")
    assert {"name": "A", "value": "1"} in main["env"]
    assert canary_pod["metadata"]["labels"]["team"] == "a" and canary_pod["metadata"]["labels"]["track"] == "canary"


def test_promotion_keeps_the_canary_pods_and_drops_the_old_stable():
    before = _by(render(_manifest([_canary("v2", 25)], status=_ready("v2"))), "Deployment")["iris-v2-predictor"]
    promoted = render(_manifest([], predictor_name="v2", stable_uri="s3://m/v2", min_replicas=4))
    deployments = _by(promoted, "Deployment")
    assert list(deployments) == ["iris-v2-predictor"]
    # Same pod template: the Deployment is not rolled.
    assert deployments["iris-v2-predictor"]["spec"]["template"] == before["spec"]["template"]
    assert deployments["iris-v2-predictor"]["spec"]["replicas"] == 4


def test_canary_traffic_percent_is_ignored_in_standard_mode():
    manifest = _manifest([], min_replicas=None)
    manifest["spec"]["predictor"]["canaryTrafficPercent"] = 20
    assert [o["kind"] for o in render(manifest)] == ["Deployment", "Service"]


@pytest.mark.parametrize(
    ("canaries", "message"),
    [
        ([{"trafficPercent": 10, "predictor": {"sklearn": {"storageUri": "s3://m/x"}}}], "spec.canary[0].predictor.name is required"),
        ([_canary("v2", 10), _canary("v2", 10)], "spec.canary[1].predictor.name 'v2' is duplicated"),
        ([_canary("V2", 10)], "spec.canary[0].predictor.name 'V2' must match"),
        ([_canary("v2", 60), _canary("v3", 50)], "sum to 110"),
        ([_canary("v2", 101)], "spec.canary[0].trafficPercent is 101"),
        ([_canary("v2", 10, maxReplicas=3)], "spec.canary[0].predictor.maxReplicas must not be set"),
        ([_canary("v2", 10, scaleMetric="cpu")], "spec.canary[0].predictor.scaleMetric must not be set"),
        ([_canary("v2", 10, minReplicas=5)], "minReplicas (5) must not exceed the stable predictor's minReplicas (4)"),
        ([{"trafficPercent": 10, "predictor": {"name": "v2"}}], "exactly one implementation (found none)"),
    ],
)
def test_invalid_canaries_are_refused_naming_the_field(canaries, message):
    with pytest.raises(ReconcileError) as caught:
        render(_manifest(canaries))
    assert caught.value.reason == "InvalidCanarySpec"
    assert message in caught.value.message


def test_canaries_are_standard_mode_only():
    with pytest.raises(ReconcileError, match="only supported in Standard"):
        validate_canaries(_manifest([_canary("v2", 10)]), mode="Knative")


def test_a_canary_of_another_format_needs_its_runtime():
    manifest = _manifest([{"trafficPercent": 10, "predictor": {"name": "mlf", "model": {
        "modelFormat": {"name": "mlflow"}, "protocolVersion": "v2", "storageUri": "s3://m/mlf"}}}])
    isvc = admit_inference_service(manifest)
    namespaced, cluster = split_runtimes(builtin_runtimes(), "ml")
    stable_runtime = resolve_runtime(isvc, namespaced, cluster)
    with pytest.raises(ReconcileError) as caught:
        reconcile_standard(isvc, stable_runtime, ReconcileConfig())
    assert caught.value.reason == "NoSupportingRuntime" and "spec.canary[0] (mlf)" in caught.value.message
    canary_runtime = resolve_runtime(canary_inference_service(isvc, "mlf"), namespaced, cluster)
    objects = reconcile_standard(isvc, stable_runtime, ReconcileConfig(), canary_runtimes={"mlf": canary_runtime})
    assert list(_by(objects, "Deployment")) == ["iris-predictor", "iris-mlf-predictor"]


def test_status_and_weights_follow_available_replicas():
    manifest = _manifest([_canary("v2", 25), _canary("v3", 10)])
    statuses = canary_statuses(manifest, {"iris-v2-predictor": 1, "iris-v3-predictor": 0})
    assert statuses == [{"name": "v2", "ready": True, "trafficPercent": 25}, {"name": "v3", "ready": False, "trafficPercent": 10}]
    assert canary_condition(statuses) == {"type": "CanaryPredictorReady", "status": "False", "reason": "CanariesNotReady"}
    assert canary_condition([]) is None
    observed = copy.deepcopy(manifest)
    observed["status"] = {"canaryStatuses": statuses}
    assert traffic_weights(observed) == {"iris-predictor": 75, "iris-v2-predictor": 25, "iris-v3-predictor": 0}
