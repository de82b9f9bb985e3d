"""Phase 5: wait while the platform fetches the model and the replicas load it, until Ready."""

from __future__ import annotations

from typing import Any

from prefect import task

from serving.platform import connect
from tasks._common import resolve_state


@task(name="initialize")
def initialize(applied: dict[str, Any], timeout: float = 300.0, state: str | None = None) -> dict[str, Any]:
    meta = applied["metadata"]
    return connect(resolve_state(state)).wait_ready(
        applied.get("kind", "InferenceService"), meta["namespace"], meta["name"], timeout, generation=meta.get("generation")
    )
