"""Tasks of ``on-new-model-version`` and ``poll-model-versions``: who serves a model, what the registry holds,
what polling has seen. Each is a read or an idempotent write, so each retries safely."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from prefect import task

from serving.errors import AdmissionError, RegistryError
from serving.lifecycle import LifecyclePolicy
from serving.platform import connect
from serving.policy import MODEL_NAME_LABEL, MODEL_VERSION_LABEL
from serving.registry.webhooks import Served
from tasks._common import RETRIES, RETRY_DELAYS, registry_for, resolve_state, retry_on_transient

SEEN_FILE = "poll-seen.json"  # {model: {"version": "3", "aliases": {"champion": "3"}}}


def _served(isvc: dict[str, Any]) -> Served:
    meta = isvc["metadata"]
    try:
        policy = LifecyclePolicy.from_annotations(meta.get("annotations"))
    except AdmissionError as exc:
        return Served(meta["namespace"], meta["name"], (meta.get("labels") or {}).get(MODEL_VERSION_LABEL),
                      "canary", None, policy_error=str(exc))
    return Served(meta["namespace"], meta["name"], (meta.get("labels") or {}).get(MODEL_VERSION_LABEL),
                  policy.rollout_strategy, policy.watch_alias)


@task(name="find-deployments", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def find_deployments(model_name: str | None = None, state: str | None = None) -> dict[str, list[Served]]:
    """InferenceServices that serve a registered model (label ``odh.serving/registered-model``), by model name;
    only ``model_name``'s when given."""
    found: dict[str, list[Served]] = {}
    for isvc in connect(resolve_state(state)).list("InferenceService"):
        name = (isvc["metadata"].get("labels") or {}).get(MODEL_NAME_LABEL)
        if name and (model_name is None or name == model_name):
            found.setdefault(name, []).append(_served(isvc))
    return found


@task(name="registry-versions", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def registry_versions(model_name: str, aliases: list[str], state: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The model's version numbers and where each of ``aliases`` points (an alias not set is left out)."""
    registry = registry_for(resolve_state(state))
    versions = [v.version for v in registry.list_versions(model_name)]
    pointed: dict[str, str] = {}
    for alias in aliases:
        try:
            pointed[alias] = registry.resolve(f"models:/{model_name}@{alias}").version
        except RegistryError:
            continue
    return versions, pointed


@task(name="version-format", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def version_format(model_name: str, version: str, state: str | None = None) -> str | None:
    """The format the version was registered with (tag ``odh.model_format``), if any: a source such as an
    http URL or a bare directory does not always say it by its file names."""
    return registry_for(resolve_state(state)).get_version(model_name, version).tags.get("odh.model_format") or None


@task(name="read-seen-versions")
def read_seen(state: str | None = None) -> dict[str, dict[str, Any]]:
    """What polling has already acted on; nothing yet when the file is missing or unreadable."""
    try:
        seen = json.loads((resolve_state(state) / SEEN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return seen if isinstance(seen, dict) else {}


@task(name="remember-seen-versions", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def remember_seen(seen: dict[str, dict[str, Any]], state: str | None = None) -> None:
    """Write what polling has acted on, atomically (a crash mid-write leaves the previous file)."""
    root = resolve_state(state)
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".poll-seen-")
    with os.fdopen(fd, "w") as out:
        json.dump(seen, out, indent=2, sort_keys=True)
    Path(tmp).replace(root / SEEN_FILE)
