"""How a pod template becomes a local process: pure translation, no I/O.

KServe's pods carry a storage-initializer init container (``[storageUri, /mnt/models]``) and a
``kserve-container`` whose image this machine cannot run. Locally the init container becomes a call to
our storage initializer, and the main container's ``command`` runs with the project's interpreter (or a
runtime environment's, named by the ``serving.odh.io/runtime-env`` pod annotation), with ``/mnt/models``
pointed at the replica's model directory and every container port at its own free loopback port:
``--port=N``, ``--port N``, ``tcp://*:N`` and ``$(POD_IP):N`` all follow. ``$(VAR)`` references expand
as the kubelet expands them, with ``status.podIP`` being 127.0.0.1.

A pod's wildcard address is its own network namespace; here there is none, so a wildcard bind address
given as an argument (``--host 0.0.0.0``, ``--bind=::``) becomes 127.0.0.1, and a vLLM server, which
binds every interface unless told otherwise, is given ``--host 127.0.0.1``. A wildcard ZMQ endpoint
(``tcp://*:N``, N a container port) cannot become loopback: vLLM binds its KV-event publisher only for
a wildcard, ``::`` or ``ipc://`` endpoint and connects for any other. So it becomes a Unix socket in
the pod's own directory, ``ipc://<pod dir>/zmq-N.sock`` (``zmq_ipc_endpoint``, which the daemon also
gives the router): the state directory is 0700, so only the daemon's user can subscribe to a stream
that carries prompt token ids. A path longer than a Unix socket address holds (107 bytes) keeps
``tcp://*:<mapped port>``, on every interface, with a warning that names the fix (docs/security.md).

A replica starts with the daemon's environment minus its credentials (``replica_environment``): in
KServe only the storage-initializer container is given the storage secret, and the model server never
sees it. Locally the storage initializer is the daemon's own model fetch, so the daemon keeps them and
no replica or custom container inherits them. Dropped, by name: every ``AWS_*`` (keys, session token,
profile, credential and config files, endpoints), ``AZURE_*``, ``GOOGLE_APPLICATION_CREDENTIALS`` and
other ``GOOGLE_*CREDENTIALS*``, ``MLFLOW_TRACKING_{USERNAME,PASSWORD,TOKEN}`` and MLflow's client
certificates, and any name with a ``_``-separated part that says secret: ``SECRET``, ``PASSWORD``,
``PASSWD``, ``TOKEN`` (so ``HF_TOKEN``, ``HUGGING_FACE_HUB_TOKEN``), ``CREDENTIAL(S)``, ``API_KEY``,
``ACCESS_KEY``, ``PRIVATE_KEY``, ``AUTH`` (``SSH_AUTH_SOCK``). Everything else passes (``PATH``,
``HOME``, locale, ``ODH_*`` settings, ``HF_HUB_OFFLINE``...), and what the container's ``env`` sets
explicitly always reaches it: that is the manifest author's choice.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.errors import PlatformError
from serving.kserve.reconcile.llmd import RUNTIME_ENV_ANNOTATION

log = logging.getLogger(__name__)

MODEL_MOUNT = "/mnt/models"
STORAGE_INITIALIZER = "storage-initializer"
DEFAULT_READINESS_PATH = "/v2/health/ready"
POD_IP = "127.0.0.1"  # what status.podIP reads for every local pod
_PORT_FLAG = re.compile(r"^(--?[\w-]*port[\w-]*=)(\d+)$", re.IGNORECASE)
_SPLIT_PORT_FLAG = re.compile(r"^--?[\w-]*port$", re.IGNORECASE)
# A port after a host inside a larger string: ZMQ endpoints, URLs, "kv@host:port@model" topics.
_HOST_PORT = re.compile(r"((?:[a-z]+://)?(?:\*|localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:]*\])):(\d+)\b", re.IGNORECASE)
# A bind address meaning "every interface" (in a pod, its own namespace; here, the machine's network),
# alone or as a flag's value.
_WILDCARD_VALUE = re.compile(r"^(--?[\w.-]+=)?(0\.0\.0\.0|::|\[::\])$")
# Servers that bind every interface when their command line names no host.
_BIND_ALL_BY_DEFAULT = ("vllm.entrypoints.openai.api_server",)
# ZMQ endpoints that bind every interface; vLLM binds these (and ipc://), and connects to any other.
_ZMQ_WILDCARDS = ("tcp://*", "tcp://[::]")
UNIX_SOCKET_PATH_MAX = 107  # bytes: sockaddr_un.sun_path less its terminating NUL
# Characters that would break the endpoint's place in vLLM's JSON config or the router's --engine flag.
_UNSAFE_IN_ENDPOINT = (",", '"', "\\")
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# Daemon environment variables a replica does not inherit (see the module docstring).
_CREDENTIAL_NAME = re.compile(
    r"AWS_.*|AZURE_.*|GOOGLE_APPLICATION_CREDENTIALS|GOOGLE_.*CREDENTIALS.*"
    r"|MLFLOW_TRACKING_(?:USERNAME|PASSWORD|TOKEN|CLIENT_CERT_PATH|SERVER_CERT_PATH|INSECURE_TLS)"
    r"|(?:.*_)?(?:SECRETS?|PASSWORD|PASSWD|TOKEN|CREDENTIALS?|API_?KEY|ACCESS_KEY|PRIVATE_KEY|AUTH)(?:_.*)?",
    re.IGNORECASE,
)


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
    # Every containerPort (the first is ``container_port``), each mapped to its own loopback port.
    ports: tuple[int, ...] = ()
    runtime_env: str | None = None  # run with this runtime environment's interpreter
    liveness_path: str | None = None

    @property
    def all_ports(self) -> tuple[int, ...]:
        return self.ports or (self.container_port,)


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
    ports = tuple(dict.fromkeys(int(p["containerPort"]) for p in main.get("ports") or []))
    port = ports[0] if ports else 8080
    probe = ((main.get("readinessProbe") or {}).get("httpGet") or {}).get("path") or DEFAULT_READINESS_PATH
    liveness = ((main.get("livenessProbe") or {}).get("httpGet") or {}).get("path")
    env: dict[str, str] = {}
    for entry in main.get("env") or []:
        if "name" not in entry:
            continue
        if "valueFrom" not in entry:
            env[entry["name"]] = str(entry.get("value", ""))
        elif (entry["valueFrom"].get("fieldRef") or {}).get("fieldPath") == "status.podIP":
            env[entry["name"]] = POD_IP
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    return PodPlan(tuple(command), env, port, probe, _storage_uri(spec, main), ports=ports,
                   runtime_env=annotations.get(RUNTIME_ENV_ANNOTATION), liveness_path=liveness)


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


def zmq_ipc_endpoint(ipc_dir: Path, container_port: int) -> str | None:
    """Where a pod's wildcard ZMQ endpoint on ``container_port`` listens locally: a Unix socket in
    ``ipc_dir``. None when that path cannot be one (longer than ``UNIX_SOCKET_PATH_MAX`` bytes, or
    holding a character the endpoint's consumers would split on): the endpoint then stays tcp.
    The one place both the engine's argv and the router's subscription take it from."""
    path = ipc_dir.absolute() / f"zmq-{container_port}.sock"
    if len(os.fsencode(path)) > UNIX_SOCKET_PATH_MAX or any(c in str(path) for c in _UNSAFE_IN_ENDPOINT):
        return None
    return f"ipc://{path}"


def zmq_subscribe_endpoint(ipc_dir: Path, container_port: int, mapped_port: int) -> str:
    """Where a subscriber reaches the pod's wildcard ZMQ endpoint on ``container_port``: the pod's
    Unix socket, or loopback at the port it was mapped to when the socket path cannot be one."""
    return zmq_ipc_endpoint(ipc_dir, container_port) or f"tcp://{POD_IP}:{mapped_port}"


def materialize(plan: PodPlan, *, port: int, model_dir: Path | None, python: str = sys.executable,
                extra_ports: Mapping[int, int] | None = None,
                ipc_dir: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The argv and env that run ``plan`` with its main port on ``port`` (other container ports on
    ``extra_ports[containerPort]``) and the model at ``model_dir``; with ``ipc_dir`` (the pod's own
    directory), a wildcard ZMQ endpoint on a container port becomes a Unix socket there."""
    mapping = {**(extra_ports or {}), plan.container_port: port}

    def expand(value: str) -> str:
        # Kubernetes expands $(VAR) from the container's env; unknown references stay as written.
        return _VAR_REF.sub(lambda m: plan.env.get(m[1], m[0]), value)

    def remap_host_port(match: re.Match[str]) -> str:
        container_port = int(match[2])
        mapped = mapping.get(container_port)
        if mapped is None:
            return match[0]
        if ipc_dir is not None and match[1].lower() in _ZMQ_WILDCARDS:
            endpoint = zmq_ipc_endpoint(ipc_dir, container_port)
            if endpoint is not None:
                return endpoint
            log.warning("pod directory %s: a Unix socket there would be over %d bytes (or hold one of , \" \\), "
                        "so %s stays tcp on port %d, listening on every interface; use a shorter state directory "
                        "(--state-dir or ODH_STATE_DIR)", ipc_dir, UNIX_SOCKET_PATH_MAX, match[0], mapped)
        return f"{match[1]}:{mapped}"

    def local(value: str, previous: str = "") -> str:
        value = expand(value)
        if model_dir is not None and plan.model_mount in value:
            value = value.replace(plan.model_mount, str(model_dir))
        match = _PORT_FLAG.match(value)
        if match and int(match[2]) in mapping:
            return f"{match[1]}{mapping[int(match[2])]}"
        if value.isdigit() and _SPLIT_PORT_FLAG.match(previous) and int(value) in mapping:
            return str(mapping[int(value)])
        wildcard = _WILDCARD_VALUE.match(value)
        if wildcard:
            return f"{wildcard[1] or ''}{POD_IP}"
        return _HOST_PORT.sub(remap_host_port, value)

    argv = [local(arg, plan.command[i - 1] if i else "") for i, arg in enumerate(plan.command)]
    if argv and argv[0] in {"python", "python3"}:
        argv[0] = python
    if _binds_all_by_default(argv) and not any(a == "--host" or a.startswith("--host=") for a in argv):
        argv += ["--host", POD_IP]
    env = {name: (str(mapping[int(value)]) if value.isdigit() and int(value) in mapping and "PORT" in name.upper()
                  else local(value))
           for name, value in plan.env.items()}
    env["PORT"] = str(port)
    return argv, env


def _binds_all_by_default(argv: list[str]) -> bool:
    vllm_serve = len(argv) > 1 and Path(argv[0]).name == "vllm" and argv[1] == "serve"
    return vllm_serve or any(arg in _BIND_ALL_BY_DEFAULT for arg in argv)


def replica_environment(daemon_env: Mapping[str, str]) -> dict[str, str]:
    """The part of the daemon's environment a replica inherits: all but storage and registry credentials."""
    return {name: value for name, value in daemon_env.items() if not _CREDENTIAL_NAME.fullmatch(name)}
