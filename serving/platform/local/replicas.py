"""One replica: fetch the model, run the model-server process, probe it, restart it when it dies.

A replica is an asyncio task. It never raises: failures become its ``state`` and ``message``, which the
daemon turns into Deployment and InferenceService status. Restarts back off exponentially (as kubelet's
CrashLoopBackOff does) and the backoff resets once a process has stayed up for a while.

A replica made with ``adopted`` (a daemon re-executed by ``odh restart``, see ``handover.py``) takes over
the process the previous image ran, at the ports it listens on, instead of starting one; it is ready at
once if its readiness probe passed at adoption. When that process ends it is restarted as any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from serving.platform.local.forkserver import ForkedProcess, ForkServer, ReplicaProcess
from serving.platform.local.orphans import ReplicaOwner, forget_process, kill_leftovers, record_process
from serving.platform.local.pods import PodPlan, materialize, replica_environment

if TYPE_CHECKING:
    from serving.platform.local.handover import Adopted

log = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
BACKOFF_RESET_AFTER = 30.0
PROBE_INTERVAL_STARTING = 0.2
# A forked model server is ready a few tenths of a second after it starts: probe it often at first, so
# that the probe's period is not most of a cold start (a refused connection costs microseconds).
PROBE_INTERVAL_FIRST = 0.01
PROBE_FIRST_FOR = 2.0
PROBE_INTERVAL_READY = 2.0
PROBE_FAILURES_TO_UNREADY = 3
STOP_GRACE = 10.0


class ReplicaState(StrEnum):
    PENDING = "Pending"
    INITIALIZING = "Initializing"
    STARTING = "Starting"
    READY = "Ready"
    BACKOFF = "CrashLoopBackOff"
    TERMINATING = "Terminating"
    STOPPED = "Stopped"


# fetch(storage_uri, dest_dir) -> local model dir; blocking, run in a thread.
ModelFetcher = Callable[[str, Path], Path]
# The interpreter that runs a plan's ``python`` command (a runtime environment's, or ours); raises
# PlatformError with the fix when the environment is missing.
PythonResolver = Callable[[PodPlan], str]


@dataclass
class ReplicaInfo:
    name: str
    state: str
    ready: bool
    port: int | None
    pid: int | None
    restarts: int
    failures_before_ready: int
    message: str
    created: float = 0.0  # epoch seconds: the pod's creationTimestamp in `odh get pods`


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Replica:
    def __init__(self, name: str, plan: PodPlan, pod_dir: Path, fetch_model: ModelFetcher, on_change: Callable[[], None],
                 resolve_python: PythonResolver | None = None, fork_server: ForkServer | None = None, *,
                 owner: ReplicaOwner | None = None, adopted: Adopted | None = None) -> None:
        self.name = name
        self.owner = owner  # recorded with its process, so that a restarted daemon can adopt it
        self.plan = plan
        self.pod_dir = pod_dir
        self._fetch_model = fetch_model
        self._on_change = on_change
        self._resolve_python = resolve_python
        self._fork_server = fork_server
        self.state = ReplicaState.PENDING
        # Container port -> loopback port, fixed for the replica's life (as a pod IP is): a restarted
        # engine comes back at the address its router and KV-event subscriber already know.
        self.ports: dict[int, int] = {cp: free_port() for cp in plan.all_ports}
        if adopted is not None:
            self.ports.update(adopted.ports)
        self.port: int | None = self.ports[plan.container_port]
        self.restarts = 0
        # Consecutive starts that died (or failed to fetch) before ever becoming ready: a rollout
        # whose new replicas keep failing is abandoned and the old version keeps serving.
        self.failures_before_ready = 0
        self.message = ""
        self.created = adopted.created if adopted is not None else time.time()
        self._adopted = adopted
        if adopted is not None and adopted.ready:
            self.state = ReplicaState.READY  # an endpoint from the first reconcile after the restart
        # Between starting a process and recording it: a restart must not exec then (the process would be
        # nobody's).
        self.launching = False
        self._proc: ReplicaProcess | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def ready(self) -> bool:
        return self.state is ReplicaState.READY

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"replica {self.name}")

    async def stop(self) -> None:
        self._stopping = True
        self._set(ReplicaState.TERMINATING)
        await self._terminate()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._set(ReplicaState.STOPPED)

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(self.name, self.state.value, self.ready, self.port, self._proc.pid if self._proc else None,
                           self.restarts, self.failures_before_ready, self.message, self.created)

    async def _run(self) -> None:
        backoff = BACKOFF_START
        model_dir: Path | None = None
        while not self._stopping:
            started = time.monotonic()
            try:
                if model_dir is None and self.plan.storage_uri and self._adopted is None:
                    self._set(ReplicaState.INITIALIZING, f"fetching {self.plan.storage_uri}")
                    model_dir = await asyncio.to_thread(self._fetch_model, self.plan.storage_uri, self.pod_dir / "models")
                await self._serve_once(model_dir)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a replica reports, it never crashes the daemon
                self.message = f"{type(exc).__name__}: {exc}"
                log.warning("replica %s failed: %s", self.name, self.message)
            if self._stopping:
                return
            if not self._was_ready:
                self.failures_before_ready += 1
            if time.monotonic() - started > BACKOFF_RESET_AFTER:
                backoff = BACKOFF_START
            self.restarts += 1
            self._set(ReplicaState.BACKOFF, self.message)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _serve_once(self, model_dir: Path | None) -> None:
        self._was_ready = False
        log_path = self.pod_dir / "replica.log"
        adopted, self._adopted = self._adopted, None
        if adopted is not None:
            self._proc = adopted.process
            self._was_ready = adopted.ready
            self._set(ReplicaState.READY if adopted.ready else ReplicaState.STARTING, "")
        else:
            python = self._resolve_python(self.plan) if self._resolve_python else sys.executable
            argv, env = materialize(self.plan, port=self.ports[self.plan.container_port], model_dir=model_dir,
                                    python=python, extra_ports=self.ports, ipc_dir=self.pod_dir)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._set(ReplicaState.STARTING, "")
            self.launching = True
            try:
                self._proc = await self._start_process(argv, env, log_path)
                # A daemon killed from now on leaves a way to stop it; one restarted, a way to adopt it.
                record_process(self.pod_dir, self._proc.pid, self.owner, self.ports,
                               f"http://127.0.0.1:{self.port}{self.plan.readiness_path}")
            finally:
                self.launching = False
        exited = asyncio.create_task(self._proc.wait())
        probe = asyncio.create_task(self._probe_loop())
        try:
            await asyncio.wait({exited, probe}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
        replaced = not exited.done()
        if replaced:  # probing gave up on a live process: replace it (the probe's message says why)
            await self._terminate()
        code = await exited
        self._reap_group()
        if replaced and not self._stopping:
            log.warning("replica %s: %s; replaced", self.name, self.message)
        elif not self._stopping:
            tail = _tail(log_path)
            ended = self._proc.describe_exit() if isinstance(self._proc, ForkedProcess) else f"process exited with code {code}"
            self.message = ended + (f": {tail}" if tail else "")
            log.warning("replica %s: %s", self.name, self.message)

    async def _start_process(self, argv: list[str], container_env: dict[str, str], log_path: Path) -> ReplicaProcess:
        """Fork it from the fork server when it can (a pre-imported runtime: tenths of a second), else spawn
        it (seconds of imports); either way in its own session, so that its group is its pid."""
        env = {**replica_environment(os.environ), **container_env}
        if self._fork_server is not None and self._fork_server.can_fork(argv, container_env):
            forked = await self._fork_server.spawn(argv, env=env, cwd=os.getcwd(), log_path=log_path)
            if forked is not None:
                return forked
        with log_path.open("ab") as log_file:
            return await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )

    async def _probe_loop(self) -> None:
        """Probe until the process should be replaced (then return).

        Readiness moves the replica in and out of its endpoints. With a liveness probe, only the liveness
        probe failing replaces the process, as the kubelet does: a router whose engines are all down stays
        up and reports not ready. Without one, a replica that was ready and stops answering its readiness
        probe is replaced (a hung model server must not hold its slot forever).
        """
        base = f"http://127.0.0.1:{self.port}"
        ready_url = base + self.plan.readiness_path
        live_url = base + self.plan.liveness_path if self.plan.liveness_path else None
        failures = live_failures = 0
        started = time.monotonic()
        # Plain HTTP on loopback: no TLS context (building one loads the CA bundle, 0.1-0.5 s that block the
        # daemon's loop on every replica start) and no proxy from the environment.
        async with httpx.AsyncClient(timeout=2.0, verify=False, trust_env=False) as client:
            while True:
                ok = await _probe(client, ready_url)
                if ok:
                    failures = live_failures = 0
                    if not self.ready:
                        self._was_ready = True
                        self.failures_before_ready = 0
                        self._set(ReplicaState.READY, "")
                elif self.ready:
                    failures += 1
                    if failures >= PROBE_FAILURES_TO_UNREADY:
                        message = f"readiness probe {ready_url} failed {failures} times"
                        if live_url is None:
                            self.message = message
                            return
                        self._set(ReplicaState.STARTING, message)
                if not ok and live_url is not None and self._was_ready:
                    live_failures = 0 if await _probe(client, live_url) else live_failures + 1
                    if live_failures >= PROBE_FAILURES_TO_UNREADY:
                        self.message = f"liveness probe {live_url} failed {live_failures} times"
                        return
                if self._was_ready:
                    interval = PROBE_INTERVAL_READY
                elif time.monotonic() - started < PROBE_FIRST_FOR:
                    interval = min(PROBE_INTERVAL_FIRST, PROBE_INTERVAL_STARTING)
                else:
                    interval = PROBE_INTERVAL_STARTING
                await asyncio.sleep(interval)

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        self._reap_group()

    def _reap_group(self) -> None:
        """Once the leader has exited, nothing of its process group may stay (as a pod's containers go
        with it); then its pid record goes."""
        if self._proc is not None and self._proc.returncode is not None:
            kill_leftovers(self._proc.pid)
            forget_process(self.pod_dir)

    _was_ready = False

    def _set(self, state: ReplicaState, message: str | None = None) -> None:
        self.state = state
        if message is not None:
            self.message = message
        self._on_change()


async def _probe(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(path: Path, limit: int = 400) -> str:
    try:
        data = path.read_bytes()[-4000:].decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return (data[-1] if data else "")[-limit:]
