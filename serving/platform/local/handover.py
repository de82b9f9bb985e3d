"""``odh restart``: the daemon re-executes itself in place, and the new image adopts what the old one ran.

Why ``os.execv`` rather than a new process handed the sockets over a Unix socket (SCM_RIGHTS): the pid
stays the same, so every replica the daemon spawned and its fork server stay *its children*: their exit
codes still reach it (``children.AdoptedChild`` reaps them by pid) and the zygote keeps reporting its own
children's exits on a control socket that simply stays open. A second process could receive the sockets
but never the children: their ends would be lost to whoever reaps orphans. exec also needs no protocol: the
descriptors to keep are made inheritable and named on the new command line (``--handover JSON``).

The old image, on SIGHUP (``Daemon``): the gateway stops accepting (a duplicate of its listening socket
keeps the port listening: new connections wait in the kernel's backlog, none is refused), finishes the
requests in flight (each answered with ``Connection: close``), stops the control API the same way, waits
until no replica is half started, and execs. Idle keep-alive client connections are never closed: closing
one races with the client's next request on it (the client gets the close instead of an answer, and a POST
is not retried). The gateway stops reading them instead (*parks* them), and their descriptors go over too,
so whatever a client sent meanwhile waits in the kernel's socket buffer. The new image keeps the lock,
serves the control API on the inherited socket at once, reconciles with an ``Adopter`` open, so that each
``DeploymentRunner`` takes a live matching replica (same namespace, Deployment, pod-template hash and pod
directory; its pid not reused) instead of starting one, stops the replicas no runner claimed, and only then
serves the gateway on the inherited listening socket and reads on the parked client connections. A
replica whose readiness probe passed at adoption is an endpoint from the first reconcile.

A daemon that *crashed* (SIGKILL) hands nothing over: the next ``odh up`` stops its orphans as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil

from serving.platform.local.children import AdoptedChild
from serving.platform.local.forkserver import ForkedProcess, ForkServer, ReplicaProcess, ZygoteHandover
from serving.platform.local.orphans import (
    RECORD_NAME,
    Adoption,
    ProcessRecord,
    ReplicaOwner,
    adoption_for,
    load_record,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

HANDOVER_FLAG = "--handover"
PROBE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Handover:
    """The descriptors (kept open across ``os.execv``) and the zygote the next image takes over."""

    gateway_fd: int  # the gateway's listening socket
    api_fd: int  # the control API's listening Unix socket
    lock_fd: int  # the state directory's lock, held across the exec
    zygote: ZygoteHandover | None
    # The gateway's idle keep-alive client connections (``Gateway.idle_client_fds``): never closed across a
    # restart, so a request a client sends on one meanwhile waits in its socket buffer for the next image.
    client_fds: tuple[int, ...] = ()

    def fds(self) -> list[int]:
        return [self.gateway_fd, self.api_fd, self.lock_fd, *([self.zygote.fd] if self.zygote else []),
                *self.client_fds]

    def to_arg(self) -> str:
        return json.dumps({"gateway_fd": self.gateway_fd, "api_fd": self.api_fd, "lock_fd": self.lock_fd,
                           "zygote": self.zygote.to_json() if self.zygote else None,
                           "client_fds": list(self.client_fds)})

    @classmethod
    def from_arg(cls, text: str) -> Handover:
        """Parse ``--handover``; a ValueError names what is wrong (only a daemon image writes this flag)."""
        try:
            data = json.loads(text)
            zygote = data.get("zygote")
            return cls(int(data["gateway_fd"]), int(data["api_fd"]), int(data["lock_fd"]),
                       ZygoteHandover.from_json(zygote) if zygote else None,
                       _descriptors(data.get("client_fds", [])))  # absent: an image from before client handover
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{HANDOVER_FLAG}: not a handover from a previous daemon image ({exc}); it is written "
                             "by the daemon itself on SIGHUP (`odh restart`), never by hand") from exc


def _descriptors(value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(fd, int) and not isinstance(fd, bool) and fd >= 0 for fd in value):
        raise ValueError(f"client_fds must be a list of descriptor numbers, not {value!r}")
    return tuple(value)


def inherited_sockets(fds: Iterable[int]) -> list[socket.socket]:
    """``inherited_socket`` for each of ``fds``; one that is no longer a socket is skipped with a warning."""
    socks = []
    for fd in fds:
        try:
            socks.append(inherited_socket(fd))
        except OSError as exc:
            log.warning("restart: descriptor %d handed over is not a socket any more (%s); skipped", fd, exc)
    return socks


def inherit(fds: Iterable[int]) -> None:
    """Keep ``fds`` open across the exec (Python opens every descriptor close-on-exec)."""
    for fd in fds:
        os.set_inheritable(fd, True)


def inherited_socket(fd: int) -> socket.socket:
    """A socket handed over by the previous image, no longer inheritable (replicas must not get it)."""
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    return sock


def reap_exited_children(keep: Iterable[int] = ()) -> list[int]:
    """Reap children of the previous image that exited before this one watched them (zombies hold their
    pids); ``keep`` (the zygote) is reaped by whoever watches it."""
    kept = set(keep)
    reaped = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
            if child.pid not in kept and child.status() == psutil.STATUS_ZOMBIE and os.waitpid(child.pid, os.WNOHANG)[0]:
                reaped.append(child.pid)
    return reaped


@dataclass
class Adopted:
    """A running replica process a new ``Replica`` takes over instead of starting one."""

    process: ReplicaProcess
    ports: dict[int, int]
    ready: bool  # its readiness probe passed at adoption
    created: float


class Adopter:
    """The replicas a re-executed daemon found running, claimed by ``DeploymentRunner``s as they create
    replicas; ``close`` ends claiming and returns the records nobody claimed (for ``stop_records``)."""

    def __init__(self, pods_dir: Path, fork_server: ForkServer | None) -> None:
        self.pods_dir = pods_dir
        self.fork_server = fork_server
        self.open = True
        self._records: dict[Path, ProcessRecord] = {}
        self._ready: dict[Path, bool] = {}
        self.claimed: set[Path] = set()

    async def scan(self) -> None:
        """Read every replica record and probe the readiness of those whose process runs as recorded."""
        for path in sorted(self.pods_dir.glob(f"*/*/{RECORD_NAME}")):
            record = ProcessRecord.load(path)
            if record is not None:
                self._records[path.parent] = record
        live = {pod: r for pod, r in self._records.items()
                if r.owner is not None and adoption_for(r, r.owner) is Adoption.ADOPT}
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, verify=False, trust_env=False) as client:
            results = await asyncio.gather(*(_probe(client, r) for r in live.values()))
        self._ready = dict(zip(live, results, strict=True))

    def claim(self, pod_dir: Path, owner: ReplicaOwner) -> Adopted | None:
        """The live replica recorded in ``pod_dir`` if it is ``owner``'s, now watched by this image."""
        if not self.open or pod_dir in self.claimed:
            return None
        record = self._records.get(pod_dir) or load_record(pod_dir)
        if record is None:
            return None
        decision = adoption_for(record, owner)
        if decision is not Adoption.ADOPT:
            log.info("not adopting the replica in %s: %s", pod_dir, decision.value)
            return None
        self.claimed.add(pod_dir)
        log.info("adopted replica %s (pid %d) from the previous daemon image", pod_dir.name, record.pid)
        return Adopted(self._watch(record.pid), record.port_map(), self._ready.get(pod_dir, False), record.create_time)

    def close(self) -> list[ProcessRecord]:
        """No more claims; the records of live replicas nobody claimed (their record files are removed now,
        before a replica started in their place writes its own)."""
        self.open = False
        unclaimed = []
        for pod_dir, record in self._records.items():
            if pod_dir not in self.claimed:
                unclaimed.append(record)
                with contextlib.suppress(OSError):
                    if load_record(pod_dir) == record:
                        (pod_dir / RECORD_NAME).unlink()
        self._records.clear()
        return unclaimed

    def _watch(self, pid: int) -> ReplicaProcess:
        """Whoever can report this process's exit: this image (a spawned replica is still its child), the
        zygote (a forked one), or, failing both, the kernel through a pidfd (exit code lost)."""
        try:
            parent = psutil.Process(pid).ppid()
        except psutil.Error:
            parent = -1
        if parent == os.getpid():
            child = AdoptedChild(pid)
            child.watch()
            return child
        if self.fork_server is not None and parent == self.fork_server.pid:
            return self.fork_server.adopt_child(pid)
        orphan = ForkedProcess(pid)
        orphan.orphaned()
        return orphan


async def _probe(client: httpx.AsyncClient, record: ProcessRecord) -> bool:
    if not record.ready_url:
        return False
    try:
        return (await client.get(record.ready_url)).status_code == 200
    except httpx.HTTPError:
        return False
