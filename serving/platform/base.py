"""The one interface tasks see: apply desired objects, read them back, delete them, wait for Ready.

Objects are plain Kubernetes-shaped dicts (``apiVersion``, ``kind``, ``metadata``, ``spec``, ``status``).
``LocalPlatform`` executes them on this machine; a Kubernetes platform would apply them to a cluster.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

KubeObject = dict[str, Any]


@runtime_checkable
class Platform(Protocol):
    def apply(self, obj: KubeObject) -> KubeObject:
        """Create or update ``obj``; returns it as stored (with defaults). Raises AdmissionError."""
        ...

    def get(self, kind: str, namespace: str, name: str) -> KubeObject:
        """The stored object with its current status. Raises NotFoundError."""
        ...

    def list(self, kind: str, namespace: str | None = None) -> list[KubeObject]:
        ...

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete the object and everything it owns; False when it did not exist."""
        ...

    def wait_ready(self, kind: str, namespace: str, name: str, timeout: float, generation: int | None = None) -> KubeObject:
        """Block until the object's Ready condition is True (for ``generation`` or later, when given: the spec
        just applied, not the one before it). Raises ReadyTimeoutError."""
        ...


def condition(obj: KubeObject, type_: str) -> dict[str, Any] | None:
    """The status condition of the given type, if the object has one."""
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == type_:
            return cond
    return None


def is_ready(obj: KubeObject) -> bool:
    cond = condition(obj, "Ready")
    return bool(cond and cond.get("status") == "True")
