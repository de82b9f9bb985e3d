"""Pid records, so that no replica outlives its daemon.

Each replica runs in its own session (its process group id is its pid) and leaves a record beside its
files: pid, process group, the start time psutil reads for the pid, the command line and the executable.
The daemon drops the record once the process has exited. A record still there when a daemon starts (or
when ``odh down`` finds no daemon) names a replica whose daemon was killed: its whole process group is
stopped, TERM then KILL, as the daemon itself would have stopped it.

A pid is only a number the kernel hands out again: a record kills nothing unless the live process
with that pid started at the recorded time and runs the recorded command (or executable, for a process
that renamed itself). A process group cannot be recycled while any member lives, so once the leader
matches, signalling its group reaches only what the replica started.

A record also says whose replica it is (namespace, Deployment, pod-template hash), where it listens
(container port -> loopback port) and where its readiness probe is: what a daemon re-executed by
``odh restart`` needs to adopt the replica instead of replacing it (``adoption_for``; ``handover.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

RECORD_NAME = "process.json"
STOP_GRACE = 10.0
# psutil derives a start time from the boot time and clock ticks: equal for one process, whenever read.
_START_TIME_TOLERANCE = 0.05


@dataclass(frozen=True)
class ReplicaOwner:
    """Whose replica a process is: what a restarted daemon matches before it adopts the process."""

    namespace: str
    deployment: str
    template_hash: str


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    pgid: int
    create_time: float
    cmdline: list[str]
    exe: str
    # For adoption across a restart (absent from records of replicas started without an owner).
    owner: ReplicaOwner | None = None
    ports: tuple[tuple[int, int], ...] = ()  # (container port, loopback port)
    ready_url: str = ""  # its readiness probe

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        """The record of the live process ``pid``. Raises psutil.NoSuchProcess when it is gone."""
        proc = psutil.Process(pid)
        with proc.oneshot():
            return cls(pid, os.getpgid(pid), proc.create_time(), proc.cmdline(), _exe(proc))

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        try:
            data = json.loads(path.read_text())
            owner = data.get("owner")
            return cls(int(data["pid"]), int(data["pgid"]), float(data["create_time"]),
                       [str(a) for a in data["cmdline"]], str(data["exe"]),
                       ReplicaOwner(str(owner["namespace"]), str(owner["deployment"]), str(owner["template_hash"]))
                       if isinstance(owner, dict) else None,
                       tuple((int(c), int(h)) for c, h in data.get("ports") or ()),
                       str(data.get("ready_url") or ""))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(json.dumps(asdict(self)))
        partial.replace(path)  # a reader never sees half a record

    def port_map(self) -> dict[int, int]:
        return dict(self.ports)

    def live_leader(self) -> psutil.Process | None:
        """The recorded process if it still runs as recorded; None when it is gone or its pid was recycled."""
        try:
            proc = psutil.Process(self.pid)
            with proc.oneshot():
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return None
                same_start = abs(proc.create_time() - self.create_time) <= _START_TIME_TOLERANCE
                same_command = proc.cmdline() == self.cmdline or _exe(proc) == self.exe
                same_group = os.getpgid(self.pid) == self.pgid
        except (psutil.Error, ProcessLookupError):
            return None
        return proc if same_start and same_command and same_group else None


def record_process(pod_dir: Path, pid: int, owner: ReplicaOwner | None = None, ports: dict[int, int] | None = None,
                   ready_url: str = "") -> None:
    """Write the record of a replica process just started (in its own session) in ``pod_dir``; ``owner``,
    ``ports`` and ``ready_url`` let a restarted daemon adopt it."""
    with contextlib.suppress(psutil.Error, ProcessLookupError):
        record = replace(ProcessRecord.of(pid), owner=owner, ports=tuple(sorted((ports or {}).items())),
                         ready_url=ready_url)
        record.save(pod_dir / RECORD_NAME)


def load_record(pod_dir: Path) -> ProcessRecord | None:
    return ProcessRecord.load(pod_dir / RECORD_NAME)


class Adoption(StrEnum):
    """What a restarted daemon does with a replica record it finds where it would start a replica."""

    ADOPT = "adopt"  # the recorded process runs, as recorded, for this Deployment's pod template
    GONE = "gone"  # the process exited (or is a zombie)
    PID_REUSED = "pid-reused"  # the pid now names another process
    OTHER_OWNER = "other-owner"  # a replica of another Deployment, or one from a record without an owner
    TEMPLATE_CHANGED = "template-changed"  # this Deployment's replica, of another pod template


def adoption_for(record: ProcessRecord, wanted: ReplicaOwner) -> Adoption:
    """Whether ``record`` names a live replica a daemon wanting a replica of ``wanted`` may adopt."""
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return Adoption.GONE
    except psutil.Error:
        return Adoption.GONE
    if record.live_leader() is None:  # alive, but not the process recorded (another start time or command)
        return Adoption.PID_REUSED
    if record.owner is None or (record.owner.namespace, record.owner.deployment) != (wanted.namespace, wanted.deployment):
        return Adoption.OTHER_OWNER
    if record.owner.template_hash != wanted.template_hash:
        return Adoption.TEMPLATE_CHANGED
    return Adoption.ADOPT


def forget_process(pod_dir: Path) -> None:
    """Drop the record once the replica's process has exited."""
    (pod_dir / RECORD_NAME).unlink(missing_ok=True)


def group_members(pgid: int) -> list[psutil.Process]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
    return members


def kill_leftovers(pgid: int) -> None:
    """SIGKILL what remains of a replica's process group after its leader exited (while any member lives
    the group id cannot be handed to anyone else, so this reaches only the replica's own children)."""
    if group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def stop_orphans(pods_dir: Path, grace: float = STOP_GRACE) -> list[int]:
    """Stop every replica a previous daemon left running under ``pods_dir``; returns their pids.

    Call it only while no daemon runs for this state directory (holding its lock): a live daemon's
    replicas have records too.
    """
    records: list[ProcessRecord] = []
    for path in sorted(pods_dir.glob(f"*/*/{RECORD_NAME}")):
        record = ProcessRecord.load(path)
        if record is not None:
            records.append(record)
        path.unlink(missing_ok=True)
    return stop_records(records, grace)


def stop_records(records: list[ProcessRecord], grace: float = STOP_GRACE) -> list[int]:
    """Stop the process group of each record whose process still runs as recorded (TERM, then KILL after
    ``grace`` seconds); returns their process groups. A restarted daemon stops the replicas it did not
    adopt this way."""
    groups: list[int] = []
    for record in records:
        if record.live_leader() is not None:
            log.warning("stopping replica process group %d (%s) left by a previous daemon",
                        record.pgid, " ".join(record.cmdline)[:200])
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pgid, signal.SIGTERM)
            groups.append(record.pgid)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline and any(group_members(g) for g in groups):
        for pgid in groups:
            _reap_if_child(pgid, wait=False)  # a child of ours stays a zombie (a member) until reaped
        time.sleep(0.1)
    for pgid in groups:
        kill_leftovers(pgid)
        _reap_if_child(pgid)
    return groups


def _reap_if_child(pid: int, *, wait: bool = True) -> None:
    """Reap ``pid`` if it is this process's own child (a re-executed daemon's replica from before the
    restart, stopped): nothing else would, and a zombie holds its pid."""
    with contextlib.suppress(ChildProcessError, OSError):
        for _ in range(50 if wait else 1):
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            if wait:
                time.sleep(0.02)


def _exe(proc: psutil.Process) -> str:
    try:
        return proc.exe()
    except psutil.Error:
        return ""
