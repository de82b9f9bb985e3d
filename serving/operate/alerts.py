"""Alerts on transitions: a deployment that becomes unhealthy or breaks its SLO, and one that recovers.

``transitions`` compares each deployment's state now with the one remembered from the previous run, so a
deployment that stays bad alerts once, not every minute; ``webhook`` POSTs them as JSON to a receiver. A
receiver that fails is reported, never raised: alerting must not stop the operate run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import httpx
from pydantic import BaseModel, Field

from serving.operate.assess import Assessment

log = logging.getLogger(__name__)

OK = "ok"
WEBHOOK_TIMEOUT = 5.0
Severity = Literal["critical", "warning", "resolved"]
_SEVERITY: dict[str, Severity] = {"crash-loop": "critical", "not-ready": "critical", "slo-breached": "warning"}


class Alert(BaseModel):
    """One deployment's change of state; ``values`` are the window's figures that show it."""

    deployment: str  # namespace/name
    kind: str
    severity: Severity
    state: str
    previous: str
    reason: str
    values: dict[str, float | int | str | None] = Field(default_factory=dict)
    model_name: str | None = None
    model_version: str | None = None
    at: float = Field(default_factory=time.time)

    def line(self) -> str:
        version = f" ({self.model_name} v{self.model_version})" if self.model_name else ""
        return f"[{self.severity}] {self.deployment}{version}: {self.previous} -> {self.state}: {self.reason}"


@dataclass(frozen=True)
class Delivery:
    """What happened to one channel's delivery (``channel``: ``webhook`` or the block's name)."""

    channel: str
    ok: bool
    detail: str = ""


def transitions(assessments: Iterable[Assessment], remembered: Mapping[str, str]) -> list[Alert]:
    """An alert for every deployment whose state differs from the remembered one (unknown counts as ``ok``:
    a new deployment that is fine says nothing, one that is already broken alerts)."""
    alerts = []
    for assessment in assessments:
        state, previous = assessment.state, remembered.get(assessment.key, OK)
        if state == previous:
            continue
        served, health, traffic = assessment.served, assessment.health, assessment.traffic
        if state == OK:
            severity: Severity = "resolved"
            reason = "healthy again and within its SLO"
        else:
            severity = _SEVERITY.get(state, "warning")
            reason = "; ".join(assessment.slo.reasons) if state == "slo-breached" else health.reason or state
        values: dict[str, float | int | str | None] = {
            "ready_replicas": health.ready_replicas, "desired_replicas": health.desired_replicas,
            "restarts": health.restarts, "new_restarts": health.new_restarts,
            "request_rate": round(traffic.request_rate, 4), "error_rate": round(traffic.error_rate, 4),
            "p50_ms": traffic.p50_ms, "p95_ms": traffic.p95_ms}
        alerts.append(Alert(deployment=served.key, kind=served.kind, severity=severity, state=state, previous=previous,
                            reason=reason, values=values, model_name=served.model_name, model_version=served.model_version))
    return alerts


def remembered_states(previous: Mapping[str, str], assessments: Iterable[Assessment], delivered: bool,
                      live: Iterable[str]) -> dict[str, str]:
    """The states to remember after this run: the assessed ones when the alerts got out (or there was no
    channel), else the old ones for what changed, so the next run tries again. Deployments not assessed
    (another namespace) keep theirs; those no longer ``live`` on the platform are forgotten."""
    alive = set(live)
    out = {key: state for key, state in previous.items() if key in alive}
    for assessment in assessments:
        if delivered or out.get(assessment.key, OK) == assessment.state:
            out[assessment.key] = assessment.state
    return out


def message(alerts: list[Alert]) -> tuple[str, str]:
    """(subject, body) for a notification channel that takes text."""
    bad = [a for a in alerts if a.severity != "resolved"]
    subject = f"odh: {len(bad)} deployment(s) need attention" if bad else f"odh: {len(alerts)} deployment(s) recovered"
    return subject, "\n".join(a.line() for a in alerts)


def webhook(url: str, alerts: list[Alert], *, timeout: float = WEBHOOK_TIMEOUT) -> Delivery:
    """POST ``{"source": "odh-operate", "alerts": [...]}`` to ``url``; any failure is returned, not raised."""
    payload = {"source": "odh-operate", "alerts": [a.model_dump(mode="json") for a in alerts]}
    try:
        response = httpx.post(url, json=payload, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("alert webhook %s failed: %s", url, exc)
        return Delivery("webhook", False, f"{type(exc).__name__}: {exc}")
    return Delivery("webhook", True, f"HTTP {response.status_code}")
