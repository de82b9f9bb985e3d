"""What retiring a deployment leaves behind, pure: the storage URIs the remaining objects still use (their
cache entries stay) and which versions other live deployments still serve (their aliases stay)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from serving.kserve.reconcile.standard import STORAGE_URI_ANNOTATION
from serving.rollout.plan import serving_version

# Kinds whose objects name model storage: what users apply and what the platform renders from them.
STORAGE_KINDS = ("InferenceService", "LLMInferenceService", "Revision.serving.knative.dev", "Deployment")
SERVING_KINDS = ("InferenceService", "LLMInferenceService")


def referenced_uris(objects: Iterable[dict[str, Any]]) -> set[str]:
    """Every storage URI the objects name: ``storageUri`` anywhere in a spec (predictor, canaries,
    templates), the storage-initializer annotation on rendered pods, and an LLM's ``spec.model.uri``."""
    found: set[str] = set()

    def walk(value: Any, parent: str | None) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                if isinstance(child, str) and (key in ("storageUri", STORAGE_URI_ANNOTATION)
                                               or (key == "uri" and parent == "model")):
                    found.add(child.strip())
                else:
                    walk(child, key)
        elif isinstance(value, list):
            for item in value:
                walk(item, parent)

    for obj in objects:
        walk({"metadata": obj.get("metadata") or {}, "spec": obj.get("spec") or {}}, None)
    return found


def served_versions(objects: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(registered model, version) of every deployment among ``objects``, as their labels say."""
    return {version for version in map(serving_version, objects) if version is not None}

