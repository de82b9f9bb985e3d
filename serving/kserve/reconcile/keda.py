"""The keda.sh/v1alpha1 ScaledObject KServe renders for ``serving.kserve.io/autoscalerClass: keda``.

Matches kserve/kserve ``pkg/controller/v1beta1/inferenceservice/reconcilers/keda/keda_reconciler.go``
(``createKedaScaledObject``, ``getKedaMetrics``) and the webhook's ``validateScalingKedaCompExtension``:

- triggers come only from ``autoScaling.metrics`` (``scaleMetric`` is refused for KEDA):
  Resource -> trigger ``cpu``/``memory`` with ``metadata.value`` and ``metricType`` (cpu Utilization,
  default 80); External -> trigger of the backend's type (``prometheus``, ``graphite``) with
  ``serverAddress``, ``query``, ``threshold`` (+ ``namespace`` for prometheus, ``authModes``,
  ``authenticationRef``); PodMetric with backend opentelemetry -> an ``external`` trigger whose
  ``metricQuery`` is ``sum(<query>{namespace="<ns>", deployment="<name>"})``;
- ``minReplicaCount`` is ``minReplicas`` as written (0 allowed: KEDA scales to zero), default 1;
  ``maxReplicaCount`` is at least the minimum;
- ``advanced.horizontalPodAutoscalerConfig.behavior`` carries only the stabilization windows, from
  ``autoScaling.behavior`` or else the ConfigMap's ``autoscaler`` entry.

One deliberate difference: with no ``autoScaling.metrics`` KServe renders a ScaledObject without
triggers, which KEDA's webhook refuses; we refuse it here, naming the field.

On the embedded platform, request rate and concurrency come from the gateway: write an External
prometheus metric on ``odh_gateway_requests_total`` (rps) or ``odh_gateway_in_flight`` (concurrency),
as KServe's KEDA docs do for vLLM's metrics; ``gateway_metric`` writes one. The embedded autoscaler
reads the same numbers straight from the gateway (see ``policy.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from serving.kserve.reconcile import ReconcileError
from serving.kserve.reconcile.config import ReconcileConfig

KEDA_API_VERSION = "keda.sh/v1alpha1"
GATEWAY_RPS_METRIC = "odh_gateway_requests_total"
GATEWAY_CONCURRENCY_METRIC = "odh_gateway_in_flight"


def gateway_metric(metric: Literal["rps", "concurrency"], target: float, *, namespace: str, name: str,
                   server_address: str = "http://127.0.0.1:8080") -> dict[str, Any]:
    """An ``autoScaling.metrics`` entry that scales on the gateway's request rate or concurrency for the
    InferenceService ``namespace/name`` (the gateway's ``route`` label), ``target`` per replica."""
    route = f'route="{namespace}/{name}"'
    if metric == "rps":
        query = f"sum(rate({GATEWAY_RPS_METRIC}{{{route}}}[1m]))"
    elif metric == "concurrency":
        query = f"sum({GATEWAY_CONCURRENCY_METRIC}{{{route}}})"
    else:
        raise ValueError(f"metric is {metric!r}; use rps or concurrency")
    return {
        "type": "External",
        "external": {
            "metric": {"backend": "prometheus", "serverAddress": server_address, "query": query},
            "target": {"type": "Value", "value": _number_text(target)},
        },
    }


def render_scaled_object(metadata: dict[str, Any], component: dict[str, Any], config: ReconcileConfig,
                         path: str = "spec.predictor") -> dict[str, Any]:
    """The ScaledObject named as the Deployment it scales (``metadata`` is the component's metadata)."""
    if component.get("scaleMetric") is not None:
        raise ReconcileError(
            "InvalidAutoScalingSpec",
            f"{path}.scaleMetric is not supported for KEDA; remove it and describe the metric in {path}.autoScaling.metrics",
        )
    triggers = keda_triggers(component, metadata, config, path)
    if not triggers:
        raise ReconcileError(
            "InvalidAutoScalingSpec",
            f"{path}.autoScaling.metrics is empty: a KEDA ScaledObject needs at least one trigger; add a Resource "
            "(cpu/memory), External (prometheus query) or PodMetric entry, or use autoscalerClass hpa",
        )
    minimum = component.get("minReplicas")
    minimum = 1 if minimum is None else int(minimum)
    maximum = max(int(component.get("maxReplicas") or 0), minimum)
    spec: dict[str, Any] = {
        "scaleTargetRef": {"name": metadata["name"]},
        "triggers": triggers,
        "minReplicaCount": minimum,
        "maxReplicaCount": maximum,
    }
    behavior = _behavior(component, config)
    if behavior:
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    return {"apiVersion": KEDA_API_VERSION, "kind": "ScaledObject", "metadata": metadata, "spec": spec}


def keda_triggers(component: dict[str, Any], metadata: dict[str, Any], config: ReconcileConfig,
                  path: str = "spec.predictor") -> list[dict[str, Any]]:
    triggers: list[dict[str, Any]] = []
    for index, entry in enumerate((component.get("autoScaling") or {}).get("metrics") or []):
        field = f"{path}.autoScaling.metrics[{index}]"
        kind = entry.get("type")
        if kind == "Resource":
            triggers.append(_resource_trigger(entry.get("resource"), field))
        elif kind == "External":
            triggers.append(_external_trigger(entry.get("external"), field))
        elif kind == "PodMetric":
            triggers.append(_pod_metric_trigger(entry.get("podmetric"), field, metadata, config))
        else:
            raise ReconcileError("InvalidAutoScalingSpec", f"{field}.type is {kind!r}; use Resource, External or PodMetric")
    return triggers


def _resource_trigger(resource: Any, field: str) -> dict[str, Any]:
    if not isinstance(resource, dict):
        raise ReconcileError("InvalidAutoScalingSpec", f"{field}.resource is not set; add resource.name and resource.target")
    name = resource.get("name")
    target = resource.get("target") or {}
    kind = target.get("type")
    if name == "cpu" and kind != "Utilization":
        raise ReconcileError("InvalidAutoScalingSpec", f"{field}.resource.target.type is {kind!r}; the cpu target type must be Utilization")
    if name == "memory" and kind not in ("Utilization", "AverageValue"):
        raise ReconcileError("InvalidAutoScalingSpec",
                             f"{field}.resource.target.type is {kind!r}; use AverageValue or Utilization for memory")
    if name not in ("cpu", "memory"):
        raise ReconcileError("InvalidAutoScalingSpec", f"{field}.resource.name is {name!r}; use cpu or memory")
    if kind == "Utilization":
        utilization = target.get("averageUtilization")
        if utilization is None and name == "cpu":
            utilization = 80  # KServe's DefaultCPUUtilization
        if utilization is None or not 1 <= int(utilization) <= 100:
            raise ReconcileError("InvalidAutoScalingSpec", f"{field}.resource.target.averageUtilization must be an integer from 1 to 100")
        value = str(int(utilization))
    else:
        if target.get("averageValue") is None:
            raise ReconcileError("InvalidAutoScalingSpec", f"{field}.resource.target.averageValue is not set; e.g. 512Mi")
        value = _number_text(target["averageValue"])
    return {"type": name, "metadata": {"value": value}, "metricType": kind}


def _external_trigger(external: Any, field: str) -> dict[str, Any]:
    if not isinstance(external, dict):
        raise ReconcileError("InvalidAutoScalingSpec", f"{field}.external is not set; add external.metric and external.target")
    metric = external.get("metric") or {}
    target = external.get("target") or {}
    if not metric.get("query"):
        raise ReconcileError("InvalidAutoScalingSpec", f"{field}.external.metric.query is empty; write the query to scale on")
    if target.get("value") is None:
        raise ReconcileError("InvalidAutoScalingSpec", f"{field}.external.target.value is empty; set the threshold per replica")
    backend = metric.get("backend") or "prometheus"
    trigger: dict[str, Any] = {
        "type": backend,
        "metadata": {
            "serverAddress": metric.get("serverAddress") or "",
            "query": metric["query"],
            "threshold": _number_text(target["value"]),
        },
    }
    if backend == "prometheus" and metric.get("namespace"):
        trigger["metadata"]["namespace"] = metric["namespace"]
    auth = external.get("authenticationRef")
    if isinstance(auth, dict):
        if auth.get("authModes"):
            trigger["metadata"]["authModes"] = auth["authModes"]
        ref = (auth.get("authenticationRef") or {}).get("name")
        if ref:
            trigger["authenticationRef"] = {"name": ref}
    return trigger


def _pod_metric_trigger(pod_metric: Any, field: str, metadata: dict[str, Any], config: ReconcileConfig) -> dict[str, Any]:
    if not isinstance(pod_metric, dict):
        raise ReconcileError("InvalidAutoScalingSpec", f"{field}.podmetric is not set; add podmetric.metric and podmetric.target")
    metric = pod_metric.get("metric") or {}
    target = pod_metric.get("target") or {}
    if not metric.get("query"):
        raise ReconcileError("InvalidAutoScalingSpec", f"{field}.podmetric.metric.query is empty; write the metric to scale on")
    if metric.get("backend") != "opentelemetry":
        raise ReconcileError("InvalidAutoScalingSpec", f"{field}.podmetric.metric.backend is {metric.get('backend')!r}; use opentelemetry")
    query = f'sum({metric["query"]}{{namespace="{metadata["namespace"]}", deployment="{metadata["name"]}"}})'
    trigger_metadata = {
        "metricQuery": query,
        "targetValue": _number_text(target["value"]) if target.get("value") is not None else "0",
        "scalerAddress": metric.get("serverAddress") or config.otel_metric_scaler_endpoint,
    }
    if metric.get("operationOverTime"):
        trigger_metadata["operationOverTime"] = metric["operationOverTime"]
    return {"type": "external", "metadata": trigger_metadata}


def _behavior(component: dict[str, Any], config: ReconcileConfig) -> dict[str, Any]:
    """Only the stabilization windows travel (KServe drops the policies); the ConfigMap fills a gap."""
    behavior = (component.get("autoScaling") or {}).get("behavior") or {}
    windows = {
        "scaleUp": (behavior.get("scaleUp") or {}).get("stabilizationWindowSeconds"),
        "scaleDown": (behavior.get("scaleDown") or {}).get("stabilizationWindowSeconds"),
    }
    if windows["scaleUp"] is None:
        windows["scaleUp"] = config.scale_up_stabilization_window_seconds
    if windows["scaleDown"] is None:
        windows["scaleDown"] = config.scale_down_stabilization_window_seconds
    # KServe sets scaleDown before scaleUp; key order is kept for readable output.
    return {key: {"stabilizationWindowSeconds": int(value)} for key in ("scaleDown", "scaleUp")
            if (value := windows[key]) is not None}


def _number_text(value: Any) -> str:
    """A quantity as KServe's MetricQuantity keeps it: the text as written (4 -> "4", 0.5 -> "0.5")."""
    if isinstance(value, bool):
        raise ReconcileError("InvalidAutoScalingSpec", f"target value {value!r} is not a number or quantity")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
