"""How a pod template becomes a local process: pure translation, no I/O.

KServe's pods carry a storage-initializer init container (``[storageUri, /mnt/models]``) and a
``kserve-container`` whose image this machine cannot run. Locally the init container becomes a call to
our storage initializer, and the main container's ``command`` runs with the project's interpreter, with
``/mnt/models`` pointed at the replica's model directory and the container port at a free loopback port.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.errors import PlatformError

MODEL_MOUNT = "/mnt/models"
STORAGE_INITIALIZER = "storage-initializer"
DEFAULT_READINESS_PATH = "/v2/health/ready"
_PORT_FLAG = re.compile(r"^(--?[\w-]*port[\w-]*=)(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class PodPlan:
    """What one replica runs: the main container's argv and env before local substitutions."""

    command: tuple[str, ...]
    env: dict[str, str]
    container_port: int
    readiness_path: str
    storage_uri: str | None
    model_mount: str = MODEL_MOUNT
    extra: dict[str, Any] = field(default_factory=dict)


def plan_pod(template: dict[str, Any]) -> PodPlan:
    """Read a Deployment's pod template. Raises PlatformError when it cannot run as a local process."""
    spec = template.get("spec") or {}
    containers = spec.get("containers") or []
    if not containers:
        raise PlatformError("spec.template.spec.containers is empty: a pod needs a container")
    main = next((c for c in containers if c.get("name") == "kserve-container"), containers[0])
    command = [*(main.get("command") or []), *(main.get("args") or [])]
    if not main.get("command"):
        raise PlatformError(
            f"container {main.get('name')!r} (image {main.get('image')!r}) has no command: the local platform "
            "runs commands, not images; give the runtime container a command"
        )
    ports = main.get("ports") or []
    port = int(ports[0]["containerPort"]) if ports else 8080
    probe = ((main.get("readinessProbe") or {}).get("httpGet") or {}).get("path") or DEFAULT_READINESS_PATH
    env = {e["name"]: str(e.get("value", "")) for e in main.get("env") or [] if "name" in e and "valueFrom" not in e}
    return PodPlan(tuple(command), env, port, probe, _storage_uri(spec, main))


def _storage_uri(spec: dict[str, Any], main: dict[str, Any]) -> str | None:
    """The model's URI: the storage initializer's argument, or the PVC mounted at the model path
    (which the local storage initializer maps into its PVC root)."""
    for init in spec.get("initContainers") or []:
        if init.get("name") == STORAGE_INITIALIZER and init.get("args"):
            return init["args"][0]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes") or [] if "persistentVolumeClaim" in v}
    for mount in main.get("volumeMounts") or []:
        if mount.get("mountPath") == MODEL_MOUNT and mount.get("name") in claims:
            return f"pvc://{claims[mount['name']]}/{mount.get('subPath', '')}".rstrip("/")
    return None


def materialize(plan: PodPlan, *, port: int, model_dir: Path | None, python: str = sys.executable) -> tuple[list[str], dict[str, str]]:
    """The argv and env that run ``plan`` on ``port`` with the model at ``model_dir``."""

    def local(value: str) -> str:
        if model_dir is not None and plan.model_mount in value:
            value = value.replace(plan.model_mount, str(model_dir))
        match = _PORT_FLAG.match(value)
        if match and int(match[2]) == plan.container_port:
            value = f"{match[1]}{port}"
        return value

    argv = [local(arg) for arg in plan.command]
    if argv and argv[0] in {"python", "python3"}:
        argv[0] = python
    env = {name: (str(port) if value == str(plan.container_port) and "PORT" in name.upper() else local(value))
           for name, value in plan.env.items()}
    env["PORT"] = str(port)
    return argv, env
