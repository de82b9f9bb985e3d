"""Controller settings the reconcilers read, loadable from KServe's ``inferenceservice-config`` ConfigMap."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

# KServe's shipped defaults (config/configmap/inferenceservice.yaml).
_STORAGE_INITIALIZER_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "100Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}
# KServe's constants.ServiceAnnotationDisallowedList: isvc annotations never copied onto a Knative
# revision template (KServe sets min/max scale and the storage URI itself).
DEFAULT_SERVICE_ANNOTATION_DISALLOWED: tuple[str, ...] = (
    "autoscaling.knative.dev/min-scale",
    "autoscaling.knative.dev/max-scale",
    "internal.serving.kserve.io/storage-initializer-sourceuri",
    "kubectl.kubernetes.io/last-applied-configuration",
    "modelFormat",
)
_DEFAULT_RESOURCES = {
    "requests": {"cpu": "1", "memory": "2Gi"},
    "limits": {"cpu": "1", "memory": "2Gi"},
}


@dataclass(frozen=True)
class ReconcileConfig:
    storage_initializer_image: str = "kserve/storage-initializer:latest"
    storage_initializer_resources: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(_STORAGE_INITIALIZER_RESOURCES)))
    # Applied to the predictor container when neither the runtime nor the InferenceService sets resources.
    default_resources: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(_DEFAULT_RESOURCES)))
    ingress_domain: str = "example.com"
    domain_template: str = "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
    url_scheme: str = "http"
    default_deployment_mode: str = "Standard"
    # KServe's DefaultCPUUtilization for the HPA when no scaleTarget is given.
    default_cpu_utilization: int = 80
    # Serverless: annotations and template labels KServe keeps off the Knative Service's revisions
    # (inferenceService.serviceAnnotationDisallowedList / serviceLabelDisallowedList add to these).
    service_annotation_disallowed: tuple[str, ...] = DEFAULT_SERVICE_ANNOTATION_DISALLOWED
    service_label_disallowed: tuple[str, ...] = ()
    # KEDA ScaledObjects (the ConfigMap's ``autoscaler`` and ``opentelemetryCollector`` entries, shipped
    # values); a window of None renders no behavior for that direction.
    scale_up_stabilization_window_seconds: int | None = 0
    scale_down_stabilization_window_seconds: int | None = 300
    otel_metric_scaler_endpoint: str = "keda-otel-scaler.keda.svc:4318"

    @classmethod
    def from_configmap(cls, configmap: dict[str, Any], **overrides: Any) -> ReconcileConfig:
        """Read the entries we use from the ConfigMap's JSON values; missing entries keep the defaults."""
        data = configmap.get("data") or {}
        config = cls()
        values: dict[str, Any] = {}

        storage = _json_entry(data, "storageInitializer")
        if storage.get("image"):
            values["storage_initializer_image"] = storage["image"]
        resources = _resources(storage)
        if resources:
            values["storage_initializer_resources"] = resources

        isvc = _json_entry(data, "inferenceService")
        resources = _resources(isvc.get("resource") or {})
        if resources:
            values["default_resources"] = resources
        # KServe appends the configured lists to its defaults.
        for key, attr, base in (("serviceAnnotationDisallowedList", "service_annotation_disallowed", DEFAULT_SERVICE_ANNOTATION_DISALLOWED),
                                ("serviceLabelDisallowedList", "service_label_disallowed", ())):
            extra = isvc.get(key)
            if isinstance(extra, list):
                values[attr] = (*base, *(str(item) for item in extra if str(item) not in base))

        ingress = _json_entry(data, "ingress")
        for key, attr in (("ingressDomain", "ingress_domain"), ("domainTemplate", "domain_template"), ("urlScheme", "url_scheme")):
            if ingress.get(key):
                values[attr] = ingress[key]

        deploy = _json_entry(data, "deploy")
        if deploy.get("defaultDeploymentMode"):
            values["default_deployment_mode"] = deploy["defaultDeploymentMode"]
        values.update(_autoscaler_values(data))
        return replace(config, **{**values, **overrides})

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> ReconcileConfig:
        with Path(path).open() as handle:
            return cls.from_configmap(yaml.safe_load(handle) or {}, **overrides)


def _json_entry(data: dict[str, Any], key: str) -> dict[str, Any]:
    raw = data.get(key)
    if not raw:
        return {}
    value = json.loads(raw) if isinstance(raw, str) else raw
    return value if isinstance(value, dict) else {}


def _autoscaler_values(data: dict[str, Any]) -> dict[str, Any]:
    """KServe's AutoscalerConfig (windows as strings of whole seconds) and the otel scaler endpoint."""
    values: dict[str, Any] = {}
    autoscaler = _json_entry(data, "autoscaler")
    for key, attr in (("scaleUpStabilizationWindowSeconds", "scale_up_stabilization_window_seconds"),
                      ("scaleDownStabilizationWindowSeconds", "scale_down_stabilization_window_seconds")):
        raw = autoscaler.get(key)
        if raw not in (None, ""):
            try:
                values[attr] = int(str(raw))
            except ValueError:
                raise ValueError(f"inferenceservice-config autoscaler.{key} is {raw!r}; write whole seconds, e.g. \"300\"") from None
    otel = _json_entry(data, "opentelemetryCollector")
    if otel.get("metricScalerEndpoint"):
        values["otel_metric_scaler_endpoint"] = otel["metricScalerEndpoint"]
    return values


def _resources(entry: dict[str, Any]) -> dict[str, Any]:
    """KServe's cpuRequest/memoryRequest/cpuLimit/memoryLimit; an empty value leaves that one unbounded."""
    requests = {k: entry[f"{k}Request"] for k in ("cpu", "memory") if entry.get(f"{k}Request")}
    limits = {k: entry[f"{k}Limit"] for k in ("cpu", "memory") if entry.get(f"{k}Limit")}
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out
