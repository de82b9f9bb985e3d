"""Prometheus' file-based service discovery for the embedded platform: ``<state>/prometheus/targets.json``.

The daemon calls ``ScrapeTargetsFile.sync`` after each reconcile pass. The file lists the gateway (its
``/metrics`` carries the gateway's and the KPAs' series) and every replica process with a loopback port:
model servers, LLM engines (vLLM or the simulator: both export ``vllm:*``) and LLM-D routers, each labelled
with what the Grafana dashboards in ``infra/grafana/`` select on (``job``, ``namespace``, ``deployment``,
``revision``, ``pod``...). It is rewritten only when that set changes, atomically (a temporary file renamed
over it), because Prometheus re-reads it on every change it sees and must never read half of it.
``infra/prometheus/prometheus.yml`` points a ``file_sd_configs`` job at it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from serving.kserve.reconcile.llmd import ENGINE_SELECTOR_ANNOTATION, ROLE_LABEL
from serving.platform.local.replicas import ReplicaInfo, ReplicaState

TARGETS_FILE = Path("prometheus") / "targets.json"

JOB_GATEWAY = "odh-gateway"
JOB_MODEL_SERVER = "odh-model-server"
JOB_LLM_ENGINE = "odh-llm-engine"
JOB_LLMD_ROUTER = "odh-llmd-router"
JOBS = (JOB_GATEWAY, JOB_MODEL_SERVER, JOB_LLM_ENGINE, JOB_LLMD_ROUTER)

ISVC_LABEL = "serving.kserve.io/inferenceservice"
KNATIVE_REVISION_LABEL = "serving.knative.dev/revision"
LLM_NAME_LABEL = "app.kubernetes.io/name"
# A replica in these states has no process to scrape, and will not have one again.
_GONE = frozenset({ReplicaState.TERMINATING.value, ReplicaState.STOPPED.value})
_UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::"})


class _Runner(Protocol):
    def replica_infos(self) -> list[ReplicaInfo]: ...


class _Store(Protocol):
    def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...


def targets_path(state: Path) -> Path:
    """Where the daemon of ``state`` keeps its targets (``~/.odh/prometheus/targets.json`` by default)."""
    return Path(state) / TARGETS_FILE


def job_for(deployment: Mapping[str, Any] | None) -> str:
    """The scrape job of a Deployment's replicas, read from what the reconcilers put on it."""
    if deployment is None:
        return JOB_MODEL_SERVER
    meta = deployment.get("metadata") or {}
    if ENGINE_SELECTOR_ANNOTATION in (meta.get("annotations") or {}):
        return JOB_LLMD_ROUTER
    if ROLE_LABEL in _template_labels(deployment):
        return JOB_LLM_ENGINE
    return JOB_MODEL_SERVER


def replica_labels(namespace: str, deployment_name: str, pod: str, deployment: Mapping[str, Any] | None) -> dict[str, str]:
    """A replica's target labels. ``revision`` is what the gateway calls a revision: the Knative revision of a
    Serverless replica, else the Deployment itself (so a panel can join gateway and replica series on it)."""
    labels = {**(deployment or {}).get("metadata", {}).get("labels", {}), **_template_labels(deployment)}
    target = {"job": job_for(deployment), "namespace": namespace, "deployment": deployment_name, "pod": pod,
              "revision": str(labels.get(KNATIVE_REVISION_LABEL) or deployment_name)}
    owner = labels.get(ISVC_LABEL) or labels.get(LLM_NAME_LABEL)
    if owner:
        target["inferenceservice"] = str(owner)
    if ROLE_LABEL in labels:
        target["role"] = str(labels[ROLE_LABEL])
    return target


def gateway_group(host: str, port: int) -> dict[str, Any]:
    scrape_host = "127.0.0.1" if host in _UNSPECIFIED_HOSTS else host
    return {"targets": [f"{scrape_host}:{port}"], "labels": {"job": JOB_GATEWAY}}


def replica_groups(runners: Mapping[tuple[str, str], _Runner], store: _Store) -> list[dict[str, Any]]:
    """One target group per replica that has a port and is not going away, ready or not (a crashing one
    shows as ``up == 0``, which the dashboards count)."""
    groups = []
    for (namespace, name), runner in runners.items():
        deployment = store.find("Deployment", namespace, name)
        for info in runner.replica_infos():
            if info.port is None or info.state in _GONE:
                continue
            groups.append({"targets": [f"127.0.0.1:{info.port}"],
                           "labels": replica_labels(namespace, name, info.name, deployment)})
    return groups


def render(groups: Iterable[Mapping[str, Any]]) -> str:
    """The file's text: groups in a stable order, so an unchanged set renders the same bytes."""
    ordered = sorted(groups, key=lambda g: (g["labels"].get("job", ""), g["labels"].get("namespace", ""),
                                            g["labels"].get("pod", ""), list(g["targets"])))
    return json.dumps(ordered, indent=2, sort_keys=True) + "\n"


class ScrapeTargetsFile:
    """``<state>/prometheus/targets.json``, written when its content changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._written: str | None = None

    def write(self, groups: Iterable[Mapping[str, Any]]) -> bool:
        """Replace the file with ``groups`` unless it already says that; returns whether it was written."""
        text = render(groups)
        if text == self._written:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".targets-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a Prometheus run as another user of the group
            os.replace(tmp, self.path)  # atomic: Prometheus sees the old file or the new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._written = text
        return True

    def sync(self, gateway_host: str, gateway_port: int, runners: Mapping[tuple[str, str], _Runner],
             store: _Store) -> bool:
        """The gateway and every live replica of ``runners`` (the daemon's Deployments, by namespace and name)."""
        return self.write([gateway_group(gateway_host, gateway_port), *replica_groups(runners, store)])


def _template_labels(deployment: Mapping[str, Any] | None) -> dict[str, Any]:
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    return dict((template.get("metadata") or {}).get("labels") or {})
