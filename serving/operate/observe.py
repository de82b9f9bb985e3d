"""Read the platform once: its gateway's metrics and the objects that say what serves (I/O, no Prefect)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from serving.operate.inventory import Inventory, build_inventory
from serving.operate.scrape import Scrape, scrape_gateway
from serving.operate.snapshot import Snapshot
from serving.platform.local.client import LocalPlatform

LLM_KIND = "LLMInferenceService"


@dataclass(frozen=True)
class Observation:
    """Two scrapes and the inventory at the second; ``previous_restarts``: restart totals at the first."""

    before: Scrape
    after: Scrape
    inventory: Inventory
    previous_restarts: dict[str, int]
    gateway: str
    measured: bool  # True: the window was measured now (no fresh snapshot), False: it runs since the last run


def read_inventory(platform: LocalPlatform) -> Inventory:
    return build_inventory(
        inference_services=platform.list("InferenceService"),
        llm_services=platform.list(LLM_KIND),
        deployments=platform.list("Deployment"),
        revisions=platform.list("Revision.serving.knative.dev"),
        pods=platform.kubectl_get("pods").get("items") or [],
    )


def observe(platform: LocalPlatform, snapshot: Snapshot | None, window_seconds: float,
            sleep: Callable[[float], None] = time.sleep) -> Observation:
    """The window since the snapshot's scrape when it is fresh, else one measured now: two scrapes
    ``window_seconds`` apart, with restart totals taken at each."""
    gateway = str(platform.info()["gateway"])
    if snapshot is not None and snapshot.fresh(time.time(), gateway):
        after = scrape_gateway(gateway)
        return Observation(snapshot.scrape, after, read_inventory(platform), dict(snapshot.restarts), gateway, False)
    first_inventory = read_inventory(platform)
    before = scrape_gateway(gateway)
    sleep(window_seconds)
    after = scrape_gateway(gateway)
    return Observation(before, after, read_inventory(platform), first_inventory.restarts(), gateway, True)
