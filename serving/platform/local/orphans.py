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
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

RECORD_NAME = "process.json"
STOP_GRACE = 10.0
# psutil derives a start time from the boot time and clock ticks: equal for one process, whenever read.
_START_TIME_TOLERANCE = 0.05


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    pgid: int
    create_time: float
    cmdline: list[str]
    exe: str

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
            return cls(int(data["pid"]), int(data["pgid"]), float(data["create_time"]),
                       [str(a) for a in data["cmdline"]], str(data["exe"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(json.dumps(asdict(self)))
        partial.replace(path)  # a reader never sees half a record

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


def record_process(pod_dir: Path, pid: int) -> None:
    """Write the record of a replica process just started (in its own session) in ``pod_dir``."""
    with contextlib.suppress(psutil.Error, ProcessLookupError):
        ProcessRecord.of(pid).save(pod_dir / RECORD_NAME)


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
    groups: list[int] = []
    for path in sorted(pods_dir.glob(f"*/*/{RECORD_NAME}")):
        record = ProcessRecord.load(path)
        if record is not None and record.live_leader() is not None:
            log.warning("stopping replica process group %d (%s) left by a previous daemon",
                        record.pgid, " ".join(record.cmdline)[:200])
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pgid, signal.SIGTERM)
            groups.append(record.pgid)
        path.unlink(missing_ok=True)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline and any(group_members(g) for g in groups):
        time.sleep(0.1)
    for pgid in groups:
        kill_leftovers(pgid)
    return groups


def _exe(proc: psutil.Process) -> str:
    try:
        return proc.exe()
    except psutil.Error:
        return ""
