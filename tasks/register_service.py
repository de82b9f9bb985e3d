"""Phase 6: record the live deployment on the model version (name, namespace, URL, status)."""

from __future__ import annotations

from typing import Any

from prefect import task

from serving.platform import is_ready
from serving.registry import RegisteredVersion
from tasks._common import RETRIES, RETRY_DELAYS, registry_for, resolve_state, retry_on_transient


@task(name="register-service", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def register_service(version: RegisteredVersion, isvc: dict[str, Any], state: str | None = None) -> str:
    meta, status = isvc["metadata"], isvc.get("status", {})
    url = status.get("url", "")
    registry_for(resolve_state(state)).tag_deployment(
        version.name, version.version, deployment=meta["name"], namespace=meta["namespace"], url=url,
        status="ready" if is_ready(isvc) else "not-ready",
    )
    return url
