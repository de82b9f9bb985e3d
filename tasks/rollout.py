"""The rollout's steps: read the live deployment, apply the canary, wait for it, watch it, promote or roll back.

Each task is idempotent (an apply of the same manifest converges; tags and aliases are set, not added) and
calls into ``serving``: the manifests and the verdict are ``serving.rollout``'s, the objects the platform's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prefect import task

from serving.errors import NotFoundError
from serving.operate.scrape import scrape_gateway
from serving.platform import connect
from serving.registry import ROLLOUT_REASON_TAG, ROLLOUT_STATUS_TAG, SUPERSEDED, RegisteredVersion
from serving.rollout import (
    Decision,
    RolloutPlan,
    Step,
    Thresholds,
    analysis_targets,
    canary_failure,
    canary_ready,
    figures,
    judge,
)
from tasks._common import RETRIES, RETRY_DELAYS, gateway_url, registry_for, resolve_state, retry_on_transient

CANARY_READY_TIMEOUT_S = 180.0
POLL_S = 0.5
# Rollout outcomes kept on the MLflow version.
PROMOTED, ROLLED_BACK = "promoted", "rolled-back"


class CanaryNotReady(RuntimeError):
    """The canary never became Ready (or the platform says it cannot): the rollout rolls it back."""


@dataclass
class Watch:
    """What watching the canary saw: the verdict and each poll's line for the timeline."""

    decision: Decision
    stable_revision: str
    canary_revision: str
    seconds: float
    lines: list[str] = field(default_factory=list)


@task(name="read-deployment", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def read_deployment(name: str, namespace: str, state: str | None = None) -> dict[str, Any] | None:
    """The live InferenceService, or None when nothing is deployed under that name."""
    try:
        return connect(resolve_state(state)).get("InferenceService", namespace, name)
    except NotFoundError:
        return None


@task(name="apply-canary", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def apply_canary(plan: RolloutPlan, state: str | None = None) -> dict[str, Any]:
    return connect(resolve_state(state)).apply(plan.canary)


@task(name="wait-canary")
def wait_canary(plan: RolloutPlan, applied: dict[str, Any], timeout: float = CANARY_READY_TIMEOUT_S,
                state: str | None = None) -> dict[str, Any]:
    """Wait until the canary is Ready and takes its share; CanaryNotReady when it fails or time runs out."""
    platform = connect(resolve_state(state))
    meta = applied["metadata"]
    deadline = time.monotonic() + timeout
    while True:
        live = platform.get("InferenceService", meta["namespace"], meta["name"])
        if canary_ready(live, plan, meta.get("generation")):
            return live
        failure = canary_failure(live, plan)
        if failure is not None:
            raise CanaryNotReady(f"the canary failed to become Ready: {failure}")
        if time.monotonic() >= deadline:
            raise CanaryNotReady(f"the canary was not Ready after {timeout:g} s")
        time.sleep(POLL_S)


@task(name="watch-canary")
def watch_canary(plan: RolloutPlan, live: dict[str, Any], thresholds: Thresholds, window: float,
                 state: str | None = None) -> Watch:
    """Scrape the gateway's per-revision metrics until the verdict is promote or rollback."""
    platform = connect(resolve_state(state))
    stable_rev, canary_rev = analysis_targets(live, plan)
    namespace = live["metadata"]["namespace"]
    gateway = gateway_url(platform)
    if gateway is None:
        raise RuntimeError("canary analysis reads the embedded platform's gateway metrics; this platform has none")
    before = scrape_gateway(gateway, timeout=10.0)
    started = time.monotonic()
    lines: list[str] = []
    while True:
        time.sleep(POLL_S)
        now = scrape_gateway(gateway, timeout=10.0)
        elapsed = time.monotonic() - started
        decision = judge(figures(before, now, namespace, stable_rev), figures(before, now, namespace, canary_rev),
                         thresholds, elapsed=elapsed, window=window)
        lines.append(f"{elapsed:.1f} s: stable {decision.stable.requests} req / {decision.stable.errors} 5xx, canary "
                     f"{decision.canary.requests} req / {decision.canary.errors} 5xx: {decision.verdict}")
        if decision.verdict != "watch":
            return Watch(decision, stable_rev, canary_rev, elapsed, lines)


@task(name="apply-steps", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def apply_steps(steps: list[Step], timeout: float = CANARY_READY_TIMEOUT_S, state: str | None = None) -> dict[str, Any]:
    """Apply each step in turn, waiting for Ready where the step says; the last live object."""
    platform = connect(resolve_state(state))
    live: dict[str, Any] = {}
    for step in steps:
        applied = platform.apply(step.manifest)
        meta = applied["metadata"]
        live = (platform.wait_ready("InferenceService", meta["namespace"], meta["name"], timeout,
                                    generation=meta.get("generation")) if step.wait_ready else applied)
    return live


@task(name="record-promotion", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def record_promotion(version: RegisteredVersion, previous: tuple[str, str] | None, alias: str | None, reason: str,
                     state: str | None = None) -> None:
    """Only now does the alias move; the version says it was promoted and why, the one before is superseded."""
    registry = registry_for(resolve_state(state))
    registry.set_version_tags(version.name, version.version, {ROLLOUT_STATUS_TAG: PROMOTED, ROLLOUT_REASON_TAG: reason})
    if alias:
        registry.set_alias(version.name, alias, version.version)
    if previous is not None and previous != (version.name, version.version):
        registry.set_deployment_status(previous[0], previous[1], SUPERSEDED)


@task(name="record-rollback", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def record_rollback(version: RegisteredVersion, reason: str, state: str | None = None) -> None:
    """The alias stays where it is; the version says it was rolled back and why."""
    registry_for(resolve_state(state)).set_version_tags(
        version.name, version.version, {ROLLOUT_STATUS_TAG: ROLLED_BACK, ROLLOUT_REASON_TAG: reason[:5000]})
