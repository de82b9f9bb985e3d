"""Route traffic: validate a Service's ``spec.traffic`` and resolve it to concrete revisions.

As Knative's route controller (``pkg/reconciler/route/traffic``): ``latestRevision: true`` means the
configuration's latest *ready* revision; a pinned ``revisionName`` must exist, belong to this Service
and be ready; targets naming the same revision with the same tag are merged. Any unusable target fails
the whole resolution (the route keeps serving what it served before) with Knative's reason and message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from serving.errors import FieldError, ServingError
from serving.knative import names
from serving.knative.conditions import READY, TRUE, status_of

KubeObject = dict[str, Any]

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class TrafficError(ServingError):
    """The traffic cannot be assigned yet (``failed`` False: waiting) or at all (``failed`` True)."""

    def __init__(self, reason: str, message: str, *, failed: bool) -> None:
        self.reason = reason
        self.message = message
        self.failed = failed
        super().__init__(f"{reason}: {message}")


@dataclass(frozen=True)
class TrafficTarget:
    """One resolved entry of ``status.traffic``."""

    revision_name: str
    percent: int
    tag: str = ""
    latest_revision: bool = False
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"revisionName": self.revision_name, "percent": self.percent, "latestRevision": self.latest_revision}
        if self.tag:
            out["tag"] = self.tag
        if self.url:
            out["url"] = self.url
        return out


def spec_traffic(ksvc: KubeObject) -> list[dict[str, Any]]:
    """``spec.traffic`` with Knative's Service defaults: none means all to the latest revision, and a
    target without ``latestRevision`` floats to the latest unless it pins a revision."""
    traffic = (ksvc.get("spec") or {}).get("traffic") or [{"latestRevision": True, "percent": 100}]
    return [{**t, "latestRevision": t.get("latestRevision", not t.get("revisionName"))} for t in traffic]


def validate_traffic(traffic: Any, field: str = "spec.traffic") -> list[FieldError]:
    """Knative's ``validateTrafficList`` for a Service (no ``configurationName``; ``url`` only in status)."""
    if traffic is None:
        return []
    if not isinstance(traffic, list):
        return [FieldError(field, "must be a list of traffic targets (revisionName or latestRevision, percent, tag)")]
    errors: list[FieldError] = []
    tags: dict[str, int] = {}
    total = 0
    for i, target in enumerate(traffic):
        path = f"{field}[{i}]"
        if not isinstance(target, dict):
            errors.append(FieldError(path, "must be a mapping with revisionName or latestRevision and a percent"))
            continue
        revision, latest = target.get("revisionName"), target.get("latestRevision")
        if target.get("configurationName"):
            errors.append(FieldError(f"{path}.configurationName", "is not allowed in a Service; use latestRevision: true"))
        if latest is not None and bool(revision) == bool(latest):
            errors.append(FieldError(f"{path}.latestRevision",
                                     f"may not set revisionName {revision or ''!r} when latestRevision is {str(bool(latest)).lower()}"))
        percent = target.get("percent")
        if percent is not None:
            if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
                errors.append(FieldError(f"{path}.percent", f"is {percent!r}; use a whole number from 0 to 100"))
            else:
                total += percent
        if target.get("url"):
            errors.append(FieldError(f"{path}.url", "is set by the platform in status; remove it from spec"))
        tag = target.get("tag")
        if tag:
            if not isinstance(tag, str) or not _DNS1035.match(tag) or len(tag) > 63:
                errors.append(FieldError(f"{path}.tag", f"{tag!r} is not a DNS-1035 label (lower-case letters, digits, '-')"))
            elif tag in tags:
                errors.append(FieldError(f"{path}.tag", f"multiple definitions for {tag!r} (also {field}[{tags[tag]}].tag)"))
            else:
                tags[tag] = i
    if traffic and total != 100:
        errors.append(FieldError(field, f"traffic targets sum to {total}, want 100"))
    return errors


def resolve_traffic(
    ksvc: KubeObject,
    revisions: list[KubeObject],
    latest_ready: str | None,
    *,
    latest_created_failed: bool = False,
    domain: str = "example.com",
    scheme: str = "http",
) -> list[TrafficTarget]:
    """The Service's traffic as concrete (revision, percent, tag, url) targets; raises ``TrafficError``.

    ``latest_ready`` is the configuration's latest ready revision; ``latest_created_failed`` says the
    configuration has failed (so a target waiting for a ready revision fails rather than waits).
    """
    meta = ksvc["metadata"]
    service, namespace = meta["name"], meta.get("namespace") or "default"
    by_name = {r["metadata"]["name"]: r for r in revisions}
    deferred: TrafficError | None = None
    resolved: list[TrafficTarget] = []
    for target in spec_traffic(ksvc):
        tag = target.get("tag") or ""
        try:
            if target["latestRevision"]:
                revision_name = _latest_ready(service, latest_ready, by_name, latest_created_failed)
            else:
                revision_name = _pinned(service, target["revisionName"], by_name)
        except TrafficError as exc:
            # As Knative: keep looking so that a real failure wins over a revision still starting.
            if deferred is None or exc.failed:
                deferred = exc
            continue
        url = names.route_url(service, namespace, domain, tag, scheme) if tag else None
        entry = TrafficTarget(revision_name, int(target.get("percent") or 0), tag, bool(target["latestRevision"]), url)
        resolved = _merged(resolved, entry)
    if deferred is not None:
        raise deferred
    return resolved


def referenced_revisions(targets: list[TrafficTarget] | list[dict[str, Any]]) -> set[str]:
    """Every revision a traffic list names, tagged or at 0 % included (Knative keeps them active)."""
    return {t.revision_name if isinstance(t, TrafficTarget) else t["revisionName"] for t in targets}


def _latest_ready(service: str, latest_ready: str | None, by_name: dict[str, KubeObject], failed: bool) -> str:
    if not latest_ready:
        if failed:
            raise TrafficError("RevisionMissing", f"Configuration {service!r} does not have any ready Revision.", failed=True)
        raise TrafficError("RevisionMissing", f"Configuration {service!r} is waiting for a Revision to become ready.", failed=False)
    revision = by_name.get(latest_ready)
    if revision is None:
        raise TrafficError("RevisionMissing", f"Revision {latest_ready!r} referenced in traffic not found.", failed=True)
    _require_ready(revision)
    return latest_ready


def _pinned(service: str, name: str, by_name: dict[str, KubeObject]) -> str:
    revision = by_name.get(name)
    if revision is None:
        raise TrafficError("RevisionMissing", f"Revision {name!r} referenced in traffic not found.", failed=True)
    owner = (revision["metadata"].get("labels") or {}).get(names.SERVICE_LABEL, "")
    if owner != service:
        why = f"belongs to Service {owner!r}, not Service {service!r}" if owner else f"does not belong to Service {service!r}"
        raise TrafficError("NotOwned", f"Revision {name!r} {why}", failed=True)
    _require_ready(revision)
    return name


def _require_ready(revision: KubeObject) -> None:
    name = revision["metadata"]["name"]
    state = status_of((revision.get("status") or {}).get("conditions"), READY)
    if state == TRUE:
        return
    if state == "False":
        raise TrafficError("RevisionMissing", f"Revision {name!r} failed to become ready.", failed=True)
    raise TrafficError("RevisionMissing", f"Revision {name!r} is not yet ready.", failed=False)


def _merged(targets: list[TrafficTarget], entry: TrafficTarget) -> list[TrafficTarget]:
    """Knative's ``mergeIfNecessary``: the same revision under the same tag and sense adds up."""
    for i, existing in enumerate(targets):
        if (existing.tag, existing.revision_name, existing.latest_revision) == (entry.tag, entry.revision_name, entry.latest_revision):
            return [*targets[:i], TrafficTarget(entry.revision_name, existing.percent + entry.percent, entry.tag,
                                                entry.latest_revision, entry.url), *targets[i + 1:]]
    return [*targets, entry]
