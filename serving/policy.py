"""Policies that turn a registered model into an InferenceService: the "configure" phase, pure.

ODH's model controller applies platform policies (resources, autoscaling, networking) to what a data
scientist asks for. Here the policy is a small dataclass with KServe-shaped defaults; the output is a
plain InferenceService manifest that works with upstream KServe as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODEL_FORMATS = ("sklearn", "mlflow")
# Served as an LLMInferenceService (vLLM engines behind the LLM-D router), not an InferenceService.
LLM_FORMATS = ("huggingface",)
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
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
    if model_format not in MODEL_FORMATS:
        raise ValueError(f"model format {model_format!r} is not supported yet: use one of {', '.join(MODEL_FORMATS)}")
    model: dict[str, Any] = {
        "modelFormat": {"name": model_format},
        "storageUri": storage_uri,
        "resources": {"requests": dict(policy.requests), "limits": dict(policy.limits)},
    }
    if protocol_version or model_format == "mlflow":
        model["protocolVersion"] = protocol_version or "v2"
    predictor: dict[str, Any] = {"model": model, "minReplicas": policy.min_replicas, "maxReplicas": policy.max_replicas}
    if policy.scale_metric:
        predictor["scaleMetric"] = policy.scale_metric
    if policy.scale_target:
        predictor["scaleTarget"] = policy.scale_target
    labels = _version_labels(model_name, model_version)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {DEPLOYMENT_MODE_ANNOTATION: policy.deployment_mode},
        },
        "spec": {"predictor": predictor},
    }


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
    if policy.engine_args or policy.engine_env:
        main: dict[str, Any] = {"name": "main"}
        if policy.engine_args:
            main["args"] = list(policy.engine_args)
        if policy.engine_env:
            main["env"] = [{"name": k, "value": v} for k, v in sorted(policy.engine_env.items())]
        spec["template"] = {"containers": [main]}
    labels = _version_labels(model_name, model_version)
    return {
        "apiVersion": "serving.kserve.io/v1alpha2",
        "kind": "LLMInferenceService",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
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
