"""Start, stop and restart the daemon as a background process (``odh up`` / ``odh down`` / ``odh restart``)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from serving.errors import DaemonNotRunningError, PlatformError
from serving.platform.local.client import LocalPlatform
from serving.platform.local.daemon import DaemonFiles
from serving.platform.local.orphans import stop_orphans


def daemon_info(state: Path) -> dict[str, Any] | None:
    """The running daemon's pid and gateway, or None when none runs for this state directory."""
    files = DaemonFiles(state)
    try:
        info = json.loads(files.info.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, PermissionError, KeyError, ValueError):
        return None
    return info if LocalPlatform(state).is_running() else None


def start_daemon(state: Path, gateway_port: int, *, timeout: float = 30.0, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start a detached daemon unless one already runs; returns its info once its API answers."""
    running = daemon_info(state)
    if running is not None:
        return running
    files = DaemonFiles(state)
    state.mkdir(parents=True, exist_ok=True)
    files.info.unlink(missing_ok=True)
    with files.log.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.platform.local", "--state-dir", str(state), "--gateway-port", str(gateway_port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PlatformError(f"the odh daemon exited with {proc.returncode}; see {files.log}:\n{_tail(files.log)}")
        info = daemon_info(state)
        if info is not None:
            return info
        time.sleep(0.1)
    proc.terminate()
    raise PlatformError(f"the odh daemon did not start within {timeout:.0f}s; see {files.log}")


def restart_daemon(state: Path, *, timeout: float = 120.0) -> dict[str, Any]:
    """Restart the running daemon in place without losing a request (SIGHUP: it drains, re-executes itself
    and adopts its replicas; see ``handover.py``); returns the new image's info once its API answers.

    Raises DaemonNotRunningError when no daemon runs, PlatformError when it exits or does not come back
    within ``timeout`` seconds (its log's tail says why).
    """
    files = DaemonFiles(state)
    before = daemon_info(state)
    if before is None:
        raise DaemonNotRunningError(f"no odh daemon runs on {state}: start it with `odh up`")
    pid = int(before["pid"])
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            raise PlatformError(f"the odh daemon exited during its restart; see {files.log}:\n{_tail(files.log)}")
        info = daemon_info(state)
        if info is not None and info.get("started") != before.get("started"):
            return info
        time.sleep(0.1)
    raise PlatformError(f"the odh daemon did not come back from its restart within {timeout:.0f}s; see {files.log}")


def stop_daemon(state: Path, *, timeout: float = 30.0) -> bool:
    """Stop the daemon and every replica it runs, and any replica a killed daemon left behind; False
    when nothing was running."""
    files = DaemonFiles(state)
    info = daemon_info(state)
    if info is not None:
        _stop_process(int(info["pid"]), timeout)
    return _stop_orphans(files) or info is not None


def _stop_process(pid: int, timeout: float) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # its replicas run in their own sessions: _stop_orphans stops them
    deadline = time.monotonic() + 5.0
    while not _exited(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _stop_orphans(files: DaemonFiles) -> bool:
    """Stop the replicas a dead daemon left, holding the daemon lock so that no daemon starts meanwhile
    (a live daemon holds the lock: its replicas are its own to stop)."""
    if not files.lock.exists():
        return False
    with files.lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return bool(stop_orphans(files.pods))


def _exited(pid: int) -> bool:
    """True once ``pid`` is gone, reaping it when this process started it (a zombie still takes kill 0)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        return reaped == pid
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
