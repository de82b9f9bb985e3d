"""Phase 4: hand the InferenceService to the platform (an apply: re-running converges, never duplicates)."""

from __future__ import annotations

from typing import Any

from prefect import task

from serving.platform import connect
from tasks._common import RETRIES, RETRY_DELAYS, resolve_state, retry_on_transient


@task(name="deploy", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def deploy(manifest: dict[str, Any], state: str | None = None) -> dict[str, Any]:
    return connect(resolve_state(state)).apply(manifest)
