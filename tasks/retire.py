"""Phase 8: take the deployment down and mark the model versions it served retired (safe to run again)."""

from __future__ import annotations

from prefect import task

from serving.platform import connect
from serving.registry import RegisteredVersion
from tasks._common import RETRIES, RETRY_DELAYS, registry_for, resolve_state, retry_on_transient


@task(name="retire-deployment", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def retire_deployment(name: str, namespace: str, state: str | None = None) -> bool:
    """Delete the InferenceService (or LLMInferenceService) and wait until its processes are gone; False when
    neither existed."""
    platform = connect(resolve_state(state))
    deleted = [platform.delete(kind, namespace, name) for kind in ("InferenceService", "LLMInferenceService")]
    return any(deleted)


@task(name="retire-versions", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def retire_versions(name: str, namespace: str, state: str | None = None) -> list[RegisteredVersion]:
    """Mark every version tagged as serving this deployment retired."""
    registry = registry_for(resolve_state(state))
    versions = registry.deployed_versions(name, namespace)
    for version in versions:
        registry.mark_retired(version.name, version.version)
    return versions
