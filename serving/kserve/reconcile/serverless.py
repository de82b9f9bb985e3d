"""Serverless (Knative) deployment mode: one ``serving.knative.dev/v1`` Service per predictor.

Mirrors KServe's ksvc reconciler (``reconcilers/knative/ksvc_reconciler.go``) and the predictor's object
metadata: the revision template carries the same pod the Standard Deployment would run, the
InferenceService's annotations (minus KServe's disallowed list) plus the autoscaling annotations mapped
from minReplicas/maxReplicas/scaleTarget/scaleMetric, and ``spec.traffic`` follows KServe's canary rules,
which need the InferenceService's current status (its latest rolled-out revision).
"""

from __future__ import annotations

from typing import Any

from serving.knative import names as knative
from serving.kserve import naming
from serving.kserve.reconcile.config import ReconcileConfig
from serving.kserve.reconcile.standard import STORAGE_URI_ANNOTATION, _pod
from serving.kserve.runtimes import ResolvedRuntime
from serving.kserve.types import ISVC_API_VERSION, InferenceService

KNATIVE_CLASS_ANNOTATION = "autoscaling.knative.dev/class"
KPA_CLASS = "kpa.autoscaling.knative.dev"
TARGET_ANNOTATION = "autoscaling.knative.dev/target"
METRIC_ANNOTATION = "autoscaling.knative.dev/metric"
MIN_SCALE_ANNOTATION = "autoscaling.knative.dev/min-scale"
MAX_SCALE_ANNOTATION = "autoscaling.knative.dev/max-scale"
ENABLE_TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
# KServe's managedKsvcAnnotations: they belong on the Knative Service itself, not its revision template.
KSVC_ANNOTATIONS = ("serving.knative.dev/rollout-duration", "serving.knative.openshift.io/enablePassthrough")
LATEST_TAG = "latest"
PREV_TAG = "prev"
# KServe's constants.DefaultMinReplicas: Serverless scales to zero only when minReplicas: 0 is written.
DEFAULT_MIN_REPLICAS = 1


def reconcile_serverless(
    isvc: InferenceService,
    runtime: ResolvedRuntime | None,
    config: ReconcileConfig,
    previous_status: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The desired Knative Service for the predictor.

    ``previous_status`` is the InferenceService's current ``status`` (None for a new one): its
    ``components.predictor.latestRolledoutRevision`` is what a canary splits traffic against.
    """
    isvc_dict = isvc.to_dict()
    predictor: dict[str, Any] = isvc_dict["spec"]["predictor"]
    pod_spec, pod_meta, _ = _pod(isvc, isvc_dict, runtime, config)

    disallowed = set(config.service_annotation_disallowed)
    allowed = lambda values: {k: v for k, v in (values or {}).items() if k not in disallowed}  # noqa: E731
    runtime_annotations = {k: v for k, v in pod_meta["annotations"].items() if k != STORAGE_URI_ANNOTATION}
    isvc_annotations = allowed(isvc.annotations)
    if STORAGE_URI_ANNOTATION in pod_meta["annotations"]:
        isvc_annotations[STORAGE_URI_ANNOTATION] = pod_meta["annotations"][STORAGE_URI_ANNOTATION]
    annotations = {**allowed(runtime_annotations), **isvc_annotations, **allowed(predictor.get("annotations"))}
    annotations.update(autoscaling_annotations(annotations, predictor))
    ksvc_annotations = {key: annotations.pop(key) for key in KSVC_ANNOTATIONS if key in annotations}

    labels = {
        **pod_meta["labels"],
        **(isvc.metadata.labels or {}),
        **(predictor.get("labels") or {}),
        naming.ISVC_LABEL: isvc.name,
        naming.COMPONENT_LABEL: naming.PREDICTOR,
    }
    template_labels = {k: v for k, v in labels.items() if k not in set(config.service_label_disallowed)}

    revision_spec: dict[str, Any] = {}
    if predictor.get("timeout") is not None:
        # KServe sets the response-start timeout to the same value when the user gives one.
        revision_spec["timeoutSeconds"] = predictor["timeout"]
        revision_spec["responseStartTimeoutSeconds"] = predictor["timeout"]
    if predictor.get("containerConcurrency") is not None:
        revision_spec["containerConcurrency"] = predictor["containerConcurrency"]
    revision_spec.update(pod_spec)

    metadata: dict[str, Any] = {"name": naming.predictor_name(isvc.name), "namespace": isvc.namespace, "labels": labels}
    if ksvc_annotations:
        metadata["annotations"] = ksvc_annotations
    if isvc.metadata.uid:
        metadata["ownerReferences"] = [{
            "apiVersion": ISVC_API_VERSION, "kind": "InferenceService", "name": isvc.name, "uid": isvc.metadata.uid,
            "controller": True, "blockOwnerDeletion": True,
        }]
    template_meta: dict[str, Any] = {"labels": template_labels}
    if annotations:
        template_meta["annotations"] = annotations
    ksvc = {
        "apiVersion": knative.API_VERSION,
        "kind": knative.SERVICE_KIND,
        "metadata": metadata,
        "spec": {
            "template": {"metadata": template_meta, "spec": revision_spec},
            "traffic": canary_traffic(predictor.get("canaryTrafficPercent"), _latest_rolled_out(previous_status),
                                      tag_routing=isvc.annotations.get(ENABLE_TAG_ROUTING_ANNOTATION) == "true"),
        },
    }
    return [ksvc]


def autoscaling_annotations(annotations: dict[str, str], predictor: dict[str, Any]) -> dict[str, str]:
    """KServe's ``SetAutoScalingAnnotations``: the KPA class unless one is given, target and metric from
    scaleTarget/scaleMetric, min-scale from minReplicas (default 1), max-scale from a non-zero maxReplicas."""
    out: dict[str, str] = {}
    if KNATIVE_CLASS_ANNOTATION not in annotations:
        out[KNATIVE_CLASS_ANNOTATION] = KPA_CLASS
    if predictor.get("scaleTarget") is not None:
        out[TARGET_ANNOTATION] = str(predictor["scaleTarget"])
    if predictor.get("scaleMetric") is not None:
        out[METRIC_ANNOTATION] = str(predictor["scaleMetric"])
    minimum = predictor.get("minReplicas")
    out[MIN_SCALE_ANNOTATION] = str(DEFAULT_MIN_REPLICAS if minimum is None else minimum)
    if predictor.get("maxReplicas"):
        out[MAX_SCALE_ANNOTATION] = str(predictor["maxReplicas"])
    return out


def canary_traffic(canary_percent: int | None, latest_rolled_out: str | None, *, tag_routing: bool) -> list[dict[str, Any]]:
    """KServe's traffic rules. With a canary percentage and a revision already rolled out: the latest
    revision gets the percentage and the rolled-out one (tag ``prev``) the rest (nothing at 100).
    Otherwise (first rollout, or the field removed) everything goes to the latest revision. ``latest``
    is tagged only with tag routing enabled; ``prev`` always is, as in KServe."""
    latest: dict[str, Any] = {"latestRevision": True, "percent": 100}
    if tag_routing:
        latest["tag"] = LATEST_TAG
    if canary_percent is None or not latest_rolled_out:
        return [latest]
    latest["percent"] = canary_percent
    traffic = [latest]
    if canary_percent < 100:
        traffic.append({"revisionName": latest_rolled_out, "latestRevision": False, "percent": 100 - canary_percent, "tag": PREV_TAG})
    return traffic


def _latest_rolled_out(status: dict[str, Any] | None) -> str | None:
    predictor = ((status or {}).get("components") or {}).get(naming.PREDICTOR) or {}
    value = predictor.get("latestRolledoutRevision")
    return value if isinstance(value, str) and value else None
