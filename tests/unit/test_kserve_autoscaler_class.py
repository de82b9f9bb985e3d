"""serving.kserve.io/autoscalerClass in Standard mode, as KServe's raw reconciler renders it, and the
autoscaling policy the embedded platform reads from the rendered HPA or KEDA ScaledObject."""

from __future__ import annotations

from functools import cache

import jsonschema
import kubernetes_validate
import pytest
import yaml
from schemas import CRDS, _to_json_schema

from serving.kserve import ReconcileConfig, ReconcileError, render
from serving.kserve.reconcile.keda import gateway_metric
from serving.kserve.reconcile.policy import MetricGoal, PolicyError, autoscaling_policy, policies_by_deployment

K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())


@cache
def _scaled_object_validator() -> jsonschema.Draft7Validator:
    # The file holds KEDA's Namespace before the CRD, so tests/schemas.py's one-document loader cannot read it.
    docs = yaml.safe_load_all((CRDS / "keda_scaledobject.yaml").read_text())
    crd = next(d for d in docs if d and d.get("kind") == "CustomResourceDefinition")
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return jsonschema.Draft7Validator(_to_json_schema(schema))


def _assert_valid_scaled_object(obj: dict) -> None:
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _scaled_object_validator().iter_errors(obj)]
    assert not errors, errors


def _manifest(autoscaler=None, **predictor):
    annotations = {"serving.kserve.io/deploymentMode": "Standard"}
    if autoscaler is not None:
        annotations["serving.kserve.io/autoscalerClass"] = autoscaler
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "ml", "annotations": annotations},
        "spec": {"predictor": {"sklearn": {"storageUri": "s3://models/iris"}, **predictor}},
    }


def _kinds(objects):
    return {o["kind"]: o for o in objects}


CPU_50 = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}
MEMORY_512 = {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "512Mi"}}}


# --------------------------------------------------------------------------- hpa


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_hpa_from_autoscaling_metrics_validates_and_keeps_behavior_empty(version):
    # KServe copies Resource metrics from autoScaling but never its behavior (createHPA sets {}).
    objects = render(_manifest("hpa", minReplicas=2, maxReplicas=5,
                               autoScaling={"metrics": [CPU_50, MEMORY_512], "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}}}))
    hpa = _kinds(objects)["HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"] == [CPU_50, MEMORY_512]
    assert hpa["spec"]["behavior"] == {}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    kubernetes_validate.validate(hpa, version, strict=True)


def test_hpa_with_memory_and_no_target_has_no_metric_and_the_policy_defaults_to_cpu():
    hpa = _kinds(render(_manifest(scaleMetric="memory")))["HorizontalPodAutoscaler"]
    assert "metrics" not in hpa["spec"]
    assert autoscaling_policy(hpa).metrics == (MetricGoal("cpu", "Utilization", 80),)


def test_hpa_refuses_external_metrics_naming_the_field():
    external = gateway_metric("rps", 5, namespace="ml", name="iris")
    with pytest.raises(ReconcileError) as caught:
        render(_manifest(autoScaling={"metrics": [external]}))
    assert caught.value.reason == "InvalidAutoScalingSpec"
    assert "spec.predictor.autoScaling.metrics[0].type" in caught.value.message and "keda" in caught.value.message


# --------------------------------------------------------------------------- none / external


@pytest.mark.parametrize(("predictor", "replicas"), [({"minReplicas": 3}, 3), ({"minReplicas": 0}, 0), ({}, None)])
def test_none_writes_min_replicas_on_the_deployment_and_renders_no_autoscaler(predictor, replicas):
    objects = render(_manifest("none", **predictor))
    assert [o["kind"] for o in objects] == ["Deployment", "Service"]
    assert objects[0]["spec"].get("replicas") == replicas
    assert policies_by_deployment(objects) == {}


def test_external_leaves_replicas_to_the_external_autoscaler():
    objects = render(_manifest("external", minReplicas=3))
    assert [o["kind"] for o in objects] == ["Deployment", "Service"]
    assert "replicas" not in objects[0]["spec"]


@pytest.mark.parametrize("value", ["kpa", "HPA", "knative"])
def test_unknown_class_is_refused_naming_the_annotation(value):
    with pytest.raises(ReconcileError) as caught:
        render(_manifest(value))
    assert caught.value.reason == "AutoscalerNotSupported"
    assert "serving.kserve.io/autoscalerClass" in caught.value.message and "hpa, external, keda, none" in caught.value.message


# --------------------------------------------------------------------------- keda


def test_keda_resource_triggers_and_configmap_windows():
    objects = render(_manifest("keda", minReplicas=1, maxReplicas=5, autoScaling={"metrics": [CPU_50, MEMORY_512]}))
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "ScaledObject"]
    scaled = objects[2]
    _assert_valid_scaled_object(scaled)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["metadata"]["name"] == "iris-predictor"
    assert scaled["spec"] == {
        "scaleTargetRef": {"name": "iris-predictor"},
        "triggers": [
            {"type": "cpu", "metadata": {"value": "50"}, "metricType": "Utilization"},
            {"type": "memory", "metadata": {"value": "512Mi"}, "metricType": "AverageValue"},
        ],
        "minReplicaCount": 1,
        "maxReplicaCount": 5,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
            "scaleDown": {"stabilizationWindowSeconds": 300}, "scaleUp": {"stabilizationWindowSeconds": 0}}}},
    }
    assert "replicas" not in objects[0]["spec"]


def test_keda_windows_come_from_autoscaling_behavior_then_the_configmap():
    config = ReconcileConfig.from_configmap({"data": {"autoscaler": '{"scaleUpStabilizationWindowSeconds": "30", '
                                                                     '"scaleDownStabilizationWindowSeconds": "600"}'}})
    assert (config.scale_up_stabilization_window_seconds, config.scale_down_stabilization_window_seconds) == (30, 600)
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 60, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}
    objects = render(_manifest("keda", autoScaling={"metrics": [CPU_50], "behavior": behavior}), config=config)
    # Only the windows travel: KServe drops the policies.
    assert objects[2]["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == {
        "scaleDown": {"stabilizationWindowSeconds": 60}, "scaleUp": {"stabilizationWindowSeconds": 30}}
    with pytest.raises(ValueError, match="scaleUpStabilizationWindowSeconds"):
        ReconcileConfig.from_configmap({"data": {"autoscaler": '{"scaleUpStabilizationWindowSeconds": "5m"}'}})


@pytest.mark.parametrize(("metric", "kind"), [("rps", "rps"), ("concurrency", "concurrency")])
def test_keda_gateway_trigger_becomes_a_request_policy(metric, kind):
    entry = gateway_metric(metric, 4, namespace="ml", name="iris")
    objects = render(_manifest("keda", minReplicas=0, maxReplicas=3, autoScaling={"metrics": [entry]}))
    scaled = objects[2]
    _assert_valid_scaled_object(scaled)
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "4"
    assert 'route="ml/iris"' in trigger["metadata"]["query"]
    assert scaled["spec"]["minReplicaCount"] == 0  # KEDA scales to zero; KServe keeps minReplicas as written
    policy = autoscaling_policy(scaled)
    assert (policy.source, policy.namespace, policy.deployment) == ("ScaledObject", "ml", "iris-predictor")
    assert (policy.min_replicas, policy.max_replicas, policy.metric) == (0, 3, kind)
    assert policy.request_metrics == (MetricGoal(kind, "AverageValue", 4.0, trigger["metadata"]["query"], "http://127.0.0.1:8080"),)
    assert (policy.polling_interval_seconds, policy.cooldown_period_seconds) == (30, 300)
    assert policy.behavior.scale_down.stabilization_window_seconds == 300
    assert policy.behavior.scale_up.stabilization_window_seconds == 0


def test_keda_external_and_pod_metric_triggers_as_kserve_writes_them():
    external = {"type": "External", "external": {
        "metric": {"backend": "prometheus", "serverAddress": "http://prom:9090", "query": "vllm:num_requests_waiting", "namespace": "ml"},
        "target": {"type": "Value", "value": 2},
        "authenticationRef": {"authenticationRef": {"name": "prom-auth"}, "authModes": "bearer"}}}
    pod_metric = {"type": "PodMetric", "podmetric": {
        "metric": {"backend": "opentelemetry", "query": "vllm:num_requests_running", "operationOverTime": "avg"},
        "target": {"type": "Value", "value": "3"}}}
    scaled = render(_manifest("keda", autoScaling={"metrics": [external, pod_metric]}))[2]
    _assert_valid_scaled_object(scaled)
    assert scaled["spec"]["triggers"] == [
        {"type": "prometheus", "metadata": {"serverAddress": "http://prom:9090", "query": "vllm:num_requests_waiting", "threshold": "2",
                                            "namespace": "ml", "authModes": "bearer"},
         "authenticationRef": {"name": "prom-auth"}},
        {"type": "external", "metadata": {
            "metricQuery": 'sum(vllm:num_requests_running{namespace="ml", deployment="iris-predictor"})',
            "targetValue": "3", "scalerAddress": "keda-otel-scaler.keda.svc:4318", "operationOverTime": "avg"}},
    ]


@pytest.mark.parametrize(
    ("predictor", "field"),
    [
        ({}, "spec.predictor.autoScaling.metrics is empty"),
        ({"scaleMetric": "cpu", "autoScaling": {"metrics": [CPU_50]}}, "spec.predictor.scaleMetric is not supported for KEDA"),
        ({"autoScaling": {"metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "AverageValue", "averageValue": "1"}}}]}},
         "spec.predictor.autoScaling.metrics[0].resource.target.type"),
        ({"autoScaling": {"metrics": [{"type": "External", "external": {"metric": {"backend": "prometheus"}, "target": {"value": 1}}}]}},
         "spec.predictor.autoScaling.metrics[0].external.metric.query"),
    ],
)
def test_keda_refuses_what_kserve_or_keda_refuse_naming_the_field(predictor, field):
    with pytest.raises(ReconcileError) as caught:
        render(_manifest("keda", **predictor))
    assert caught.value.reason == "InvalidAutoScalingSpec"
    assert field in caught.value.message


# --------------------------------------------------------------------------- policy


def test_hpa_policy_reads_bounds_metrics_and_kubernetes_default_behavior():
    objects = render(_manifest(minReplicas=2, maxReplicas=6, scaleTarget=50))
    policies = policies_by_deployment(objects)
    policy = policies[("ml", "iris-predictor")]
    assert (policy.source, policy.min_replicas, policy.max_replicas, policy.metric) == ("HorizontalPodAutoscaler", 2, 6, "cpu")
    assert policy.resource_metrics[0].utilization == 50
    assert policy.tolerance == 0.1 and policy.polling_interval_seconds is None
    assert policy.behavior.scale_down.stabilization_window_seconds == 300
    assert [(p.type, p.value, p.period_seconds) for p in policy.behavior.scale_up.policies] == [("Percent", 100, 15), ("Pods", 4, 15)]


def test_hpa_policy_keeps_a_written_behavior_and_average_values():
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x", "namespace": "ml"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}, "minReplicas": 1, "maxReplicas": 4,
                    "metrics": [MEMORY_512], "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}}}}
    policy = autoscaling_policy(hpa)
    assert policy.metrics == (MetricGoal("memory", "AverageValue", 512 * 2**20),)
    assert policy.behavior.scale_down.stabilization_window_seconds == 10


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"kind": "Deployment"}, "kind"),
        ({"kind": "HorizontalPodAutoscaler", "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "x"}}}, "spec.scaleTargetRef"),
        ({"kind": "HorizontalPodAutoscaler", "spec": {"scaleTargetRef": {"name": "x"}, "maxReplicas": 0}}, "spec.maxReplicas"),
        ({"kind": "HorizontalPodAutoscaler", "spec": {"scaleTargetRef": {"name": "x"}, "maxReplicas": 2,
                                                      "metrics": [{"type": "Pods", "pods": {}}]}}, "spec.metrics[0].type"),
        ({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
          "spec": {"scaleTargetRef": {"name": "x"}, "triggers": []}}, "spec.triggers"),
        ({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
          "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "kafka", "metadata": {}}]}}, "spec.triggers[0].type"),
        ({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
          "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "prometheus", "metadata": {"query": "q", "threshold": "lots"}}]}},
         "spec.triggers[0].metadata.threshold"),
    ],
)
def test_policy_errors_name_the_field(obj, field):
    with pytest.raises(PolicyError) as caught:
        autoscaling_policy(obj)
    assert caught.value.field == field
