"""InferenceService status from what a platform observed of its predictor, in KServe's shape.

Conditions ``PredictorReady``, ``IngressReady`` and the aggregate ``Ready``; ``url``, ``address.url``,
``components.predictor.url``; ``modelStatus`` following KServe's UpdateModelRevisionStates /
UpdateModelTransitionStatus; ``observedGeneration``. A condition keeps its previous
``lastTransitionTime`` while its status is unchanged, as Knative's condition manager does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from serving.kserve import naming
from serving.kserve.admission import deployment_mode
from serving.kserve.types import InferenceService

PREDICTOR_READY = "PredictorReady"
INGRESS_READY = "IngressReady"
READY = "Ready"

# Failures that mean the spec cannot be served as written (KServe marks these InvalidSpec); anything else
# is a load/runtime failure (BlockedByFailedLoad).
SPEC_FAILURES = frozenset({"NoSupportingRuntime", "RuntimeNotRecognized", "RuntimeDisabled", "InvalidPredictorSpec"})
# The reasons the CRD's lastFailureInfo.reason enum accepts.
FAILURE_REASONS = SPEC_FAILURES | {"ModelLoadFailed", "RuntimeUnhealthy"}


@dataclass(frozen=True)
class PredictorObservation:
    desired_replicas: int
    ready_replicas: int
    url: str | None = None
    failure_reason: str | None = None
    failure_message: str | None = None
    runtime: str | None = None
    # Which kind ``runtime`` names, to fill servingRuntimeName or clusterServingRuntimeName.
    runtime_kind: str = "ClusterServingRuntime"
    # The failure is in a new revision while the previous one keeps serving (a failed rollout): the
    # service stays Ready, as a Deployment stays Available, and modelStatus says the update is blocked.
    previous_revision_serving: bool = False


def observe(
    isvc: InferenceService,
    observation: PredictorObservation,
    previous: dict[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The ``status`` for ``isvc`` given ``observation``; ``previous`` is the status it had before."""
    previous = previous or {}
    stamp = _timestamp(now or datetime.now(UTC))
    failed = observation.failure_reason is not None
    ready = observation.ready_replicas >= 1 and (not failed or observation.previous_revision_serving)

    if ready:
        predictor = _condition(PREDICTOR_READY, "True")
    elif failed:
        predictor = _condition(PREDICTOR_READY, "False", observation.failure_reason, observation.failure_message)
    else:
        predictor = _condition(
            PREDICTOR_READY,
            "Unknown",
            "MinimumReplicasUnavailable",
            f"{observation.ready_replicas} of {max(observation.desired_replicas, 1)} replicas ready",
        )
    if observation.url:
        ingress = _condition(INGRESS_READY, "True")
    else:
        ingress = _condition(INGRESS_READY, "Unknown", "URLNotAssigned", "the predictor has no URL yet")
    conditions = [predictor, ingress, _aggregate([predictor, ingress])]
    stamp_transitions(conditions, previous, stamp)

    status: dict[str, Any] = {
        "conditions": sorted(conditions, key=lambda c: c["type"]),
        "modelStatus": _model_status(observation, previous.get("modelStatus") or {}, ready, stamp),
    }
    try:
        status["deploymentMode"] = deployment_mode(isvc)
    except ValueError:
        pass
    if isvc.metadata.generation is not None:
        status["observedGeneration"] = isvc.metadata.generation
    if observation.url:
        status["url"] = observation.url
        status["address"] = {"url": naming.internal_url(isvc)}
        status["components"] = {"predictor": {"url": observation.url}}
    if observation.runtime:
        key = "servingRuntimeName" if observation.runtime_kind == "ServingRuntime" else "clusterServingRuntimeName"
        status[key] = observation.runtime
    return status


def with_canary_status(status: dict[str, Any], statuses: list[dict[str, Any]], previous: dict[str, Any] | None) -> dict[str, Any]:
    """``status`` plus Standard mode's ``canaryStatuses`` and ``CanaryPredictorReady`` condition (KServe's
    raw-deployment canaries); the condition does not hold back ``Ready``, as in KServe."""
    from serving.kserve.reconcile.canary import canary_condition

    condition = canary_condition(statuses)
    if condition is None:
        return status
    stamp_transitions([condition], previous or {}, _timestamp(datetime.now(UTC)))
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != condition["type"]]
    return {**status, "canaryStatuses": statuses, "conditions": sorted([*conditions, condition], key=lambda c: c["type"])}


def stamp_transitions(conditions: list[dict[str, Any]], previous: dict[str, Any], stamp: str) -> None:
    """Give each condition a ``lastTransitionTime``: the previous one while its status is unchanged."""
    old = {c.get("type"): c for c in previous.get("conditions") or []}
    for condition in conditions:
        before = old.get(condition["type"])
        kept = before is not None and before.get("status") == condition["status"] and before.get("lastTransitionTime")
        condition["lastTransitionTime"] = before["lastTransitionTime"] if kept and before is not None else stamp


def _condition(kind: str, status: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": kind, "status": status}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _aggregate(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Ready is True when every part is; else False if any part is False, else Unknown; the first
    not-True part lends its reason and message."""
    blocking = [c for c in parts if c["status"] != "True"]
    if not blocking:
        return _condition(READY, "True")
    status = "False" if any(c["status"] == "False" for c in blocking) else "Unknown"
    first = next(c for c in blocking if c["status"] == status)
    return _condition(READY, status, first.get("reason"), first.get("message"))


def _model_status(observation: PredictorObservation, previous: dict[str, Any], ready: bool, stamp: str) -> dict[str, Any]:
    old_states = previous.get("states") or {}
    # The model a previous revision loaded stays active (and serving) while a new one loads or fails.
    active = old_states.get("activeModelState") or "Pending"
    reason = observation.failure_reason
    if reason in SPEC_FAILURES:
        target, transition = old_states.get("targetModelState") or "Pending", "InvalidSpec"
    elif reason is not None:
        target, transition = "FailedToLoad", "BlockedByFailedLoad"
    elif ready:
        target, transition, active = "Loaded", "UpToDate", "Loaded"
    elif observation.desired_replicas > 0:
        target, transition = "Loading", "InProgress"
    else:
        target, transition = "Pending", "InProgress"

    status: dict[str, Any] = {
        "states": {"activeModelState": active, "targetModelState": target},
        "transitionStatus": transition,
    }
    if ready:
        status["copies"] = {"failedCopies": 0, "totalCopies": observation.ready_replicas}
    if reason is not None:
        info: dict[str, Any] = {"message": observation.failure_message or reason, "time": stamp}
        if reason in FAILURE_REASONS:
            info["reason"] = reason
        status["lastFailureInfo"] = info
    elif previous.get("lastFailureInfo"):
        status["lastFailureInfo"] = previous["lastFailureInfo"]
    return status


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- Serverless mode

PREDICTOR_ROUTE_READY = "PredictorRouteReady"
PREDICTOR_CONFIGURATION_READY = "PredictorConfigurationReady"
ROUTES_READY = "RoutesReady"
LATEST_DEPLOYMENT_READY = "LatestDeploymentReady"


@dataclass(frozen=True)
class ServerlessObservation:
    """What the platform saw of a Serverless predictor: its Knative Service's ``status`` (from
    ``serving.knative.service_status``) and the replicas of the latest created revision."""

    ksvc_status: dict[str, Any]
    latest_revision_replicas: int = 0
    latest_revision_ready_replicas: int = 0
    # A replica of the latest revision failed to load its model (storage initializer or server exit).
    failure_reason: str | None = None
    failure_message: str | None = None
    runtime: str | None = None
    runtime_kind: str = "ClusterServingRuntime"


def observe_serverless(
    isvc: InferenceService,
    observation: ServerlessObservation,
    previous: dict[str, Any] | None = None,
    *,
    url_scheme: str = "http",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The InferenceService ``status`` in Serverless mode, as KServe's ``PropagateStatus``,
    ``PropagateCrossComponentStatus``, ingress reconciler and ``PropagateModelStatus`` report it.

    ``components.predictor`` carries the revisions and traffic; ``latestRolledoutRevision`` moves to the
    latest ready revision once a ``latestRevision`` target gives it 100 % (the previous one becomes
    ``previousRolledoutRevision``), and moves back when that revision is rolled back. A failed latest
    revision makes PredictorReady False (reason RevisionFailed) while traffic stays on the rolled-out one.
    """
    previous = previous or {}
    stamp = _timestamp(now or datetime.now(UTC))
    ksvc = observation.ksvc_status or {}
    old_component = ((previous.get("components") or {}).get(naming.PREDICTOR)) or {}
    component = propagate_revisions(old_component, ksvc)

    ksvc_conditions = {c.get("type"): c for c in ksvc.get("conditions") or []}
    predictor = _copied(PREDICTOR_READY, ksvc_conditions.get(READY))
    route = _copied(PREDICTOR_ROUTE_READY, ksvc_conditions.get(ROUTES_READY))
    configuration = _copied(PREDICTOR_CONFIGURATION_READY, ksvc_conditions.get("ConfigurationsReady"))
    if predictor["status"] == "True":
        # KServe takes the ksvc's URL and address only while it is Ready; afterwards they persist.
        if ksvc.get("url"):
            component["url"] = ksvc["url"]
        if ksvc.get("address"):
            component["address"] = ksvc["address"]

    status: dict[str, Any] = {}
    if component.get("url"):
        ingress = _condition(INGRESS_READY, "True")
        status["url"] = _isvc_url(component["url"], url_scheme)
        status["address"] = {"url": f"http://{isvc.name}.{isvc.namespace}.svc.{naming.CLUSTER_DOMAIN}"}
    else:
        ingress = _condition(INGRESS_READY, "False" if predictor["status"] == "False" else "Unknown", "Predictor ingress not created")
    conditions = [
        predictor, route, configuration, ingress,
        _cross_component(ROUTES_READY, route), _cross_component(LATEST_DEPLOYMENT_READY, configuration),
        _aggregate([predictor, ingress]),
    ]
    stamp_transitions(conditions, previous, stamp)
    ready = conditions[-1]["status"] == "True"
    status.update({
        "conditions": sorted(conditions, key=lambda c: c["type"]),
        "components": {naming.PREDICTOR: component},
        "modelStatus": _serverless_model_status(observation, component, previous.get("modelStatus") or {}, ready, stamp),
        "deploymentMode": "Knative",
    })
    if isvc.metadata.generation is not None:
        status["observedGeneration"] = isvc.metadata.generation
    if observation.runtime:
        key = "servingRuntimeName" if observation.runtime_kind == "ServingRuntime" else "clusterServingRuntimeName"
        status[key] = observation.runtime
    return status


def propagate_revisions(component: dict[str, Any], ksvc: dict[str, Any]) -> dict[str, Any]:
    """KServe's revision bookkeeping (``PropagateStatus``) for one component, from its ksvc status."""
    out = {k: v for k, v in component.items()}
    latest_ready = ksvc.get("latestReadyRevisionName") or ""
    latest_created = ksvc.get("latestCreatedRevisionName") or ""
    if latest_created:
        out["latestCreatedRevision"] = latest_created
    traffic = ksvc.get("traffic") or []
    per_revision: dict[str, int] = {}
    for target in traffic:
        if target.get("percent") is not None:
            per_revision[target.get("revisionName", "")] = per_revision.get(target.get("revisionName", ""), 0) + target["percent"]
    for target in traffic:
        if target.get("revisionName") != latest_ready or not target.get("latestRevision"):
            continue
        percent = target.get("percent")
        if out.get("latestRolledoutRevision") != latest_ready:
            if percent == 100:
                # The latest ready revision takes all traffic: it is rolled out, the one before is kept.
                if out.get("latestRolledoutRevision"):
                    out["previousRolledoutRevision"] = out["latestRolledoutRevision"]
                out["latestRolledoutRevision"] = latest_ready
        elif (latest_ready == latest_created and percent is not None and percent < 100
              and per_revision.get(latest_ready) == 100 and out.get("previousRolledoutRevision")):
            # Rolled out at 100 % and then canaried against itself: KServe steps back to the previous one.
            out["latestRolledoutRevision"] = out["previousRolledoutRevision"]
    if latest_ready:
        out["latestReadyRevision"] = latest_ready
    if traffic:
        out["traffic"] = [dict(t) for t in traffic]
    return out


def _copied(kind: str, source: dict[str, Any] | None) -> dict[str, Any]:
    """A Knative condition under KServe's name; a missing one is Unknown."""
    if source is None:
        return _condition(kind, "Unknown")
    return _condition(kind, str(source.get("status", "Unknown")), source.get("reason"), source.get("message"))


def _cross_component(kind: str, part: dict[str, Any]) -> dict[str, Any]:
    """KServe's ``PropagateCrossComponentStatus`` over the one component we reconcile (the predictor)."""
    if part["status"] == "True":
        return _condition(kind, "True")
    return _condition(kind, part["status"], f"{part['type']} not ready")


def _isvc_url(predictor_url: str, scheme: str) -> str:
    """The InferenceService's host is its predictor's without ``-predictor`` (KServe's ingress reconciler)."""
    _, _, rest = predictor_url.partition("://")
    rest = rest.replace("-predictor-default", "", 1) if "-predictor-default" in rest else rest.replace("-predictor", "", 1)
    return f"{scheme}://{rest}"


def _serverless_model_status(
    observation: ServerlessObservation, component: dict[str, Any], previous: dict[str, Any], ready: bool, stamp: str
) -> dict[str, Any]:
    """KServe's ``PropagateModelStatus`` for Knative: pods of the latest created revision decide."""
    active = (previous.get("states") or {}).get("activeModelState") or "Pending"
    info = previous.get("lastFailureInfo")
    failed_knative = any(c.get("status") == "False" for c in (observation.ksvc_status or {}).get("conditions") or [])
    if observation.latest_revision_replicas == 0:
        # No pods: just starting or scaled to zero (Pending), unless Knative says it failed.
        target = "FailedToLoad" if failed_knative else "Pending"
    elif observation.failure_reason is not None:
        target = "FailedToLoad"
        info = {"reason": observation.failure_reason if observation.failure_reason in FAILURE_REASONS else "ModelLoadFailed",
                "message": observation.failure_message or observation.failure_reason, "time": stamp}
    elif ready and component.get("latestCreatedRevision") == component.get("latestReadyRevision"):
        target, active = "Loaded", "Loaded"
    else:
        target = "Loading" if observation.latest_revision_replicas > observation.latest_revision_ready_replicas else "Pending"
    transition = {"Loaded": "UpToDate", "FailedToLoad": "BlockedByFailedLoad"}.get(target, "InProgress")
    status: dict[str, Any] = {
        "states": {"activeModelState": active, "targetModelState": target},
        "transitionStatus": transition,
        "copies": {"failedCopies": 0, "totalCopies": observation.latest_revision_ready_replicas},
    }
    if info:
        status["lastFailureInfo"] = info
    return status
