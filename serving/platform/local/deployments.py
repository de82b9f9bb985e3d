"""A Deployment's replicas on this machine, with Kubernetes' rolling-update promise.

Each pod template (identified by its hash) gets its own replica set. A new template starts beside the
old one; the old set stops only once the new set is fully ready. If the new replicas keep failing
before they ever become ready, the rollout is marked failed and the old version keeps serving.

After ``odh restart`` the daemon's new image passes an open ``Adopter``: a runner then creates its replicas
at once (not at the next step), each taking over the live replica recorded in its pod directory when
that one is of this Deployment and template, so the status its first reconcile writes counts them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.platform.local.forkserver import ForkServer
from serving.platform.local.orphans import ReplicaOwner
from serving.platform.local.pods import PodPlan, plan_pod
from serving.platform.local.replicas import ModelFetcher, PythonResolver, Replica, ReplicaInfo
from serving.platform.local.routes import Endpoint

if TYPE_CHECKING:
    from serving.platform.local.handover import Adopter

HASH_ANNOTATION = "serving.kserve.io/template-hash"
FAILURES_TO_ABANDON_ROLLOUT = 3


def template_hash(deployment: dict[str, Any]) -> str:
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    if HASH_ANNOTATION in annotations:
        return str(annotations[HASH_ANNOTATION])
    template = deployment.get("spec", {}).get("template", {})
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


class DeploymentRunner:
    def __init__(self, deployment: dict[str, Any], replicas: int, pods_dir: Path, fetch_model: ModelFetcher,
                 on_change: Callable[[], None], resolve_python: PythonResolver | None = None,
                 fork_server: ForkServer | None = None, adopter: Adopter | None = None) -> None:
        self._resolve_python = resolve_python
        self._adopter = adopter
        self._fork_server = fork_server  # replicas fork from it when they can (cold start in tenths of a second)
        self.namespace = deployment["metadata"].get("namespace", "default")
        self.name = deployment["metadata"]["name"]
        self._pods_dir = pods_dir
        self._fetch_model = fetch_model
        self._on_change = on_change
        self._sets: dict[str, list[Replica]] = {}
        self._stopping: set[asyncio.Task[None]] = set()  # replicas being stopped (a reference keeps each task alive)
        self._plans: dict[str, PodPlan] = {}
        self.current: str | None = None  # the hash of the set that completed its rollout
        self.desired: str = ""
        self.replicas = 1
        self.plan_error: str | None = None
        self.update(deployment, replicas)
        if adopter is not None and adopter.open:
            self.step()  # adopt now: the first status written after a restart counts what already runs

    def update(self, deployment: dict[str, Any], replicas: int) -> None:
        self.replicas = int(replicas)
        desired = template_hash(deployment)
        if desired not in self._plans:
            try:
                self._plans[desired] = plan_pod(deployment["spec"]["template"])
                self.plan_error = None
            except Exception as exc:  # reported in status, old version keeps serving
                self.plan_error = str(exc)
                return
        self.desired = desired

    def step(self) -> None:
        """Converge one step: scale the desired set, finish or abandon a rollout."""
        if not self.desired:
            return
        replicas = self._sets.setdefault(self.desired, [])
        while len(replicas) < self.replicas:
            name = f"{self.name}-{self.desired}-{len(replicas)}"
            pod_dir = self._pods_dir / self.namespace / name
            owner = ReplicaOwner(self.namespace, self.name, self.desired)
            adopted = self._adopter.claim(pod_dir, owner) if self._adopter is not None else None
            replica = Replica(name, self._plans[self.desired], pod_dir, self._fetch_model, self._on_change,
                              self._resolve_python, self._fork_server, owner=owner, adopted=adopted)
            replicas.append(replica)
            replica.start()
        while len(replicas) > self.replicas:
            self._stop_later(replicas.pop())
        # Once the desired set is fully ready, every other set goes: the old version after a rollout,
        # or an abandoned failed rollout once the spec is rolled back.
        if (len(self._sets) > 1 or self.current != self.desired) and sum(r.ready for r in replicas) >= self.replicas:
            for old_hash in [h for h in self._sets if h != self.desired]:
                for replica in self._sets.pop(old_hash):
                    self._stop_later(replica)
            self.current = self.desired
            self._on_change()

    def _stop_later(self, replica: Replica) -> None:
        task = asyncio.create_task(replica.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    @property
    def rollout_failed(self) -> bool:
        if self.plan_error:
            return True
        new = self._sets.get(self.desired, [])
        return self.current != self.desired and any(r.failures_before_ready >= FAILURES_TO_ABANDON_ROLLOUT for r in new)

    def failure_message(self) -> str:
        if self.plan_error:
            return self.plan_error
        for replica in self._sets.get(self.desired, []):
            if replica.failures_before_ready and replica.message:
                return f"replica {replica.name}: {replica.message}"
        return ""

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("127.0.0.1", r.port) for rs in self._sets.values() for r in rs if r.ready and r.port]

    def desired_pods(self) -> list[tuple[dict[int, int], Path]]:
        """Each replica of the desired template, ready or not, as its container port -> loopback port
        map and its pod directory (where its ZMQ sockets are): an LLM router lists every engine and lets
        its own monitor follow their readiness."""
        return [(dict(r.ports), r.pod_dir) for r in self._sets.get(self.desired, [])]

    @property
    def settled(self) -> bool:
        """No replica is between starting its process and recording it, and none is being stopped: the
        daemon may exec into its next image (``odh restart``) without losing track of a process."""
        return not self._stopping and not any(r.launching for rs in self._sets.values() for r in rs)

    def replica_infos(self) -> list[ReplicaInfo]:
        return [r.info() for rs in self._sets.values() for r in rs]

    def status(self) -> dict[str, Any]:
        all_replicas = [r for rs in self._sets.values() for r in rs]
        updated = self._sets.get(self.desired, [])
        ready = sum(r.ready for r in all_replicas)
        if self.rollout_failed:
            progressing = ("False", "ProgressDeadlineExceeded", self.failure_message())
        elif self.current == self.desired:
            progressing = ("True", "NewReplicaSetAvailable", f"replica set {self.desired} is available")
        else:
            progressing = ("True", "ReplicaSetUpdated", f"replica set {self.desired} is progressing")
        available = ready >= 1 or self.replicas == 0
        return {
            "observedTemplateHash": self.desired,
            "replicas": len(all_replicas),
            "updatedReplicas": len(updated),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                {"type": "Available", "status": "True" if available else "False",
                 "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable"},
                {"type": "Progressing", "status": progressing[0], "reason": progressing[1], "message": progressing[2]},
            ],
        }

    async def stop(self) -> None:
        replicas = [r for rs in self._sets.values() for r in rs]
        self._sets.clear()
        await asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True)
