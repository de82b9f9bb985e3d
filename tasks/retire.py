"""Phase 8: drain and delete the deployment, mark the versions it served retired, remove their aliases unless
another live deployment serves them, and free the cache entries nothing references any more (safe to run again)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
from prefect import task

from serving.config import model_cache_dir
from serving.errors import NotFoundError, RegistryError
from serving.operate.scrape import scrape_gateway
from serving.platform import Platform, connect
from serving.registry import RETIRED, RegisteredVersion
from serving.rollout import serving_version
from serving.rollout.retire import SERVING_KINDS, STORAGE_KINDS, referenced_uris, served_versions
from serving.storage.cache import ModelCache, PruneResult
from tasks._common import RETRIES, RETRY_DELAYS, gateway_url, registry_for, resolve_state, retry_on_transient

DRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Drained:
    """What the delete found and left: the kinds deleted, requests in flight on the route before and after."""

    deleted: tuple[str, ...]
    in_flight_before: int
    in_flight_after: int
    seconds: float
    serving: tuple[str, str] | None  # (registered model, version) its labels named


def _gateway_in_flight(platform: Platform, namespace: str, name: str) -> int:
    gateway = gateway_url(platform)
    if gateway is None:
        return 0
    try:
        return int(scrape_gateway(gateway, timeout=10.0).route_in_flight.get(f"{namespace}/{name}", 0))
    except httpx.HTTPError:
        return 0


@task(name="drain-and-delete", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def drain_and_delete(name: str, namespace: str, state: str | None = None) -> Drained:
    """Delete the InferenceService (or LLMInferenceService): its route goes first, so a new request gets the
    gateway's clean 404, while the requests already accepted are answered by replicas that stop gracefully
    (the platform's delete returns once they have). Then wait until the route has nothing in flight."""
    platform = connect(resolve_state(state))
    started = time.monotonic()
    serving: tuple[str, str] | None = None
    for kind in SERVING_KINDS:
        try:
            serving = serving_version(platform.get(kind, namespace, name)) or serving
        except NotFoundError:
            continue
    before = _gateway_in_flight(platform, namespace, name)
    deleted = tuple(kind for kind in SERVING_KINDS if platform.delete(kind, namespace, name))
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    after = _gateway_in_flight(platform, namespace, name)
    while after and time.monotonic() < deadline:
        time.sleep(0.1)
        after = _gateway_in_flight(platform, namespace, name)
    return Drained(deleted, before, after, time.monotonic() - started, serving)


@task(name="retire-versions", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def retire_versions(name: str, namespace: str, serving: tuple[str, str] | None = None,
                    state: str | None = None) -> tuple[list[RegisteredVersion], list[RegisteredVersion]]:
    """The versions this deployment served (tagged so, or named by its labels): (retired, still served).

    A version another live deployment still serves is neither marked retired nor un-aliased; the others
    are tagged ``odh.deployment.status=retired`` and lose the aliases that point at them."""
    root = resolve_state(state)
    registry = registry_for(root)
    platform = connect(root)
    versions = registry.deployed_versions(name, namespace)
    if serving is not None and serving not in {(v.name, v.version) for v in versions}:
        try:
            labelled: RegisteredVersion | None = registry.get_version(*serving)
        except RegistryError:  # labels naming a version the registry never had: nothing to mark
            labelled = None
        if labelled is not None and labelled.tags.get("odh.deployment.status") != RETIRED:
            versions.append(labelled)
    live = served_versions(obj for kind in SERVING_KINDS for obj in platform.list(kind))
    retired = [v for v in versions if (v.name, v.version) not in live]
    for version in retired:
        registry.mark_retired(version.name, version.version)
    return retired, [v for v in versions if (v.name, v.version) in live]


@task(name="remove-aliases", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def remove_aliases(versions: list[RegisteredVersion], state: str | None = None) -> list[str]:
    """Remove the aliases that still point at the retired ``versions``; what was removed."""
    registry = registry_for(resolve_state(state))
    removed: list[str] = []
    for version in versions:
        for alias in registry.get_version(version.name, version.version).aliases:
            if registry.alias_version(version.name, alias) == version.version and registry.delete_alias(version.name, alias):
                removed.append(f"{version.name}@{alias} (version {version.version})")
    return removed


@task(name="prune-cache", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def prune_cache(state: str | None = None) -> PruneResult:
    """Free the model cache entries that no remaining object's storage URI holds."""
    root = resolve_state(state)
    platform = connect(root)
    objects: list[dict[str, Any]] = [obj for kind in STORAGE_KINDS for obj in platform.list(kind)]
    return ModelCache(model_cache_dir(root)).prune(referenced_uris(objects))
