"""Revision and Service status, as Knative's revision, configuration, route and service controllers report it.

The daemon observes a revision's replicas and passes a ``RevisionObservation``; ``revision_status``
turns it into Knative's conditions (``ResourcesAvailable``, ``ContainerHealthy``, ``Active`` and
``Ready``, which does not depend on Active: a revision scaled to zero stays Ready with Active False,
reason NoTraffic). ``service_status`` then folds the revisions into the Service's status (configuration
and route views: latest created/ready revisions, resolved traffic, URLs, ``ConfigurationsReady``,
``RoutesReady`` and ``Ready``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from serving.knative import names
from serving.knative.conditions import FALSE, READY, TRUE, UNKNOWN, condition, find, ready_from, stamped, status_of
from serving.knative.revisions import configuration_generation, latest_created, revisions_of
from serving.knative.traffic import TrafficError, resolve_traffic

KubeObject = dict[str, Any]

RESOURCES_AVAILABLE = "ResourcesAvailable"
CONTAINER_HEALTHY = "ContainerHealthy"
ACTIVE = "Active"
CONFIGURATIONS_READY = "ConfigurationsReady"
ROUTES_READY = "RoutesReady"

DEPLOYING = "Deploying"
NO_TRAFFIC = "NoTraffic"
QUEUED = "Queued"


@dataclass(frozen=True)
class RevisionObservation:
    """What the platform saw of one revision's replicas.

    ``desired_replicas`` is the autoscaler's decision (None: none yet); ``ready_replicas`` passed their
    readiness probe (Knative's ``actualReplicas``). A serving container that exited gives ``exit_code``
    and ``failure_message``; any other failure to provide replicas (storage initializer, no runtime
    environment) gives ``failure_reason``. ``progress_deadline_exceeded``: the first replicas never became
    ready in time. ``activation_threshold``: ready replicas that make the revision Active (Knative's
    ``max(minScale, 1)``; the initial scale before the first success).
    """

    desired_replicas: int | None
    ready_replicas: int
    activation_threshold: int = 1
    exit_code: int | None = None
    failure_reason: str | None = None
    failure_message: str | None = None
    progress_deadline_exceeded: bool = False


def revision_status(
    revision: KubeObject, observation: RevisionObservation, previous: dict[str, Any] | None = None, *, now: datetime
) -> dict[str, Any]:
    """The Revision's ``status`` for ``observation``; ``previous`` is the status it had (its conditions
    keep their transition times, and a revision that once reached its initial scale stays initialized)."""
    previous = previous or {}
    old = previous.get("conditions")
    threshold = max(1, observation.activation_threshold)
    # Knative's PA "ScaleTargetInitialized": once the first replicas were ready, resources stay available
    # through scale to zero and back.
    initialized = status_of(old, RESOURCES_AVAILABLE) == TRUE or observation.ready_replicas >= threshold

    if observation.failure_reason:
        resources = condition(RESOURCES_AVAILABLE, FALSE, observation.failure_reason, observation.failure_message)
    elif initialized:
        resources = condition(RESOURCES_AVAILABLE, TRUE)
    elif observation.progress_deadline_exceeded:
        resources = condition(RESOURCES_AVAILABLE, FALSE, "ProgressDeadlineExceeded", "Initial scale was never achieved")
    else:
        resources = condition(RESOURCES_AVAILABLE, UNKNOWN, DEPLOYING)

    if observation.exit_code is not None:
        healthy = condition(CONTAINER_HEALTHY, FALSE, f"ExitCode{observation.exit_code}",
                            f"Container failed with: {observation.failure_message or ''}".rstrip())
    elif initialized:
        healthy = condition(CONTAINER_HEALTHY, TRUE)
    else:
        healthy = condition(CONTAINER_HEALTHY, UNKNOWN, DEPLOYING)

    if observation.desired_replicas is None:
        active = condition(ACTIVE, UNKNOWN, DEPLOYING)
    elif observation.desired_replicas == 0:
        timed_out = status_of(old, ACTIVE) == UNKNOWN and (find(old, ACTIVE) or {}).get("reason") == QUEUED and not initialized
        active = (condition(ACTIVE, FALSE, "TimedOut", "The target could not be activated.") if timed_out
                  else condition(ACTIVE, FALSE, NO_TRAFFIC, "The target is not receiving traffic."))
    elif observation.ready_replicas < threshold:
        active = condition(ACTIVE, UNKNOWN, QUEUED, "Requests to the target are being buffered as resources are provisioned.")
    else:
        active = condition(ACTIVE, TRUE)

    ready = ready_from([resources, healthy])
    status: dict[str, Any] = {
        "observedGeneration": (revision.get("metadata") or {}).get("generation", 1),
        "conditions": stamped([resources, healthy, active, ready], old, now),
        "actualReplicas": observation.ready_replicas,
    }
    if observation.desired_replicas is not None:
        status["desiredReplicas"] = observation.desired_replicas
    return status


def is_ready(revision: KubeObject) -> bool:
    return status_of((revision.get("status") or {}).get("conditions"), READY) == TRUE


def latest_ready_revision(service_name: str, revisions: list[KubeObject], previous_latest_ready: str | None) -> str | None:
    """Knative's ``findAndSetLatestReadyRevision``: the newest ready revision at or after the previous
    latest ready one; when none is ready the previous one stays."""
    own = revisions_of(service_name, revisions)
    floor = next((configuration_generation(r) for r in own if r["metadata"]["name"] == previous_latest_ready), 0)
    for revision in reversed(own):
        if configuration_generation(revision) < floor:
            break
        if is_ready(revision):
            return str(revision["metadata"]["name"])
    return previous_latest_ready if any(r["metadata"]["name"] == previous_latest_ready for r in own) else None


def service_status(
    ksvc: KubeObject,
    revisions: list[KubeObject],
    previous: dict[str, Any] | None = None,
    *,
    domain: str = "example.com",
    scheme: str = "http",
    now: datetime,
) -> dict[str, Any]:
    """The Knative Service's ``status`` from its revisions (each carrying its ``status``).

    Traffic that cannot be assigned keeps the previous ``traffic`` (the route goes on serving it) and
    says why in ``RoutesReady``.
    """
    previous = previous or {}
    meta = ksvc["metadata"]
    name, namespace = meta["name"], meta.get("namespace") or "default"
    own = revisions_of(name, revisions)
    latest = latest_created(ksvc, own)
    latest_ready = latest_ready_revision(name, own, previous.get("latestReadyRevisionName"))

    configuration = _configuration_condition(latest, latest_ready, previous.get("latestReadyRevisionName"), own)
    latest_failed = configuration["status"] == FALSE
    try:
        targets = resolve_traffic(ksvc, own, latest_ready, latest_created_failed=latest_failed, domain=domain, scheme=scheme)
        traffic = [t.to_dict() for t in targets]
        routes = condition(ROUTES_READY, TRUE)
    except TrafficError as exc:
        traffic = list(previous.get("traffic") or [])
        routes = condition(ROUTES_READY, FALSE if exc.failed else UNKNOWN, exc.reason, exc.message)

    status: dict[str, Any] = {
        "observedGeneration": meta.get("generation", 1),
        "conditions": stamped([configuration, routes, ready_from([configuration, routes])], previous.get("conditions"), now),
        "url": names.route_url(name, namespace, domain, scheme=scheme),
        "address": {"url": names.cluster_local_url(name, namespace)},
    }
    if latest is not None:
        status["latestCreatedRevisionName"] = latest["metadata"]["name"]
    if latest_ready:
        status["latestReadyRevisionName"] = latest_ready
    if traffic:
        status["traffic"] = traffic
    return status


def _configuration_condition(
    latest: KubeObject | None, latest_ready: str | None, previous_latest_ready: str | None, own: list[KubeObject]
) -> dict[str, Any]:
    """``ConfigurationsReady`` as the Configuration's Ready: True when the latest created revision is the
    latest ready one, False when it failed (or the latest ready one was deleted), else Unknown."""
    if latest is None:
        return condition(CONFIGURATIONS_READY, UNKNOWN)
    name = latest["metadata"]["name"]
    state = status_of((latest.get("status") or {}).get("conditions"), READY)
    if state == FALSE:
        message = (find(latest["status"]["conditions"], READY) or {}).get("message", "")
        return condition(CONFIGURATIONS_READY, FALSE, "RevisionFailed", f"Revision {name!r} failed with message: {message}.")
    if previous_latest_ready and not any(r["metadata"]["name"] == previous_latest_ready for r in own):
        return condition(CONFIGURATIONS_READY, FALSE, "RevisionDeleted", f"Revision {previous_latest_ready!r} was deleted.")
    if latest_ready == name:
        return condition(CONFIGURATIONS_READY, TRUE)
    return condition(CONFIGURATIONS_READY, UNKNOWN)
