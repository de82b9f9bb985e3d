"""One typed autoscaling policy from a rendered HorizontalPodAutoscaler or KEDA ScaledObject.

The embedded platform runs no HPA controller and no KEDA: its autoscaler loop reads the objects the
Standard reconciler rendered through ``autoscaling_policy`` and acts on the result. What each source
means, as the real controllers read it:

- HPA (autoscaling/v2): Resource metrics (cpu/memory, Utilization or AverageValue); no metrics means cpu
  at 80 % (the API server's SetDefaults_HorizontalPodAutoscaler); ``behavior`` with Kubernetes' defaults
  filled per direction (``serving.autoscaling.hpa.Behavior.from_spec``); tolerance 0.1.
- ScaledObject (keda.sh/v1alpha1): one metric per trigger. ``cpu``/``memory`` triggers are Resource
  metrics (``metadata.value`` with ``metricType``); a ``prometheus`` trigger is an External metric whose
  ``threshold`` KEDA compares per replica (metricType AverageValue, KEDA's default): a query on the
  gateway's ``odh_gateway_requests_total`` is ``rps``, on ``odh_gateway_in_flight`` ``concurrency``, and
  anything else ``external`` (kept with its query). KEDA's defaults: pollingInterval 30 s,
  cooldownPeriod 300 s (the wait before scaling to zero), minReplicaCount 0, maxReplicaCount 100;
  its HPA takes the stabilization windows of ``advanced.horizontalPodAutoscalerConfig.behavior``.

As with every HPA, the desired count is the largest proposal over the metrics, within min/max.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from serving.autoscaling.hpa import TOLERANCE, Behavior, MetricTarget, parse_quantity
from serving.errors import AdmissionError, ServingError
from serving.kserve.reconcile.keda import GATEWAY_CONCURRENCY_METRIC, GATEWAY_RPS_METRIC, KEDA_API_VERSION

MetricKind = Literal["cpu", "memory", "rps", "concurrency", "external"]
TargetType = Literal["Utilization", "AverageValue", "Value"]
# KEDA's ScaledObject defaults (keda.sh/docs, "ScaledObject specification").
KEDA_POLLING_INTERVAL = 30
KEDA_COOLDOWN_PERIOD = 300
KEDA_MIN_REPLICAS = 0
KEDA_MAX_REPLICAS = 100
_RPS_RE = re.compile(rf"\b{GATEWAY_RPS_METRIC}\b")
_CONCURRENCY_RE = re.compile(rf"\b{GATEWAY_CONCURRENCY_METRIC}\b")


class PolicyError(ServingError):
    """The object cannot be acted on here; ``field`` names where, the message says what to write."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class MetricGoal:
    """One metric to hold at ``value``: a utilization percent (cpu/memory of the request), an average
    per replica (cores, bytes, requests per second, requests in flight), or a total (``Value``)."""

    metric: MetricKind
    target_type: TargetType
    value: float
    query: str | None = None
    server_address: str | None = None

    def resource_target(self) -> MetricTarget:
        """As ``serving.autoscaling.hpa.MetricTarget`` (cpu and memory only)."""
        if self.metric not in ("cpu", "memory"):
            raise PolicyError("metric", f"{self.metric} is not a resource metric; read it from the gateway")
        if self.target_type == "Utilization":
            return MetricTarget(self.metric, utilization=int(self.value))
        return MetricTarget(self.metric, average_value=self.value)


@dataclass(frozen=True, slots=True)
class AutoscalingPolicy:
    """What to scale (``namespace``/``deployment``), between which bounds, on what, and how fast."""

    source: Literal["HorizontalPodAutoscaler", "ScaledObject"]
    namespace: str
    deployment: str
    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricGoal, ...]
    behavior: Behavior
    tolerance: float = TOLERANCE
    # KEDA only: how often the trigger is read, and how long without activity before going to zero.
    polling_interval_seconds: int | None = None
    cooldown_period_seconds: int | None = None

    @property
    def metric(self) -> MetricKind:
        """The first metric's kind (most objects have one)."""
        return self.metrics[0].metric

    @property
    def resource_metrics(self) -> tuple[MetricTarget, ...]:
        return tuple(m.resource_target() for m in self.metrics if m.metric in ("cpu", "memory"))

    @property
    def request_metrics(self) -> tuple[MetricGoal, ...]:
        """The metrics the gateway measures (rps, concurrency)."""
        return tuple(m for m in self.metrics if m.metric in ("rps", "concurrency"))


def autoscaling_policy(obj: Mapping[str, Any]) -> AutoscalingPolicy:
    """The policy of an autoscaling/v2 HorizontalPodAutoscaler or a keda.sh/v1alpha1 ScaledObject."""
    kind = obj.get("kind")
    if kind == "HorizontalPodAutoscaler":
        return _from_hpa(obj)
    if kind == "ScaledObject" and obj.get("apiVersion") == KEDA_API_VERSION:
        return _from_scaled_object(obj)
    raise PolicyError("kind", f"{obj.get('apiVersion')}/{kind} is not an autoscaler; pass a HorizontalPodAutoscaler or ScaledObject")


def policies_by_deployment(objects: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], AutoscalingPolicy]:
    """Every autoscaler among ``objects`` (a reconcile's output), keyed by (namespace, Deployment name)."""
    policies: dict[tuple[str, str], AutoscalingPolicy] = {}
    for obj in objects:
        if obj.get("kind") in ("HorizontalPodAutoscaler", "ScaledObject"):
            policy = autoscaling_policy(obj)
            policies[(policy.namespace, policy.deployment)] = policy
    return policies


def _from_hpa(obj: Mapping[str, Any]) -> AutoscalingPolicy:
    spec = obj.get("spec") or {}
    target = _scale_target(spec, "spec.scaleTargetRef")
    metrics: list[MetricGoal] = []
    for index, metric in enumerate(spec.get("metrics") or ()):
        field = f"spec.metrics[{index}]"
        resource = metric.get("resource") if metric.get("type") == "Resource" else None
        if not isinstance(resource, dict):
            raise PolicyError(f"{field}.type", f"is {metric.get('type')!r}; the embedded platform scales an HPA on Resource metrics only")
        metrics.append(_resource_goal(resource.get("name"), resource.get("target") or {}, field))
    if not metrics:
        metrics.append(MetricGoal("cpu", "Utilization", 80))  # the API server's default
    minimum = int(spec.get("minReplicas", 1))
    maximum = int(spec.get("maxReplicas", minimum))
    _check_bounds(minimum, maximum, "spec.minReplicas", "spec.maxReplicas")
    return AutoscalingPolicy(
        source="HorizontalPodAutoscaler",
        namespace=_namespace(obj),
        deployment=target,
        min_replicas=minimum,
        max_replicas=maximum,
        metrics=tuple(metrics),
        behavior=_behavior(spec.get("behavior"), "spec.behavior"),
    )


def _from_scaled_object(obj: Mapping[str, Any]) -> AutoscalingPolicy:
    spec = obj.get("spec") or {}
    target = _scale_target(spec, "spec.scaleTargetRef")
    metrics = tuple(_trigger_goal(trigger, f"spec.triggers[{i}]") for i, trigger in enumerate(spec.get("triggers") or ()))
    if not metrics:
        raise PolicyError("spec.triggers", "is empty; a ScaledObject needs at least one trigger")
    minimum = int(spec.get("minReplicaCount", KEDA_MIN_REPLICAS))
    maximum = int(spec.get("maxReplicaCount", KEDA_MAX_REPLICAS))
    _check_bounds(minimum, maximum, "spec.minReplicaCount", "spec.maxReplicaCount")
    behavior = ((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior")
    return AutoscalingPolicy(
        source="ScaledObject",
        namespace=_namespace(obj),
        deployment=target,
        min_replicas=minimum,
        max_replicas=maximum,
        metrics=metrics,
        behavior=_behavior(behavior, "spec.advanced.horizontalPodAutoscalerConfig.behavior"),
        polling_interval_seconds=int(spec.get("pollingInterval", KEDA_POLLING_INTERVAL)),
        cooldown_period_seconds=int(spec.get("cooldownPeriod", KEDA_COOLDOWN_PERIOD)),
    )


def _trigger_goal(trigger: Mapping[str, Any], field: str) -> MetricGoal:
    kind = trigger.get("type")
    metadata = trigger.get("metadata") or {}
    if kind in ("cpu", "memory"):
        resource_type = trigger.get("metricType") or "AverageValue"
        target = {"type": resource_type}
        target["averageUtilization" if resource_type == "Utilization" else "averageValue"] = metadata.get("value")
        return _resource_goal(kind, target, field)
    if kind == "prometheus":
        query = str(metadata.get("query") or "")
        threshold = metadata.get("threshold")
        if not query or threshold in (None, ""):
            raise PolicyError(f"{field}.metadata", "a prometheus trigger needs query and threshold")
        target_type: TargetType = "Value" if trigger.get("metricType") == "Value" else "AverageValue"
        metric: MetricKind = "rps" if _RPS_RE.search(query) else "concurrency" if _CONCURRENCY_RE.search(query) else "external"
        return MetricGoal(metric, target_type, _number(threshold, f"{field}.metadata.threshold"), query,
                          metadata.get("serverAddress") or None)
    raise PolicyError(f"{field}.type", f"is {kind!r}; the embedded platform acts on cpu, memory and prometheus triggers")


def _resource_goal(name: Any, target: Mapping[str, Any], field: str) -> MetricGoal:
    if name not in ("cpu", "memory"):
        raise PolicyError(f"{field}.resource.name", f"is {name!r}; use cpu or memory")
    kind = target.get("type")
    if kind == "Utilization":
        value = _number(target.get("averageUtilization"), f"{field}.resource.target.averageUtilization")
        if value <= 0:
            raise PolicyError(f"{field}.resource.target.averageUtilization", f"is {value:g}; use a positive percentage")
        return MetricGoal(name, "Utilization", value)
    if kind == "AverageValue":
        raw = target.get("averageValue")
        if raw in (None, ""):
            raise PolicyError(f"{field}.resource.target.averageValue", "is not set; write a quantity such as 500m or 512Mi")
        try:
            return MetricGoal(name, "AverageValue", parse_quantity(str(raw)))
        except ValueError:
            raise PolicyError(f"{field}.resource.target.averageValue", f"{raw!r} is not a quantity (e.g. 500m, 512Mi)") from None
    raise PolicyError(f"{field}.resource.target.type", f"is {kind!r}; use Utilization or AverageValue")


def _behavior(spec: Any, field: str) -> Behavior:
    try:
        return Behavior.from_spec(spec, field)
    except AdmissionError as exc:
        raise PolicyError(field, str(exc)) from None


def _scale_target(spec: Mapping[str, Any], field: str) -> str:
    ref = spec.get("scaleTargetRef") or {}
    if ref.get("kind", "Deployment") != "Deployment" or not ref.get("name"):
        raise PolicyError(field, "must name a Deployment (kind Deployment, name)")
    return str(ref["name"])


def _namespace(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "default")


def _check_bounds(minimum: int, maximum: int, min_field: str, max_field: str) -> None:
    if minimum < 0:
        raise PolicyError(min_field, f"is {minimum}; use 0 or more")
    if maximum < max(minimum, 1):
        raise PolicyError(max_field, f"is {maximum}; use at least {max(minimum, 1)} ({min_field} and 1)")


def _number(value: Any, field: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PolicyError(field, f"{value!r} is not a number") from None
