"""The background processes ``odh up`` starts beside the daemon (the Prefect server, the flow worker, the
webhook receiver): each in its own session, so a stop reaches its children, with a JSON info file (its pid and
what a caller needs) and a log in the state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from serving.platform.local.children import pid_alive


class StartError(RuntimeError):
    """A background process did not come up; the message names the log to read."""


def spawn(argv: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, its output appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=dict(env) if env is not None else None, cwd=cwd)


def wait_started(check: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float, what: str,
                 log_path: Path) -> None:
    """Poll ``check`` until it holds; StartError naming ``log_path`` when ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise StartError(f"{what} exited with {proc.returncode} while starting; see {log_path}")
        if time.monotonic() >= deadline:
            raise StartError(f"{what} was not ready within {timeout:.0f}s; see {log_path}")
        time.sleep(0.25)


def read_info(path: Path) -> dict[str, Any] | None:
    """The info file's object; None when it is missing or not a JSON object."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def alive(pid: object) -> bool:
    """Whether an info file's ``pid`` names a live process."""
    return isinstance(pid, int) and pid > 0 and pid_alive(pid)


def stop(info_path: Path, grace: float = 20.0) -> bool:
    """SIGTERM the process group named in ``info_path``, SIGKILL after ``grace``; remove the file. False when
    the file named no process."""
    found = read_info(info_path)
    info_path.unlink(missing_ok=True)
    pid = found.get("pid") if found else None
    if not isinstance(pid, int) or pid <= 0:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when this process started it (tests)
            os.kill(pid, 0)
            time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # past the grace, or what the leader left behind in its group
    return True
