"""``rollout``: a new model version goes in as a canary, is watched against the stable one, then promoted or
rolled back; only a promotion moves the alias. The stable version answers throughout.

Nothing deployed yet: the version is deployed (``deploy-model`` as a subflow, outcome ``deployed``). The
same version already serving: ``unchanged``. Parameters left None come from the deployment's lifecycle
policy annotations (``serving.lifecycle``), else their defaults.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.deploy_model import deploy_model
from flows.naming import name_run, run_name
from serving.lifecycle import LifecyclePolicy
from serving.registry import RegisteredVersion
from serving.rollout import Decision, NewVersion, RevisionFigures, RolloutPlan, Thresholds, plan_rollout, serving_version
from tasks.register import register
from tasks.register_service import register_service
from tasks.rollout import (
    Watch,
    apply_canary,
    apply_steps,
    read_deployment,
    record_promotion,
    record_rollback,
    wait_canary,
    watch_canary,
)
from tasks.upload import upload


@dataclass(frozen=True)
class RolloutResult:
    name: str
    namespace: str
    model_name: str
    model_version: str
    outcome: str  # deployed | promoted | rolled-back | unchanged
    reason: str
    url: str


class _Timeline:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.events: list[str] = []

    def __call__(self, event: str) -> None:
        get_run_logger().info("rollout: %s", event)
        self.events.append(f"| {time.monotonic() - self.started:.1f} s | {event} |")


@flow(name="rollout", flow_run_name="rollout-{name}")
def rollout(
    model_uri: str,
    name: str,
    namespace: str = "default",
    model_format: str | None = None,
    registered_model_name: str | None = None,
    alias: str | None = "champion",
    canary_percent: int | None = None,
    analysis_seconds: float | None = None,
    max_error_rate: float | None = None,
    max_latency_ratio: float | None = None,
    min_requests: int = 20,
    strategy: Literal["canary", "direct"] | None = None,
    state_dir: str | None = None,
) -> RolloutResult:
    """Canary ``model_uri`` into the InferenceService ``name`` at ``canary_percent`` %, watch it for
    ``analysis_seconds`` against the stable version (5xx share, p95 ratio, at least ``min_requests``), then
    promote it (the alias moves) or roll it back (the alias stays; the version is tagged with the reason).

    ``strategy`` None follows the deployment's ``serving.odh.io/rollout-strategy``: ``direct`` replaces the
    version with no canary (a version that never gets Ready is rolled back); ``canary`` and ``manual`` (a
    person asked for this rollout) watch a canary."""
    timeline = _Timeline()
    live = read_deployment(name, namespace, state=state_dir)
    if live is None:
        deployed = deploy_model(model_uri, name, namespace=namespace, model_format=model_format,
                                registered_model_name=registered_model_name, alias=alias, state_dir=state_dir)
        name_run(f"rollout-{run_name(name, deployed.model_version)}")
        result = RolloutResult(name, namespace, deployed.model_name, deployed.model_version, "deployed",
                               "nothing was serving: deployed directly", deployed.url)
        _artifact(result, timeline, None, None)
        return result
    # Validate the policy and the thresholds before anything is uploaded or changed.
    policy = LifecyclePolicy.from_annotations((live.get("metadata") or {}).get("annotations"))
    percent = canary_percent if canary_percent is not None else policy.canary_percent
    window = analysis_seconds if analysis_seconds is not None else policy.analysis_seconds
    if not window > 0:
        raise ValueError(f"analysis_seconds {window} must be above 0")
    thresholds = Thresholds(max_error_rate if max_error_rate is not None else policy.max_error_rate,
                            max_latency_ratio if max_latency_ratio is not None else policy.max_latency_ratio,
                            min_requests)

    uploaded = upload(model_uri, model_format, state=state_dir)
    version = register(registered_model_name or name, uploaded, None, state=state_dir)  # the alias waits
    name_run(f"rollout-{run_name(name, version.version)}")
    url = (live.get("status") or {}).get("url", "")
    previous = serving_version(live)
    timeline(f"{version.name} version {version.version} registered; serving now: "
             f"{'/'.join(previous) if previous else 'unknown version'}")
    if previous == (version.name, version.version):
        result = RolloutResult(name, namespace, version.name, version.version, "unchanged",
                               f"version {version.version} already serves {namespace}/{name}", url)
        _artifact(result, timeline, None, None)
        return result

    plan = plan_rollout(live, NewVersion(version.name, version.version, version.source), percent,
                        uploaded.model_format)
    if (strategy or policy.rollout_strategy) == "direct":
        return _direct(plan, version, previous, alias, url, timeline, state_dir)
    timeline(f"{plan.mode} canary at {percent} %, window {window:g} s, max 5xx {thresholds.max_error_rate:g}, "
             f"max p95 ratio {thresholds.max_latency_ratio:g}, min {min_requests} requests")
    watched: Watch | None = None
    decision: Decision | None = None
    try:
        applied = apply_canary(plan, state=state_dir)
        timeline(f"canary applied (generation {applied['metadata'].get('generation')})")
        try:
            ready = wait_canary(plan, applied, state=state_dir)
        except Exception as exc:  # any reason the canary is not Ready is a reason to roll back
            reason = f"canary never became Ready: {exc}"
        else:
            timeline("canary Ready and taking traffic")
            watched = watch_canary(plan, ready, thresholds, window, state=state_dir)
            for line in watched.lines[:: max(1, len(watched.lines) // 10)]:
                timeline(f"watch {line}")
            decision = watched.decision
            reason = decision.reason
    except BaseException:
        # A failed step leaves the stable version serving: put it back, then fail the run.
        apply_steps(plan.rollback, state=state_dir)
        record_rollback(version, "the rollout failed before a verdict; see the flow run", state=state_dir)
        raise
    if decision is not None and decision.verdict == "promote":
        live = apply_steps(plan.promote, state=state_dir)
        record_promotion(version, previous, alias, reason, state=state_dir)
        url = register_service(version, live, state=state_dir)
        timeline(f"promoted: {reason}; alias {alias or '(none)'} -> version {version.version}")
        outcome = "promoted"
    else:
        apply_steps(plan.rollback, state=state_dir)
        record_rollback(version, reason, state=state_dir)
        timeline(f"rolled back: {reason}; alias {alias or '(none)'} stays")
        outcome = "rolled-back"
    result = RolloutResult(name, namespace, version.name, version.version, outcome, reason, url)
    _artifact(result, timeline, watched, version)
    return result


def _direct(plan: RolloutPlan, version: RegisteredVersion, previous: tuple[str, str] | None, alias: str | None,
            url: str, timeline: _Timeline, state_dir: str | None) -> RolloutResult:
    """The ``direct`` strategy: replace the version in place; the old one serves until the new one is Ready."""
    meta = plan.stable["metadata"]
    timeline(f"{plan.mode}: direct replacement, no canary")
    try:
        live = apply_steps(plan.direct, state=state_dir)
    except Exception as exc:  # never Ready (or refused): the old version goes back, as a canary's would
        reason = f"the new version never became Ready: {exc}"
        apply_steps(plan.rollback[-1:], state=state_dir)
        record_rollback(version, reason, state=state_dir)
        timeline(f"rolled back: {reason}")
        result = RolloutResult(meta["name"], meta["namespace"], version.name, version.version, "rolled-back", reason, url)
    else:
        reason = "direct strategy: replaced without a canary"
        record_promotion(version, previous, alias, reason, state=state_dir)
        url = register_service(version, live, state=state_dir)
        timeline(f"promoted: {reason}; alias {alias or '(none)'} -> version {version.version}")
        result = RolloutResult(meta["name"], meta["namespace"], version.name, version.version, "promoted", reason, url)
    _artifact(result, timeline, None, version)
    return result


def _artifact(result: RolloutResult, timeline: _Timeline, watched: Watch | None, version: RegisteredVersion | None) -> None:
    lines = [f"# {result.namespace}/{result.name}: {result.model_name} version {result.model_version} {result.outcome}",
             "", f"**Verdict:** {result.outcome}. **Reason:** {result.reason}", ""]
    if watched is not None:
        lines += _figures_table(watched.decision, watched)
    lines += ["", "## Timeline", "", "| t | event |", "|---|---|", *timeline.events]
    if version is not None:
        lines += ["", f"Source: `{version.source}`"]
    create_markdown_artifact(key=f"rollout-{result.namespace}-{result.name}".lower(), markdown="\n".join(lines),
                             description=f"rollout {result.namespace}/{result.name}: {result.outcome}")


def _figures_table(decision: Decision, watched: Watch) -> list[str]:
    def row(side: str, figures: RevisionFigures) -> str:
        p95 = f"{figures.p95_seconds * 1000:.1f} ms" if figures.p95_seconds is not None else "-"
        return (f"| {side} | `{figures.revision}` | {figures.requests} | {figures.errors} | "
                f"{figures.error_rate * 100:.1f} % | {p95} |")

    return [f"## Stable vs canary over {watched.seconds:.1f} s", "",
            "| | revision | requests | 5xx | 5xx share | p95 |", "|---|---|---|---|---|---|",
            row("stable", decision.stable), row("canary", decision.canary)]
