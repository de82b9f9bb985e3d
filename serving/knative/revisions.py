"""Configuration -> Revisions, as Knative's configuration controller and labeler do it.

A Knative Service's ``spec.template`` is stamped into an immutable Revision each time it changes:
named ``{service}-{configurationGeneration:05d}`` (or the template's own ``metadata.name``), labelled
with the service, configuration and generation, owned by the Service. The route marks the revisions it
references ``active`` and the rest ``reserve``; reserve revisions are garbage collected by Knative's
``config-gc`` rules.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from serving.errors import ServingError
from serving.knative import names
from serving.knative.conditions import parse_timestamp, timestamp

KubeObject = dict[str, Any]

# Keys Knative itself writes on a Revision; everything else on it came from the template.
_MANAGED_LABELS = frozenset(
    {names.SERVICE_LABEL, names.SERVICE_UID_LABEL, names.CONFIGURATION_LABEL, names.CONFIGURATION_GENERATION_LABEL,
     names.ROUTE_LABEL, names.ROUTING_STATE_LABEL}
)
_MANAGED_ANNOTATIONS = frozenset({names.CREATOR_ANNOTATION, names.ROUTING_STATE_MODIFIED_ANNOTATION, names.ROUTES_ANNOTATION})


class RevisionNameTaken(ServingError):
    """``spec.template.metadata.name`` names a Revision that exists with another spec or owner."""

    reason = "RevisionNameTaken"

    def __init__(self, name: str) -> None:
        self.message = (f"The revision name {name!r} is taken by a conflicting Revision, so traffic will not be migrated; "
                        "change spec.template.metadata.name (or remove it) when you change the template")
        super().__init__(self.message)


@dataclass(frozen=True)
class GCConfig:
    """Knative's ``config-gc``: None disables a bound. Defaults are Knative's."""

    retain_since_create_time: timedelta | None = timedelta(hours=48)
    retain_since_last_active_time: timedelta | None = timedelta(hours=15)
    min_non_active_revisions: int = 20
    max_non_active_revisions: int | None = 1000


# --------------------------------------------------------------------------- reading revisions


def configuration_generation(revision: KubeObject) -> int:
    """The configuration generation a Revision was stamped from (0 when the label is missing or junk)."""
    value = ((revision.get("metadata") or {}).get("labels") or {}).get(names.CONFIGURATION_GENERATION_LABEL, "")
    return int(value) if str(value).isdigit() else 0


def revisions_of(service_name: str, revisions: list[KubeObject]) -> list[KubeObject]:
    """The revisions of one Service, oldest generation first."""
    own = [r for r in revisions if ((r.get("metadata") or {}).get("labels") or {}).get(names.SERVICE_LABEL) == service_name]
    return sorted(own, key=lambda r: (configuration_generation(r), r["metadata"]["name"]))


def latest_created(ksvc: KubeObject, revisions: list[KubeObject]) -> KubeObject | None:
    own = revisions_of(ksvc["metadata"]["name"], revisions)
    return own[-1] if own else None


def template_matches(template: KubeObject, revision: KubeObject) -> bool:
    """Whether ``revision`` was stamped from ``template``: same spec, same template name, labels and
    annotations once the keys Knative adds are set aside."""
    meta = template.get("metadata") or {}
    rev_meta = revision.get("metadata") or {}
    if meta.get("name") and meta["name"] != rev_meta.get("name"):
        return False
    labels = {k: v for k, v in (rev_meta.get("labels") or {}).items() if k not in _MANAGED_LABELS}
    annotations = {k: v for k, v in (rev_meta.get("annotations") or {}).items() if k not in _MANAGED_ANNOTATIONS}
    return (
        (template.get("spec") or {}) == (revision.get("spec") or {})
        and (meta.get("labels") or {}) == labels
        and (meta.get("annotations") or {}) == annotations
    )


# --------------------------------------------------------------------------- stamping


def desired_revision(ksvc: KubeObject, revisions: list[KubeObject], *, now: datetime) -> tuple[KubeObject, bool]:
    """The Revision for the Service's current template and whether it is new (to be stored).

    An unchanged template reuses the latest Revision; any change stamps the next generation. A template
    that names its Revision reuses it only when it is this Service's with the same spec; otherwise
    ``RevisionNameTaken`` (Knative's ``CheckNameAvailability``).
    """
    template = ksvc["spec"]["template"]
    wanted_name = (template.get("metadata") or {}).get("name")
    latest = latest_created(ksvc, revisions)
    if wanted_name:
        existing = next((r for r in revisions if r["metadata"]["name"] == wanted_name), None)
        if existing is not None:
            owned = (existing["metadata"].get("labels") or {}).get(names.SERVICE_LABEL) == ksvc["metadata"]["name"]
            if not owned or (existing.get("spec") or {}) != (template.get("spec") or {}):
                raise RevisionNameTaken(wanted_name)
            return existing, False
    elif latest is not None and template_matches(template, latest):
        return latest, False
    generation = (configuration_generation(latest) if latest else 0) + 1
    return make_revision(ksvc, generation, now=now), True


def make_revision(ksvc: KubeObject, configuration_generation: int, *, now: datetime) -> KubeObject:
    """Knative's ``MakeRevision``: the template's metadata and spec, plus the service's labels, the
    ``pending`` routing state and an owner reference to the Service."""
    meta = ksvc["metadata"]
    service = meta["name"]
    template = copy.deepcopy(ksvc["spec"]["template"])
    template_meta = template.get("metadata") or {}
    labels = {
        **(template_meta.get("labels") or {}),
        names.CONFIGURATION_LABEL: service,
        names.SERVICE_LABEL: service,
        names.CONFIGURATION_GENERATION_LABEL: str(configuration_generation),
        names.ROUTING_STATE_LABEL: names.ROUTING_PENDING,
    }
    if meta.get("uid"):
        labels[names.SERVICE_UID_LABEL] = meta["uid"]
    annotations = {**(template_meta.get("annotations") or {}), names.ROUTING_STATE_MODIFIED_ANNOTATION: timestamp(now)}
    updater = (meta.get("annotations") or {}).get(names.UPDATER_ANNOTATION)
    if updater:
        annotations[names.CREATOR_ANNOTATION] = updater
    metadata: KubeObject = {
        "name": template_meta.get("name") or names.revision_name(service, configuration_generation),
        "namespace": meta.get("namespace") or "default",
        "labels": labels,
        "annotations": annotations,
    }
    # The owner's uid is known once the Service is stored; a rendered Service has none yet.
    if meta.get("uid"):
        metadata["ownerReferences"] = [{
            "apiVersion": names.API_VERSION, "kind": names.SERVICE_KIND, "name": service, "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True,
        }]
    return {"apiVersion": names.API_VERSION, "kind": names.REVISION_KIND, "metadata": metadata, "spec": template.get("spec") or {}}


# --------------------------------------------------------------------------- routing state


def with_routing_state(revision: KubeObject, route: str, referenced: bool, *, now: datetime) -> KubeObject:
    """The revision labelled as the route sees it: ``active`` with the route named while traffic references
    it, ``reserve`` once none does. ``routingStateModified`` moves only when the state changes."""
    updated = copy.deepcopy(revision)
    meta = updated["metadata"]
    labels = meta.setdefault("labels", {})
    annotations = meta.setdefault("annotations", {})
    state = names.ROUTING_ACTIVE if referenced else names.ROUTING_RESERVE
    if labels.get(names.ROUTING_STATE_LABEL) != state or not annotations.get(names.ROUTING_STATE_MODIFIED_ANNOTATION):
        labels[names.ROUTING_STATE_LABEL] = state
        annotations[names.ROUTING_STATE_MODIFIED_ANNOTATION] = timestamp(now)
    if referenced:
        labels[names.ROUTE_LABEL] = route
        annotations[names.ROUTES_ANNOTATION] = route
    else:
        labels.pop(names.ROUTE_LABEL, None)
        annotations.pop(names.ROUTES_ANNOTATION, None)
    return updated


def routing_updates(service_name: str, revisions: list[KubeObject], referenced: set[str], *, now: datetime) -> list[KubeObject]:
    """The revisions of ``service_name`` whose routing labels change, relabelled (store these)."""
    changed = []
    for revision in revisions_of(service_name, revisions):
        updated = with_routing_state(revision, service_name, revision["metadata"]["name"] in referenced, now=now)
        if updated["metadata"] != revision["metadata"]:
            changed.append(updated)
    return changed


# --------------------------------------------------------------------------- garbage collection


def collectable(
    service_name: str, revisions: list[KubeObject], latest_ready: str | None, config: GCConfig, *, now: datetime
) -> list[str]:
    """Names of the revisions Knative's revision GC would delete now, oldest activity first.

    Never the latest ready revision, one marked ``serving.knative.dev/no-gc: "true"``, or one not in the
    ``reserve`` routing state; at least ``min_non_active_revisions`` non-active ones stay; stale ones
    (past both retain times) go; past ``max_non_active_revisions`` the oldest go regardless.
    """
    if (config.max_non_active_revisions is None and config.retain_since_create_time is None
            and config.retain_since_last_active_time is None):
        return []
    own = revisions_of(service_name, revisions)
    minimum = config.min_non_active_revisions
    if len(own) <= minimum:
        return []
    non_active = [r for r in own if not _is_active(r, latest_ready)]
    if len(non_active) <= minimum:
        return []
    non_active.sort(key=lambda r: _last_active(r) or now)
    deletable = len(non_active) - minimum
    doomed: list[str] = []
    for revision in non_active:
        if _is_stale(revision, config, now):
            doomed.append(revision["metadata"]["name"])
            if len(doomed) >= deletable:
                return doomed
    kept = [r for r in non_active if r["metadata"]["name"] not in doomed]
    if config.max_non_active_revisions is None or len(kept) <= config.max_non_active_revisions:
        return doomed
    return doomed + [r["metadata"]["name"] for r in kept[: len(kept) - config.max_non_active_revisions]]


def _is_active(revision: KubeObject, latest_ready: str | None) -> bool:
    meta = revision["metadata"]
    if meta["name"] == latest_ready:
        return True
    if str((meta.get("annotations") or {}).get(names.NO_GC_ANNOTATION, "")).lower() == "true":
        return True
    return (meta.get("labels") or {}).get(names.ROUTING_STATE_LABEL) != names.ROUTING_RESERVE


def _last_active(revision: KubeObject) -> datetime | None:
    meta = revision["metadata"]
    return (parse_timestamp((meta.get("annotations") or {}).get(names.ROUTING_STATE_MODIFIED_ANNOTATION))
            or parse_timestamp(meta.get("creationTimestamp")))


def _is_stale(revision: KubeObject, config: GCConfig, now: datetime) -> bool:
    since_create, since_active = config.retain_since_create_time, config.retain_since_last_active_time
    if since_create is None and since_active is None:
        return False
    created = parse_timestamp(revision["metadata"].get("creationTimestamp"))
    if since_create is not None and created is not None and now - created < since_create:
        return False
    active = _last_active(revision)
    return not (since_active is not None and active is not None and now - active < since_active)
