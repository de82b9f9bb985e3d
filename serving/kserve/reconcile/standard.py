"""Standard (raw Kubernetes) deployment mode: a Deployment, a Service and an HPA per predictor.

Mirrors KServe's raw-mode reconciler plus its storage-initializer pod webhook (which we apply directly to
the pod template, since there is no webhook here):

- the pod's main container is the runtime's ``kserve-container`` strategically merged with the
  predictor's model container (args appended, env by name, resources per key), then the runtime's Go
  template placeholders (``{{.Name}}`` ...) rendered with the InferenceService's metadata;
- a model at a storage URI is fetched by the ``storage-initializer`` init container into the emptyDir
  ``kserve-provision-location`` mounted read-only at ``/mnt/models``; ``pvc://`` mounts the claim directly;
- the Service maps port 80 to the container port; the HPA scales between minReplicas and maxReplicas.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from serving.kserve import naming, template
from serving.kserve.reconcile import ReconcileError
from serving.kserve.reconcile.config import ReconcileConfig
from serving.kserve.runtimes import ResolvedRuntime
from serving.kserve.types import FRAMEWORK_SHORTCUTS, ISVC_API_VERSION, InferenceService

MODEL_DIR = "/mnt/models"
PROVISION_VOLUME = "kserve-provision-location"
PVC_VOLUME = "kserve-pvc-source"
STORAGE_INITIALIZER = "storage-initializer"
MAIN_CONTAINER = "kserve-container"
DEFAULT_HTTP_PORT = 8080
SERVICE_PORT = 80

TEMPLATE_HASH_ANNOTATION = "serving.kserve.io/template-hash"
STORAGE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
AUTOSCALER_CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
# Annotations never copied to children: they describe the parent object, not the workload.
_NOT_PROPAGATED = ("kubectl.kubernetes.io/last-applied-configuration",)

# ModelSpec keys that are not core/v1 Container fields.
_MODEL_ONLY_KEYS = ("modelFormat", "runtime", "storageUri", "runtimeVersion", "protocolVersion", "storage", "confidential")
# PredictorSpec keys that are not PodSpec fields (implementations and ComponentExtensionSpec).
_NON_POD_KEYS = frozenset(
    (
        "model",
        *FRAMEWORK_SHORTCUTS,
        "minReplicas",
        "maxReplicas",
        "scaleTarget",
        "scaleMetric",
        "scaleMetricType",
        "containerConcurrency",
        "timeout",
        "canaryTrafficPercent",
        "logger",
        "batcher",
        "labels",
        "annotations",
        "deploymentStrategy",
        "autoScaling",
        "workerSpec",
        "storageUris",
        "storageContainerName",
    )
)
# ServingRuntimeSpec keys that are not PodSpec fields.
_RUNTIME_NON_POD_KEYS = frozenset(
    ("supportedModelFormats", "protocolVersions", "multiModel", "disabled", "annotations", "labels", "workerSpec",
     "grpcEndpoint", "grpcDataEndpoint", "httpDataEndpoint", "replicas", "storageHelper", "builtInAdapter")
)
# Strategic-merge keys of the core/v1 lists we merge.
_MERGE_KEYS = {"env": "name", "volumeMounts": "mountPath", "ports": "containerPort", "volumes": "name",
               "imagePullSecrets": "name", "containers": "name", "initContainers": "name"}


def reconcile_standard(isvc: InferenceService, runtime: ResolvedRuntime | None, config: ReconcileConfig) -> list[dict[str, Any]]:
    """Desired ``apps/v1 Deployment``, ``v1 Service`` and (unless the autoscaler class is none/external)
    ``autoscaling/v2 HorizontalPodAutoscaler`` for the predictor."""
    isvc_dict = isvc.to_dict()
    predictor: dict[str, Any] = isvc_dict["spec"]["predictor"]
    name = naming.predictor_name(isvc.name)
    labels = {**(isvc.metadata.labels or {}), **naming.predictor_labels(isvc.name)}
    annotations = _propagated(isvc.annotations)

    pod_spec, pod_meta, main = _pod(isvc, isvc_dict, runtime, config)
    pod_labels = {**pod_meta["labels"], **(predictor.get("labels") or {}), **labels}
    pod_annotations = {**pod_meta["annotations"], **annotations, **(predictor.get("annotations") or {})}
    pod_template = {"metadata": {"labels": pod_labels, "annotations": pod_annotations}, "spec": pod_spec}
    if not pod_annotations:
        del pod_template["metadata"]["annotations"]

    autoscaler = isvc.annotations.get(AUTOSCALER_CLASS_ANNOTATION, "hpa")
    if autoscaler not in ("hpa", "none", "external"):
        raise ReconcileError("AutoscalerNotSupported", f"autoscaler class {autoscaler!r} is not supported; use hpa, none or external")
    min_replicas, max_replicas = _replica_bounds(predictor)

    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(isvc, name, labels, {**annotations, TEMPLATE_HASH_ANNOTATION: template_hash(pod_template)}),
        "spec": {
            "selector": {"matchLabels": naming.predictor_selector(isvc.name)},
            "template": pod_template,
        },
    }
    # With an HPA the replica count is the HPA's to set; writing it here would fight it on every apply.
    if autoscaler != "hpa":
        deployment["spec"]["replicas"] = min_replicas
    if predictor.get("deploymentStrategy"):
        deployment["spec"]["strategy"] = copy.deepcopy(predictor["deploymentStrategy"])

    port = main["ports"][0]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(isvc, name, labels, annotations),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.predictor_selector(isvc.name),
            "ports": [{"name": "http", "protocol": port.get("protocol", "TCP"), "port": SERVICE_PORT, "targetPort": port["containerPort"]}],
        },
    }
    objects = [deployment, service]
    if autoscaler == "hpa":
        objects.append(_hpa(isvc, name, labels, annotations, predictor, min_replicas, max_replicas, config))
    return objects


def template_hash(pod_template: dict[str, Any]) -> str:
    """A stable hash of a pod template: equal templates hash equal whatever the key order."""
    canonical = json.dumps(pod_template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- pod


def _pod(
    isvc: InferenceService, isvc_dict: dict[str, Any], runtime: ResolvedRuntime | None, config: ReconcileConfig
) -> tuple[dict[str, Any], dict[str, dict[str, str]], dict[str, Any]]:
    """The pod spec, the runtime's pod labels/annotations, and the main (serving) container."""
    predictor = isvc_dict["spec"]["predictor"]
    predictor_pod = {k: copy.deepcopy(v) for k, v in predictor.items() if k not in _NON_POD_KEYS}
    sidecars = predictor_pod.pop("containers", None) or []
    model = predictor.get("model")
    meta: dict[str, dict[str, str]] = {"labels": {}, "annotations": {}}

    if model is not None:
        if runtime is None:
            raise ReconcileError("NoSupportingRuntime", f"InferenceService {isvc.name!r} has a model but no runtime was resolved")
        runtime_spec = runtime.spec.to_dict()
        runtime_containers = runtime_spec.get("containers") or []
        if not runtime_containers:
            raise ReconcileError("InvalidRuntime", f"runtime {runtime.name!r} has no containers")
        base = next((c for c in runtime_containers if c.get("name") == MAIN_CONTAINER), runtime_containers[0])
        overrides = {k: v for k, v in model.items() if k not in _MODEL_ONLY_KEYS}
        main = _merge_container(base, overrides)
        main["name"] = MAIN_CONTAINER
        if model.get("runtimeVersion"):
            main["image"] = f"{_image_without_tag(main.get('image', ''))}:{model['runtimeVersion']}"
        runtime_sidecars = [c for c in runtime_containers if c is not base]
        containers = [main, *runtime_sidecars, *sidecars]
        runtime_pod = {k: v for k, v in runtime_spec.items() if k not in _RUNTIME_NON_POD_KEYS and k != "containers"}
        pod = _merge_maps(runtime_pod, predictor_pod)
        meta = {"labels": dict(runtime_spec.get("labels") or {}), "annotations": dict(runtime_spec.get("annotations") or {})}
        storage_uri = model.get("storageUri")
    else:
        if not sidecars:
            raise ReconcileError("InvalidPredictorSpec", "the predictor has neither a model nor containers")
        containers = sidecars
        pod = predictor_pod
        # KServe's custom predictor: the container named kserve-container, else the first one.
        main_name = MAIN_CONTAINER if any(c.get("name") == MAIN_CONTAINER for c in containers) else None
        if main_name is None:
            containers[0].setdefault("name", MAIN_CONTAINER)
            main_name = containers[0]["name"]
        storage_uri = _storage_uri_env(next(c for c in containers if c.get("name") == main_name))

    # KServe renders the runtime's Go template placeholders with the InferenceService's metadata.
    if model is not None:
        main_name = MAIN_CONTAINER
    data = template.object_meta_data(isvc_dict["metadata"])
    containers = [template.render_tree(c, data) for c in containers]
    main = next(c for c in containers if c.get("name") == main_name)
    if not main.get("resources"):
        main["resources"] = copy.deepcopy(config.default_resources)
    if not main.get("ports"):
        main["ports"] = [{"containerPort": DEFAULT_HTTP_PORT, "name": "http", "protocol": "TCP"}]
    _default_probe_ports(main)
    pod["containers"] = containers
    if storage_uri:
        _attach_storage(pod, main, storage_uri, config)
        meta["annotations"][STORAGE_URI_ANNOTATION] = storage_uri
    return pod, meta, main


def _default_probe_ports(container: dict[str, Any]) -> None:
    """A probe written without a port (valid for Knative, which fills it in) targets the serving port."""
    port = container["ports"][0]["containerPort"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        for action in ("httpGet", "tcpSocket", "grpc"):
            handler = (container.get(probe) or {}).get(action)
            if isinstance(handler, dict) and "port" not in handler:
                handler["port"] = port


def _storage_uri_env(container: dict[str, Any]) -> str | None:
    """A custom predictor asks for a model through the STORAGE_URI env var (KServe's CustomSpecStorageUriEnvVarKey)."""
    for env in container.get("env") or []:
        if env.get("name") == "STORAGE_URI" and env.get("value"):
            return env["value"]
    return None


def _attach_storage(pod: dict[str, Any], main: dict[str, Any], storage_uri: str, config: ReconcileConfig) -> None:
    mounts = main.setdefault("volumeMounts", [])
    volumes = pod.setdefault("volumes", [])
    if storage_uri.startswith("pvc://"):
        claim, _, sub_path = storage_uri[len("pvc://"):].partition("/")
        volumes.append({"name": PVC_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mount = {"name": PVC_VOLUME, "mountPath": MODEL_DIR, "readOnly": True}
        if sub_path:
            mount["subPath"] = sub_path
        mounts.append(mount)
        return
    volumes.append({"name": PROVISION_VOLUME, "emptyDir": {}})
    mounts.append({"name": PROVISION_VOLUME, "mountPath": MODEL_DIR, "readOnly": True})
    initializer = {
        "name": STORAGE_INITIALIZER,
        "image": config.storage_initializer_image,
        "args": [storage_uri, MODEL_DIR],
        "resources": copy.deepcopy(config.storage_initializer_resources),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": PROVISION_VOLUME, "mountPath": MODEL_DIR}],
    }
    pod["initContainers"] = [*(pod.get("initContainers") or []), initializer]


def _merge_container(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """KServe's MergeRuntimeContainers: strategic merge, except args are concatenated."""
    merged = _merge_maps(base, overrides)
    merged["args"] = [*(base.get("args") or []), *(overrides.get("args") or [])]
    if not merged["args"]:
        del merged["args"]
    return merged


def _merge_maps(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A strategic merge patch for the shapes we handle: maps merge recursively, lists with a known
    merge key merge by it (override wins per item), every other value is replaced."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _merge_maps(current, value)
        elif key in _MERGE_KEYS and isinstance(current, list) and isinstance(value, list):
            merged[key] = _merge_list(current, value, _MERGE_KEYS[key])
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_list(base: list[Any], overrides: list[Any], merge_key: str) -> list[Any]:
    result = [copy.deepcopy(item) for item in base]
    index = {item.get(merge_key): i for i, item in enumerate(result) if isinstance(item, dict)}
    for item in overrides:
        key = item.get(merge_key) if isinstance(item, dict) else None
        if key is not None and key in index:
            # A list item is replaced whole when it has no nested maps worth merging (env: value vs valueFrom).
            result[index[key]] = copy.deepcopy(item)
        else:
            result.append(copy.deepcopy(item))
    return result


def _image_without_tag(image: str) -> str:
    name, _, _ = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


# --------------------------------------------------------------------------- objects


def _propagated(annotations: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k not in _NOT_PROPAGATED}


def _metadata(isvc: InferenceService, name: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": isvc.namespace, "labels": dict(labels)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    # Kubernetes requires the owner's uid; an object not yet created (``odh render``) has none, and the
    # platform that creates it sets the reference.
    if isvc.metadata.uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": ISVC_API_VERSION,
                "kind": "InferenceService",
                "name": isvc.name,
                "uid": isvc.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return metadata


def _replica_bounds(predictor: dict[str, Any]) -> tuple[int, int]:
    """KServe's HPA bounds: minReplicas defaults to 1 (an HPA cannot go below 1), and maxReplicas below
    minReplicas (or unset) becomes minReplicas."""
    minimum = predictor.get("minReplicas")
    minimum = 1 if minimum is None or minimum < 1 else minimum
    maximum = predictor.get("maxReplicas") or 0
    return minimum, max(maximum, minimum)


def _hpa(
    isvc: InferenceService,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    predictor: dict[str, Any],
    min_replicas: int,
    max_replicas: int,
    config: ReconcileConfig,
) -> dict[str, Any]:
    metric = predictor.get("scaleMetric") or "cpu"
    target = predictor.get("scaleTarget")
    if metric == "memory" and target:
        # KServe reads a memory scaleTarget as MiB per pod.
        goal: dict[str, Any] = {"type": "AverageValue", "averageValue": f"{target}Mi"}
    elif metric in ("cpu", "memory"):
        goal = {"type": "Utilization", "averageUtilization": target or config.default_cpu_utilization}
    else:
        raise ReconcileError("InvalidScaleMetric", f"scaleMetric {metric!r} needs Knative; the HPA scales on cpu or memory")
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(isvc, name, labels, annotations),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": metric, "target": goal}}],
        },
    }
