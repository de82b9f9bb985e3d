"""Standard-mode reconcile: the Deployment, Service and HPA KServe's raw mode would create."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
from schemas import sample_files

from serving.kserve import (
    ReconcileConfig,
    ReconcileError,
    admit_inference_service,
    admit_serving_runtime,
    load_runtimes,
    reconcile,
    render,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kserve"
# kubernetes-validate's newest bundled schemas are 1.37; 1.30 is the oldest we promise to target.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())


def _manifest(predictor=None, **metadata):
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "ml", **metadata},
        "spec": {"predictor": predictor or {"sklearn": {"storageUri": "s3://models/iris"}}},
    }


def _objects(manifest, config=None):
    return {obj["kind"]: obj for obj in render(manifest, config=config)}


def _main(deployment):
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "kserve-container")


def test_renders_deployment_service_and_hpa_named_and_labelled_like_kserve():
    objects = render(_manifest(uid="1234-abcd", labels={"team": "a"}))
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    labels = {"serving.kserve.io/inferenceservice": "iris", "component": "predictor", "app": "isvc.iris-predictor", "team": "a"}
    for obj in objects:
        assert obj["metadata"]["name"] == "iris-predictor" and obj["metadata"]["namespace"] == "ml"
        assert obj["metadata"]["labels"] == labels
        assert obj["metadata"]["ownerReferences"] == [
            {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "iris", "uid": "1234-abcd",
             "controller": True, "blockOwnerDeletion": True}
        ]
    deployment, service, hpa = objects
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "isvc.iris-predictor"}
    assert service["spec"]["selector"] == {"app": "isvc.iris-predictor"}
    assert service["spec"]["ports"] == [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris-predictor"}


def test_no_owner_reference_before_the_object_has_a_uid():
    assert all("ownerReferences" not in o["metadata"] for o in render(_manifest()))


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "predictor",
    [
        {"sklearn": {"storageUri": "s3://models/iris"}, "minReplicas": 2, "maxReplicas": 5, "scaleTarget": 60},
        {"model": {"modelFormat": {"name": "mlflow", "version": "2"}, "protocolVersion": "v2", "storageUri": "models:/iris@prod"},
         "scaleMetric": "memory", "scaleTarget": 70, "serviceAccountName": "sa", "nodeSelector": {"pool": "cpu"}},
        {"sklearn": {"storageUri": "pvc://claim/models/iris"}},
        {"containers": [{"name": "kserve-container", "image": "me/custom:1", "env": [{"name": "STORAGE_URI", "value": "gs://b/m"}]}]},
    ],
    ids=["sklearn", "mlflow-memory", "pvc", "custom"],
)
def test_rendered_objects_validate_against_kubernetes_schemas(predictor, version):
    for obj in render(_manifest(predictor, uid="u-1")):
        kubernetes_validate.validate(obj, version, strict=True)


def test_pod_template_merges_runtime_and_model_like_kserve():
    predictor = {
        "sklearn": {
            "storageUri": "gs://b/iris",
            "args": ["--workers=2", "--ns={{.Namespace}}"],
            "env": [{"name": "A", "value": "model"}, {"name": "B", "value": "new"}],
            "resources": {"limits": {"cpu": "2"}},
        }
    }
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "rt", "namespace": "ml"},
        "spec": {
            "supportedModelFormats": [{"name": "sklearn", "autoSelect": True}],
            "annotations": {"prometheus.kserve.io/port": "8080"},
            "nodeSelector": {"pool": "cpu"},
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "server:1",
                    "args": ["--model_name={{.Name}}", "--label={{.Labels.team}}", "--ann={{index .Annotations \"x.io/y\"}}"],
                    "env": [{"name": "A", "value": "runtime"}, {"name": "KEEP", "value": "1"}],
                    "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                    "ports": [{"containerPort": 9000, "protocol": "TCP"}],
                }
            ],
        },
    }
    manifest = _manifest(predictor, labels={"team": "a"}, annotations={"x.io/y": "z"})
    deployment, service, _ = render(manifest, load_runtimes_from([runtime]))
    main = _main(deployment)
    assert main["args"] == ["--model_name=iris", "--label=a", "--ann=z", "--workers=2", "--ns=ml"]
    assert main["env"] == [{"name": "A", "value": "model"}, {"name": "KEEP", "value": "1"}, {"name": "B", "value": "new"}]
    assert main["resources"] == {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "1Gi"}}
    pod = deployment["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {"pool": "cpu"}
    assert pod["metadata"]["annotations"]["prometheus.kserve.io/port"] == "8080"
    assert service["spec"]["ports"][0]["targetPort"] == 9000


def load_runtimes_from(docs):
    return [admit_serving_runtime(doc) for doc in docs]


def test_storage_initializer_fetches_into_a_read_only_empty_dir():
    config = ReconcileConfig(storage_initializer_image="odh/storage-initializer:0.1")
    deployment = _objects(_manifest(), config)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["initContainers"] == [
        {
            "name": "storage-initializer",
            "image": "odh/storage-initializer:0.1",
            "args": ["s3://models/iris", "/mnt/models"],
            "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models"}],
        }
    ]
    assert pod["volumes"] == [{"name": "kserve-provision-location", "emptyDir": {}}]
    assert {"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True} in _main(deployment)["volumeMounts"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["internal.serving.kserve.io/storage-initializer-sourceuri"] == "s3://models/iris"


def test_pvc_models_are_mounted_directly():
    deployment = _objects(_manifest({"sklearn": {"storageUri": "pvc://claim/models/iris"}}))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["volumes"] == [{"name": "kserve-pvc-source", "persistentVolumeClaim": {"claimName": "claim", "readOnly": True}}]
    assert _main(deployment)["volumeMounts"] == [
        {"name": "kserve-pvc-source", "mountPath": "/mnt/models", "readOnly": True, "subPath": "models/iris"}
    ]


@pytest.mark.parametrize(
    ("extension", "bounds", "metric"),
    [
        ({}, (1, 1), {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}),
        ({"minReplicas": 0}, (1, 1), {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}),
        ({"minReplicas": 3}, (3, 3), {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}),
        ({"minReplicas": 2, "maxReplicas": 6, "scaleTarget": 50}, (2, 6),
         {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}),
        # KServe's getHPAMetrics: a memory scaleTarget is a utilization percentage, like cpu's.
        ({"scaleMetric": "memory", "scaleTarget": 60}, (1, 1),
         {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 60}}),
    ],
)
def test_hpa_bounds_and_metric(extension, bounds, metric):
    hpa = _objects(_manifest({"sklearn": {"storageUri": "gs://b/m"}, **extension}))["HorizontalPodAutoscaler"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == bounds
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": metric}]


def test_without_hpa_the_deployment_carries_the_replicas():
    manifest = _manifest({"sklearn": {"storageUri": "gs://b/m"}, "minReplicas": 2},
                         annotations={"serving.kserve.io/autoscalerClass": "none"})
    objects = _objects(manifest)
    assert "HorizontalPodAutoscaler" not in objects
    assert objects["Deployment"]["spec"]["replicas"] == 2
    assert "replicas" not in _objects(_manifest())["Deployment"]["spec"]


def test_template_hash_is_stable_and_follows_the_pod_template():
    def hash_of(manifest):
        return _objects(manifest)["Deployment"]["metadata"]["annotations"]["serving.kserve.io/template-hash"]

    first = hash_of(_manifest())
    assert first == hash_of(_manifest()) and len(first) == 16
    assert hash_of(_manifest({"sklearn": {"storageUri": "s3://models/iris-v2"}})) != first
    # Scaling bounds live on the HPA, not the pod template: no rollout.
    assert hash_of(_manifest({"sklearn": {"storageUri": "s3://models/iris"}, "maxReplicas": 4})) == first


def test_default_resources_apply_to_a_custom_container_without_any():
    objects = _objects(_manifest({"containers": [{"name": "custom", "image": "me/x:1"}]}))
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "custom"
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    assert container["ports"] == [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]


def test_runtime_version_replaces_the_image_tag():
    deployment = _objects(_manifest({"sklearn": {"storageUri": "gs://b/m", "runtimeVersion": "0.2.0"}}))["Deployment"]
    assert _main(deployment)["image"] == "odh-serving/modelserver:0.2.0"


def test_model_mesh_is_not_supported():
    isvc = admit_inference_service(_manifest(annotations={"serving.kserve.io/deploymentMode": "ModelMesh"}))
    runtime = None  # ModelMesh keeps the framework shortcut: there is no model to resolve
    with pytest.raises(ReconcileError) as caught:
        reconcile(isvc, runtime, ReconcileConfig())
    assert caught.value.reason == "DeploymentModeNotSupported"


def test_config_loads_from_the_upstream_configmap():
    config = ReconcileConfig.from_file(FIXTURES / "inferenceservice-config.yaml")
    assert config.storage_initializer_image == "kserve/storage-initializer:latest"
    assert config.storage_initializer_resources == {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    assert config.default_resources == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    assert config.ingress_domain == "example.com"
    assert config.default_deployment_mode == "Serverless"  # upstream's default; ours is Standard
    assert ReconcileConfig.from_file(FIXTURES / "inferenceservice-config.yaml", ingress_domain="local").ingress_domain == "local"


def test_upstream_runtimes_render_for_every_standard_sample():
    """Every admitted framework sample renders against KServe's own runtimes into valid objects."""
    runtimes = load_runtimes(FIXTURES / "runtimes")
    rendered = 0
    for path, docs in sample_files("v1beta1__*.yaml"):
        for doc in docs or []:
            doc.setdefault("metadata", {}).setdefault("annotations", {})["serving.kserve.io/deploymentMode"] = "Standard"
            try:
                objects = render(doc, runtimes)
            except Exception as exc:
                reason = getattr(exc, "reason", None)
                assert reason in {"NoSupportingRuntime", "DeploymentModeNotSupported"} or "ModelMesh" in str(exc), (path.name, exc)
                continue
            for obj in objects:
                kubernetes_validate.validate(obj, "1.30.0", strict=True)
            rendered += 1
    assert rendered > 40
