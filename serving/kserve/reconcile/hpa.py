"""The autoscaling/v2 HorizontalPodAutoscaler KServe renders for a Standard-mode component.

Matches kserve/kserve ``pkg/controller/v1beta1/inferenceservice/reconcilers/hpa/hpa_reconciler.go``
(``createHPA``, ``getHPAMetrics``):

- ``minReplicas`` below 1 (or unset) becomes 1; ``maxReplicas`` below the minimum becomes the minimum;
- with ``autoScaling.metrics``: one Resource metric per Resource entry (cpu always as Utilization,
  default 80; memory as Utilization or AverageValue as written); entries of other types are skipped;
- otherwise ``scaleMetric`` (default cpu): cpu is Utilization at ``scaleTarget`` (default 80), memory is
  Utilization at ``scaleTarget`` and no metric at all without one (the API server then defaults to cpu
  at 80 %);
- ``behavior`` is always the empty object: KServe does not copy ``autoScaling.behavior`` to the HPA, so
  Kubernetes' default scaling rules apply.
"""

from __future__ import annotations

from typing import Any

from serving.kserve.reconcile import ReconcileError

HPA_METRICS = ("cpu", "memory")


def replica_bounds(component: dict[str, Any]) -> tuple[int, int]:
    """KServe's HPA bounds: min defaults to (and is raised to) 1, max is at least min."""
    minimum = component.get("minReplicas")
    minimum = 1 if minimum is None or minimum < 1 else int(minimum)
    maximum = int(component.get("maxReplicas") or 0)
    return minimum, max(maximum, minimum)


def hpa_metrics(component: dict[str, Any], default_cpu_utilization: int, path: str = "spec.predictor") -> list[dict[str, Any]]:
    """The HPA's ``spec.metrics`` for a component (predictor) dict."""
    autoscaling = component.get("autoScaling")
    if autoscaling is not None:
        return _metrics_from_autoscaling(autoscaling, default_cpu_utilization, path)
    metric = component.get("scaleMetric") or "cpu"
    target = component.get("scaleTarget")
    if metric == "cpu":
        return [_resource("cpu", {"type": "Utilization", "averageUtilization": target or default_cpu_utilization})]
    if metric == "memory":
        return [_resource("memory", {"type": "Utilization", "averageUtilization": target})] if target else []
    raise ReconcileError(
        "InvalidScaleMetric",
        f"{path}.scaleMetric is {metric!r}: the HPA scales on cpu or memory; use one of those, or the "
        "Serverless deployment mode for concurrency/rps",
    )


def _metrics_from_autoscaling(autoscaling: dict[str, Any], default_cpu_utilization: int, path: str) -> list[dict[str, Any]]:
    metrics: list[dict[str, Any]] = []
    for index, entry in enumerate(autoscaling.get("metrics") or []):
        field = f"{path}.autoScaling.metrics[{index}]"
        # KServe's webhook (validateScalingHPACompExtension) admits only Resource metrics for the HPA.
        if entry.get("type") != "Resource":
            raise ReconcileError(
                "InvalidAutoScalingSpec",
                f"{field}.type is {entry.get('type')!r}: the HPA autoscaler class scales on Resource metrics only; "
                "use type Resource, or the annotation serving.kserve.io/autoscalerClass: keda for External/PodMetric",
            )
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            raise ReconcileError("InvalidAutoScalingSpec", f"{field}.resource is not set; add resource.name and resource.target")
        name = resource.get("name")
        target = resource.get("target") or {}
        if name == "cpu":
            utilization = target.get("averageUtilization") or default_cpu_utilization
            metrics.append(_resource("cpu", {"type": "Utilization", "averageUtilization": utilization}))
        elif name == "memory":
            if target.get("type") == "Utilization":
                metrics.append(_resource("memory", {"type": "Utilization", "averageUtilization": target.get("averageUtilization")}))
            elif target.get("type") == "AverageValue":
                goal: dict[str, Any] = {"type": "AverageValue"}
                if target.get("averageValue") is not None:
                    goal["averageValue"] = target["averageValue"]
                metrics.append(_resource("memory", goal))
            else:
                # KServe would render an empty target here, which the API server refuses.
                raise ReconcileError(
                    "InvalidAutoScalingSpec",
                    f"{field}.resource.target.type is {target.get('type')!r}; a memory target is Utilization or AverageValue",
                )
        else:
            raise ReconcileError("InvalidAutoScalingSpec", f"{field}.resource.name is {name!r}; use cpu or memory")
    return metrics


def _resource(name: str, target: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Resource", "resource": {"name": name, "target": {k: v for k, v in target.items() if v is not None}}}


def render_hpa(metadata: dict[str, Any], component: dict[str, Any], default_cpu_utilization: int,
               path: str = "spec.predictor") -> dict[str, Any]:
    """The HPA named as the Deployment it scales (``metadata`` is the component's object metadata)."""
    minimum, maximum = replica_bounds(component)
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": metadata["name"]},
        "minReplicas": minimum,
        "maxReplicas": maximum,
    }
    metrics = hpa_metrics(component, default_cpu_utilization, path)
    if metrics:
        spec["metrics"] = metrics
    spec["behavior"] = {}
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata, "spec": spec}
