"""Policies that turn a registered model into an InferenceService: the "configure" phase, pure.

ODH's model controller applies platform policies (resources, autoscaling, networking) to what a data
scientist asks for. Here the policy is a small dataclass with KServe-shaped defaults; the output is a
plain InferenceService manifest that works with upstream KServe as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

MODEL_FORMATS = ("sklearn", "mlflow")
# Served as an LLMInferenceService (vLLM engines behind the LLM-D router), not an InferenceService.
LLM_FORMATS = ("huggingface",)
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
AUTOSCALER_CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
# The embedded gateway's counters (serving/kserve/reconcile/keda.py reads the same names).
GATEWAY_RPS_METRIC = "odh_gateway_requests_total"
GATEWAY_CONCURRENCY_METRIC = "odh_gateway_in_flight"
MODEL_NAME_LABEL = "odh.serving/registered-model"
MODEL_VERSION_LABEL = "odh.serving/model-version"


@dataclass(frozen=True)
class ServingPolicy:
    """Defaults a platform team sets once; every field maps to an InferenceService field."""

    deployment_mode: str = "Standard"
    min_replicas: int = 1
    max_replicas: int = 1
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "2Gi"})
    limits: dict[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "2Gi"})
    scale_metric: str | None = None
    scale_target: int | None = None
    # LLMs only: extra vLLM flags and environment for every engine (e.g. --max-model-len, VLLM_CPU_KVCACHE_SPACE).
    engine_args: tuple[str, ...] = ()
    engine_env: dict[str, str] = field(default_factory=dict)
    # Written as they are on metadata (networking, Knative autoscaling, the lifecycle policy).
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # serving.kserve.io/autoscalerClass (Standard mode): hpa | keda | none; None writes nothing (KServe's hpa).
    autoscaler_class: str | None = None
    # KEDA: what spec.predictor.autoScaling.metrics scales on (scale_target per replica), and where it is read.
    keda_metric: Literal["rps", "concurrency", "cpu", "memory", "custom"] | None = None
    keda_query: str | None = None
    metrics_server: str | None = None
    scale_down_window: int | None = None  # autoScaling.behavior.scaleDown.stabilizationWindowSeconds
    kubernetes_metrics: bool = False  # request metrics from the mesh (Istio) instead of the embedded gateway
    model_args: tuple[str, ...] = ()  # extra args of the model container (the vLLM backend of the HF runtime)
    # LLMs: engine resources from requests/limits, spec.parallelism, spec.scaling, a worker per extra node.
    engine_resources: bool = False
    parallelism: dict[str, int] = field(default_factory=dict)
    engine_scaling: dict[str, Any] | None = None
    multi_node: bool = False


def inference_service(
    name: str,
    storage_uri: str,
    model_format: str,
    *,
    namespace: str = "default",
    protocol_version: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    policy: ServingPolicy | None = None,
) -> dict[str, Any]:
    """The InferenceService manifest for one model version under ``policy``."""
    policy = policy or ServingPolicy()
    if model_format not in MODEL_FORMATS + LLM_FORMATS:
        raise ValueError(f"model format {model_format!r} is not supported yet: use one of "
                         f"{', '.join(MODEL_FORMATS + LLM_FORMATS)}")
    model: dict[str, Any] = {
        "modelFormat": {"name": model_format},
        "storageUri": storage_uri,
        "resources": {"requests": dict(policy.requests), "limits": dict(policy.limits)},
    }
    if protocol_version or model_format == "mlflow":
        model["protocolVersion"] = protocol_version or "v2"
    if policy.model_args:
        model["args"] = list(policy.model_args)
    predictor: dict[str, Any] = {"model": model, "minReplicas": policy.min_replicas, "maxReplicas": policy.max_replicas}
    annotations = {**policy.annotations, DEPLOYMENT_MODE_ANNOTATION: policy.deployment_mode}
    if policy.autoscaler_class:
        annotations[AUTOSCALER_CLASS_ANNOTATION] = policy.autoscaler_class
    if policy.keda_metric:
        predictor["autoScaling"] = _keda_autoscaling(policy, namespace, name)
    else:
        if policy.scale_metric:
            predictor["scaleMetric"] = policy.scale_metric
        if policy.scale_target:
            predictor["scaleTarget"] = policy.scale_target
    labels = {**policy.labels, **_version_labels(model_name, model_version)}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {"predictor": predictor},
    }


def _keda_autoscaling(policy: ServingPolicy, namespace: str, name: str) -> dict[str, Any]:
    """``spec.predictor.autoScaling`` for KServe's KEDA autoscaler class (serving/kserve/reconcile/keda.py)."""
    metric = policy.keda_metric
    target = policy.scale_target or 1
    entry: dict[str, Any]
    if metric in ("cpu", "memory"):
        entry = {"type": "Resource", "resource": {"name": metric, "target": {"type": "Utilization",
                                                                            "averageUtilization": target}}}
    else:
        if metric == "custom":
            query = policy.keda_query or ""
        else:
            query = request_metric_query(metric, namespace, name, kubernetes=policy.kubernetes_metrics)  # type: ignore[arg-type]
        entry = {"type": "External", "external": {
            "metric": {"backend": "prometheus", "serverAddress": policy.metrics_server or "", "query": query},
            "target": {"type": "Value", "value": str(target)}}}
    autoscaling: dict[str, Any] = {"metrics": [entry]}
    if policy.scale_down_window is not None:
        autoscaling["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": policy.scale_down_window}}
    return autoscaling


def request_metric_query(metric: Literal["rps", "concurrency"], namespace: str, name: str, *, kubernetes: bool) -> str:
    """A PromQL query for the request rate or concurrency of ``namespace/name``: the embedded gateway's
    counters (what keda.py's ``gateway_metric`` writes), or on Kubernetes Istio's, in front of the predictor."""
    if kubernetes:
        service = f'destination_service_namespace="{namespace}",destination_service_name="{name}-predictor"'
        return (f"sum(rate(istio_requests_total{{{service}}}[1m]))" if metric == "rps"
                else f"sum(istio_requests_in_flight{{{service}}})")
    route = f'route="{namespace}/{name}"'
    return (f"sum(rate({GATEWAY_RPS_METRIC}{{{route}}}[1m]))" if metric == "rps"
            else f"sum({GATEWAY_CONCURRENCY_METRIC}{{{route}}})")


def is_llm_format(model_format: str) -> bool:
    return model_format in LLM_FORMATS


def llm_inference_service(
    name: str,
    storage_uri: str,
    *,
    namespace: str = "default",
    served_model_name: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    policy: ServingPolicy | None = None,
) -> dict[str, Any]:
    """The LLMInferenceService manifest for one LLM version: ``min_replicas`` engines behind the router."""
    policy = policy or ServingPolicy()
    spec: dict[str, Any] = {
        "model": {"uri": storage_uri, "name": served_model_name or name},
        "replicas": policy.min_replicas,
    }
    resources = {"requests": dict(policy.requests), "limits": dict(policy.limits)}
    if policy.engine_args or policy.engine_env or policy.engine_resources:
        main: dict[str, Any] = {"name": "main"}
        if policy.engine_args:
            main["args"] = list(policy.engine_args)
        if policy.engine_env:
            main["env"] = [{"name": k, "value": v} for k, v in sorted(policy.engine_env.items())]
        if policy.engine_resources:
            main["resources"] = resources
        spec["template"] = {"containers": [main]}
    if policy.parallelism:
        spec["parallelism"] = dict(policy.parallelism)
    if policy.engine_scaling:
        spec["scaling"] = dict(policy.engine_scaling)
    if policy.multi_node:
        # The other nodes of a pipeline-parallel engine run the same container with the same accelerators.
        spec["worker"] = {"containers": [{"name": "main", "resources": resources}]}
    labels = {**policy.labels, **_version_labels(model_name, model_version)}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if policy.annotations:
        metadata["annotations"] = dict(policy.annotations)
    return {
        "apiVersion": "serving.kserve.io/v1alpha2",
        "kind": "LLMInferenceService",
        "metadata": metadata,
        "spec": spec,
    }


def _version_labels(model_name: str | None, model_version: str | None) -> dict[str, str]:
    """The registry name and version a deployment serves, as labels (only those known)."""
    labels = {}
    if model_name:
        labels[MODEL_NAME_LABEL] = model_name
    if model_version:
        labels[MODEL_VERSION_LABEL] = model_version
    return labels


def detect_format(files: list[str]) -> str:
    """Guess the model format from the file names of a model directory."""
    names = {f.rsplit("/", 1)[-1] for f in files}
    if "MLmodel" in names:
        return "mlflow"
    if any(n.endswith((".joblib", ".pkl", ".pickle")) for n in names):
        return "sklearn"
    # A Hugging Face model directory: a config plus weights (what vLLM loads).
    if "config.json" in names and any(n.endswith(".safetensors") or n == "pytorch_model.bin" for n in names):
        return "huggingface"
    raise ValueError(f"cannot tell the model format from {sorted(names)}: pass --format sklearn|mlflow|huggingface")
