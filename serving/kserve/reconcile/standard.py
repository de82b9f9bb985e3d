"""Standard (raw Kubernetes) deployment mode: a Deployment, a Service and an autoscaler per predictor.

Mirrors KServe's raw-mode reconciler plus its storage-initializer pod webhook (which we apply directly to
the pod template, since there is no webhook here):

- the pod's main container is the runtime's ``kserve-container`` strategically merged with the
  predictor's model container (args appended, env by name, resources per key), then the runtime's Go
  template placeholders (``{{.Name}}`` ...) rendered with the InferenceService's metadata;
- a model at a storage URI is fetched by the ``storage-initializer`` init container into the emptyDir
  ``kserve-provision-location`` mounted read-only at ``/mnt/models``; ``pvc://`` mounts the claim directly;
- the Service maps port 80 to the container port;
- ``serving.kserve.io/autoscalerClass`` (reconcilers/autoscaler ``createAutoscaler``): ``hpa`` (default)
  renders an HPA (``hpa.py``), ``keda`` a ScaledObject (``keda.py``), ``none`` and ``external`` no
  autoscaler; only ``none`` writes ``spec.replicas`` (= minReplicas, when set), as KServe's
  ``createRawDefaultDeployment`` does;
- each ``spec.canary[]`` entry is one more Deployment/Service/autoscaler (``canary.py``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from serving.kserve import naming, template
from serving.kserve.reconcile import ReconcileError
from serving.kserve.reconcile.canary import (
    TRAFFIC_WEIGHT_ANNOTATION,
    canaries,
    canary_predictor,
    predictor_object_name,
    stable_min_replicas,
    traffic_weights,
    validate_canaries,
)
from serving.kserve.reconcile.config import ReconcileConfig
from serving.kserve.reconcile.hpa import render_hpa
from serving.kserve.reconcile.keda import render_scaled_object
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
# KServe's AutoscalerAllowedClassList (kpa is Knative's and not allowed in Standard mode).
AUTOSCALER_CLASSES = ("hpa", "external", "keda", "none")
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
        "name",
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


def reconcile_standard(
    isvc: InferenceService,
    runtime: ResolvedRuntime | None,
    config: ReconcileConfig,
    canary_runtimes: Mapping[str, ResolvedRuntime] | None = None,
) -> list[dict[str, Any]]:
    """Desired ``apps/v1 Deployment``, ``v1 Service`` and autoscaler (per the autoscaler class) for the
    predictor, then the same for each ``spec.canary[]`` entry (see ``canary.py``).

    ``canary_runtimes`` maps a canary's ``predictor.name`` to its runtime; a canary serving the stable
    predictor's model format (and runtime/protocol) reuses ``runtime``.
    """
    isvc_dict = isvc.to_dict()
    validate_canaries(isvc_dict)
    autoscaler = autoscaler_class(isvc.annotations)
    stable = dict(isvc_dict["spec"]["predictor"])
    entries = canaries(isvc_dict)
    if entries and stable.get("minReplicas") is not None:
        stable["minReplicas"] = stable_min_replicas(isvc_dict)
    weights = traffic_weights(isvc_dict)
    objects = _variant(isvc, isvc_dict, stable, runtime, config, autoscaler, weights, stable)
    for index, entry in enumerate(entries):
        predictor = canary_predictor(isvc_dict["spec"]["predictor"], entry)
        variant_runtime = _canary_runtime(index, entry, predictor, isvc_dict["spec"]["predictor"], runtime, canary_runtimes)
        fixed = {"minReplicas": predictor["minReplicas"]}  # KServe's canary ComponentExtensionSpec
        objects += _variant(isvc, isvc_dict, predictor, variant_runtime, config, autoscaler, weights, fixed, canary=True)
    return objects


def autoscaler_class(annotations: Mapping[str, str]) -> str:
    """The ``serving.kserve.io/autoscalerClass`` annotation (default hpa), checked against KServe's
    AutoscalerAllowedClassList."""
    value = annotations.get(AUTOSCALER_CLASS_ANNOTATION, "hpa")
    if value not in AUTOSCALER_CLASSES:
        raise ReconcileError(
            "AutoscalerNotSupported",
            f"metadata.annotations[{AUTOSCALER_CLASS_ANNOTATION}] is {value!r}; use one of {', '.join(AUTOSCALER_CLASSES)}",
        )
    return value


def canary_inference_service(isvc: InferenceService, canary_name: str) -> InferenceService:
    """The InferenceService a canary is rendered as (the stable one with the canary's predictor merged
    over it): resolve its runtime with ``resolve_runtime`` and pass it in ``canary_runtimes``."""
    isvc_dict = isvc.to_dict()
    for entry in canaries(isvc_dict):
        if entry["predictor"].get("name") == canary_name:
            predictor = canary_predictor(isvc_dict["spec"]["predictor"], entry)
            return InferenceService.model_validate({**isvc_dict, "spec": {**isvc_dict["spec"], "predictor": predictor}})
    raise ReconcileError("InvalidCanarySpec", f"spec.canary has no predictor named {canary_name!r}")


def _canary_runtime(
    index: int,
    entry: dict[str, Any],
    predictor: dict[str, Any],
    stable: dict[str, Any],
    runtime: ResolvedRuntime | None,
    canary_runtimes: Mapping[str, ResolvedRuntime] | None,
) -> ResolvedRuntime | None:
    name = entry["predictor"]["name"]
    if canary_runtimes and name in canary_runtimes:
        return canary_runtimes[name]
    model, stable_model = predictor.get("model") or {}, stable.get("model") or {}
    same = all(model.get(k) == stable_model.get(k) for k in ("modelFormat", "runtime", "protocolVersion"))
    if same or not model:
        return runtime
    raise ReconcileError(
        "NoSupportingRuntime",
        f"spec.canary[{index}] ({name}) serves {model.get('modelFormat')} unlike the stable predictor: resolve its "
        "runtime (canary_inference_service + resolve_runtime) and pass it in canary_runtimes",
    )


def _variant(
    isvc: InferenceService,
    isvc_dict: dict[str, Any],
    predictor: dict[str, Any],
    runtime: ResolvedRuntime | None,
    config: ReconcileConfig,
    autoscaler: str,
    weights: Mapping[str, int],
    scaling: dict[str, Any],
    canary: bool = False,
) -> list[dict[str, Any]]:
    """One predictor variant's Deployment, Service and autoscaler. ``scaling`` holds the
    ComponentExtensionSpec fields the autoscaler reads (a canary's is only its fixed minReplicas)."""
    name = predictor_object_name(isvc.name, predictor.get("name"))
    selector = {naming.APP_LABEL: f"isvc.{name}"}
    labels = {**(isvc.metadata.labels or {}), naming.ISVC_LABEL: isvc.name, naming.COMPONENT_LABEL: naming.PREDICTOR, **selector}
    annotations = _propagated(isvc.annotations)
    variant_dict = {**isvc_dict, "spec": {**isvc_dict["spec"], "predictor": predictor}}

    pod_spec, pod_meta, main = _pod(isvc, variant_dict, runtime, config)
    pod_labels = {**pod_meta["labels"], **(predictor.get("labels") or {}), **labels}
    pod_annotations = {**pod_meta["annotations"], **annotations, **(predictor.get("annotations") or {})}
    pod_template = {"metadata": {"labels": pod_labels, "annotations": pod_annotations}, "spec": pod_spec}
    if not pod_annotations:
        del pod_template["metadata"]["annotations"]

    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(isvc, name, labels, {**annotations, TEMPLATE_HASH_ANNOTATION: template_hash(pod_template)}),
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            "template": pod_template,
        },
    }
    # KServe's createRawDefaultDeployment writes replicas only for the none class; otherwise the count
    # belongs to the autoscaler (hpa, keda) or to whoever runs it (external), and writing it here would
    # fight them on every apply. A KEDA canary is the exception, see _autoscaler.
    fixed_keda_canary = canary and autoscaler == "keda"
    if (autoscaler == "none" or fixed_keda_canary) and scaling.get("minReplicas") is not None:
        deployment["spec"]["replicas"] = int(scaling["minReplicas"])
    if predictor.get("deploymentStrategy"):
        deployment["spec"]["strategy"] = copy.deepcopy(predictor["deploymentStrategy"])

    port = main["ports"][0]
    service_annotations = dict(annotations)
    if name in weights:
        service_annotations[TRAFFIC_WEIGHT_ANNOTATION] = str(weights[name])
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(isvc, name, labels, service_annotations),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "http", "protocol": port.get("protocol", "TCP"), "port": SERVICE_PORT, "targetPort": port["containerPort"]}],
        },
    }
    objects = [deployment, service]
    path = f"spec.canary[{predictor.get('name')}].predictor" if canary else "spec.predictor"
    if autoscaler == "hpa":
        objects.append(render_hpa(_metadata(isvc, name, labels, annotations), scaling, config.default_cpu_utilization, path))
    elif autoscaler == "keda" and not canary:
        # A canary's ScaledObject would have no triggers (KServe gives it none), which KEDA refuses:
        # the canary runs its fixed replicas on the Deployment instead.
        objects.append(render_scaled_object(_metadata(isvc, name, labels, annotations), scaling, config, path))
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
