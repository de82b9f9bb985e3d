"""``on-new-model-version`` and ``poll-model-versions``: a new registry version reaches the deployments that
serve its model, each as its lifecycle policy says.

Started three ways: by MLflow's webhooks through the receiver (deployments/webhooks.py), by the polling
flow on a schedule for registries without webhooks, and by hand or CI (``prefect deployment run
on-new-model-version/on-new-model-version -p model_name=iris -p version=3``).

Per deployment (serving/registry/webhooks.py ``decide``): ``manual`` does nothing and says so; a watched
alias acts on that alias's moves only; otherwise a version newer than the one serving is rolled out with
``rollout`` (``models:/NAME/VERSION``). Canary share, window and thresholds are left to ``rollout``, which
reads them, and the strategy (``direct`` included), from the same deployment's annotations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.naming import run_name
from serving.registry.webhooks import Decision, NewVersionEvent, Served, decide, unseen_versions
from tasks.on_new_version import find_deployments, read_seen, registry_versions, remember_seen, version_format


@dataclass(frozen=True)
class DeploymentOutcome:
    """What one deployment did about the new version."""

    namespace: str
    name: str
    action: str  # "rollout" or "skip"
    reason: str
    outcome: str | None = None  # rollout's outcome: deployed, promoted, rolled-back, unchanged; "failed"


def _new_version_run_name() -> str:
    params = flow_run.parameters
    return run_name(str(params.get("model_name", "model")), str(params.get("version", "")) or None)


@flow(name="on-new-model-version", flow_run_name=_new_version_run_name, log_prints=False)
def on_new_model_version(
    model_name: str,
    version: str,
    alias: str | None = None,
    state_dir: str | None = None,
) -> list[DeploymentOutcome]:
    """Roll registry version ``version`` of ``model_name`` out to every deployment serving the model, as
    each one's lifecycle policy says. ``alias``: the alias that was just pointed at the version (an alias
    event), or none for a newly created version."""
    logger = get_run_logger()
    if not version.isdigit():
        raise ValueError(f"version {version!r} is not a registry version number: pass e.g. version=3")
    event = NewVersionEvent("model_version_alias.created" if alias else "model_version.created", model_name, version, alias)
    served = find_deployments(model_name, state=state_dir).get(model_name, [])
    outcomes: list[DeploymentOutcome] = []
    failures: list[str] = []
    decisions = [decide(event, target) for target in served]
    model_format = version_format(model_name, version, state=state_dir) if any(
        d.act == "rollout" for d in decisions) else None
    for decision in decisions:
        logger.info("%s/%s: %s: %s", decision.namespace, decision.name, decision.act, decision.reason)
        if decision.act == "skip":
            outcomes.append(DeploymentOutcome(decision.namespace, decision.name, "skip", decision.reason))
            continue
        outcomes.append(_roll_out(event, decision, model_format, state_dir, failures))
    if not served:
        logger.info("no deployment serves %s: nothing to roll out", model_name)
    create_markdown_artifact(key=_key("on-new-version", model_name), markdown=_summary(event, outcomes),
                             description=f"on-new-model-version {model_name} v{version}")
    if failures:
        raise RuntimeError("; ".join(failures))
    return outcomes


def _roll_out(event: NewVersionEvent, decision: Decision, model_format: str | None, state_dir: str | None,
              failures: list[str]) -> DeploymentOutcome:
    """Run ``rollout`` as a subflow; a failure is recorded so the other deployments still get their turn."""
    from flows.rollout import rollout

    try:
        result = rollout(model_uri=f"models:/{event.model_name}/{event.version}", name=decision.name,
                         namespace=decision.namespace, model_format=model_format,
                         registered_model_name=event.model_name, state_dir=state_dir)
    except Exception as exc:  # a failed rollout of one deployment must not hide the others' outcomes
        failures.append(f"{decision.namespace}/{decision.name}: {exc}")
        return DeploymentOutcome(decision.namespace, decision.name, "rollout", f"{decision.reason}; failed: {exc}",
                                 "failed")
    return DeploymentOutcome(decision.namespace, decision.name, "rollout", f"{decision.reason}; {result.reason}",
                             result.outcome)


@dataclass(frozen=True)
class PolledVersion:
    """A version polling found and handed to ``on-new-model-version``."""

    model_name: str
    version: str
    alias: str | None
    state: str  # the subflow's final state name


@flow(name="poll-model-versions", log_prints=False)
def poll_model_versions(state_dir: str | None = None) -> list[PolledVersion]:
    """For registries without webhooks: start ``on-new-model-version`` for each model with a version newer
    than both the oldest one serving and the newest one already seen, and for each watched alias that
    moved. Only the newest new version of a model goes (older new ones are superseded). What was acted on
    is remembered in ``<state>/poll-seen.json`` once its run succeeded, so a second poll starts nothing and
    a failed run is retried by the next poll."""
    logger = get_run_logger()
    served_by_model = find_deployments(None, state=state_dir)
    seen = read_seen(state=state_dir)
    polled: list[PolledVersion] = []
    for model_name, served in sorted(served_by_model.items()):
        record: dict[str, Any] = dict(seen.get(model_name) or {})
        seen_aliases: dict[str, str] = dict(record.get("aliases") or {})
        watched = sorted({s.watch_alias for s in served if s.watch_alias})
        versions, pointed = registry_versions(model_name, watched, state=state_dir)
        events: list[NewVersionEvent] = []
        newest = unseen_versions(versions, [s.serving_version for s in served], record.get("version"))
        if newest is not None:
            events.append(NewVersionEvent("model_version.created", model_name, newest))
        for alias, target in sorted(pointed.items()):
            behind = any(s.watch_alias == alias and s.serving_version != target for s in served)
            if seen_aliases.get(alias) != target and behind:
                events.append(NewVersionEvent("model_version_alias.created", model_name, target, alias))
        for event in events:
            state = on_new_model_version(event.model_name, event.version, event.alias, state_dir, return_state=True)
            polled.append(PolledVersion(event.model_name, event.version, event.alias, state.name or state.type.value))
            if not state.is_completed():
                logger.warning("%s v%s: on-new-model-version ended %s; the next poll tries again",
                               event.model_name, event.version, state.name)
                continue
            if event.alias is None:
                record["version"] = event.version
            else:
                seen_aliases[event.alias] = event.version
        if newest is None and versions:  # keep the floor moving even when nothing was new to roll out
            record.setdefault("version", max(versions, key=int))
        record["aliases"] = seen_aliases
        seen[model_name] = record
        remember_seen(seen, state=state_dir)
    create_markdown_artifact(key="poll-model-versions", markdown=_poll_summary(served_by_model, polled),
                             description="poll-model-versions")
    return polled


def _key(prefix: str, name: str) -> str:
    # Artifact keys take lower-case letters, digits and dashes only.
    return f"{prefix}-{re.sub(r'[^a-z0-9-]+', '-', name.lower())}".strip("-")


def _summary(event: NewVersionEvent, outcomes: list[DeploymentOutcome]) -> str:
    source = f"alias `{event.alias}` moved to it" if event.alias else "newly created"
    lines = [f"# {event.model_name} version {event.version}", "", f"Event: {source}.", ""]
    if not outcomes:
        lines.append(f"No deployment serves `{event.model_name}` (label `odh.serving/registered-model`): nothing to roll out.")
        return "\n".join(lines)
    lines += ["| Deployment | Action | Outcome | Why |", "|---|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.namespace}/{o.name} | {o.action} | {o.outcome or '-'} | {o.reason} |")
    return "\n".join(lines)


def _poll_summary(served: dict[str, list[Served]], polled: list[PolledVersion]) -> str:
    lines = ["# Registry poll", "", "| Model | Deployments (serving version) |", "|---|---|"]
    for model, targets in sorted(served.items()):
        lines.append(f"| {model} | {', '.join(f'{s.namespace}/{s.name} (v{s.serving_version})' for s in targets)} |")
    lines += ["", "| Started for | Version | Alias | Run ended |", "|---|---|---|---|"]
    lines += [f"| {p.model_name} | {p.version} | {p.alias or '-'} | {p.state} |" for p in polled]
    if not polled:
        lines.append("| nothing new | | | |")
    return "\n".join(lines)
