"""Start and stop the Prefect server and the flow worker of the embedded platform (``odh up`` / ``odh down``).

No Prefect import here: both run as their own processes, each in its own session (so a stop reaches its
children), with pid and log in the state directory:

    <state>/prefect.json, prefect.log            the server (UI and API on 127.0.0.1:<port>)
    <state>/flow_worker.json, flow_worker.log    the flow worker (``deployments.flow_worker``)

Both take long on a loaded 2-core machine (the server's first start migrates its database; the worker
imports Prefect, MLflow and the flows): the waits are generous, and a failure names the log to read.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

PREFECT_PORT = 4200
SERVER_FILE = "prefect.json"
SERVER_LOG = "prefect.log"
WORKER_FILE = "flow_worker.json"
WORKER_LOG = "flow_worker.log"
SERVER_TIMEOUT_S = 300.0
WORKER_TIMEOUT_S = 300.0


class PrefectStartError(RuntimeError):
    """The server or the worker did not come up; the message names the log to read."""


def start_prefect_server(state: Path, port: int = PREFECT_PORT, timeout: float = SERVER_TIMEOUT_S) -> str:
    """Run ``prefect server start`` in the background on SQLite in ``state``; returns its API URL.

    An already running server for ``state`` is kept (same port); a port another process holds is an error.
    """
    info_path = state / SERVER_FILE
    api_url = f"http://127.0.0.1:{port}/api"
    running = _read(info_path)
    if running and _alive(running.get("pid")) and prefect_healthy(str(running.get("api_url"))):
        return str(running["api_url"])
    if prefect_healthy(api_url):
        raise PrefectStartError(f"port {port} already serves a Prefect API that this state directory did not start: "
                                f"choose another with --prefect-port, or stop that server")
    env = {**os.environ, "PREFECT_HOME": str(state / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": api_url, "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)  # the server itself must not talk to another one
    log_path = state / SERVER_LOG
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        )
    info_path.write_text(json.dumps({"pid": proc.pid, "api_url": api_url, "ui_url": f"http://127.0.0.1:{port}"}))
    try:
        _wait(lambda: prefect_healthy(api_url), proc, timeout, f"the Prefect server on port {port}", log_path)
    except PrefectStartError:
        stop_prefect_server(state)
        raise
    return api_url


def stop_prefect_server(state: Path) -> bool:
    """Stop the server ``start_prefect_server`` started for ``state``; False when there was none."""
    return _stop(state / SERVER_FILE)


def start_flow_worker(state: Path, api_url: str, timeout: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
    """Start ``deployments.flow_worker`` for ``state`` and wait until its deployments are applied; returns
    what it reports (``deployments``: full name -> id, ``missing``: flow -> why it is not served)."""
    info_path = state / WORKER_FILE
    running = _read(info_path)
    if running and running.get("ready") and running.get("api_url") == api_url and _alive(running.get("pid")):
        return running
    _stop(info_path)  # a worker for another server, or one that never got ready
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(state / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "ODH_STATE_DIR": str(state)}
    log_path = state / WORKER_LOG
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployments.flow_worker", "--state-dir", str(state)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        )
    info_path.write_text(json.dumps({"pid": proc.pid, "api_url": api_url, "ready": False}))

    def ready() -> bool:
        found = _read(info_path)
        return bool(found and found.get("ready") and found.get("pid") == proc.pid)

    try:
        _wait(ready, proc, timeout, "the flow worker", log_path)
    except PrefectStartError:
        _stop(info_path)
        raise
    return _read(info_path) or {}


def stop_flow_worker(state: Path) -> bool:
    return _stop(state / WORKER_FILE)


def running_api(state: Path) -> str | None:
    """The API URL of the server ``odh up`` started for ``state``, when it answers and its flow worker is ready."""
    server, worker = _read(state / SERVER_FILE), _read(state / WORKER_FILE)
    if not server or not worker or not worker.get("ready") or not _alive(worker.get("pid")):
        return None
    api_url = str(server.get("api_url"))
    return api_url if worker.get("api_url") == api_url and prefect_healthy(api_url) else None


def server_without_worker(state: Path) -> bool:
    """A server of ``state`` answers but no flow worker serves it (it crashed, or was stopped by hand)."""
    server = _read(state / SERVER_FILE)
    return bool(server and running_api(state) is None and prefect_healthy(str(server.get("api_url"))))


def prefect_healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(check: Any, proc: subprocess.Popen[bytes], timeout: float, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise PrefectStartError(f"{what} exited with {proc.returncode} while starting; see {log_path}")
        if time.monotonic() >= deadline:
            raise PrefectStartError(f"{what} was not ready within {timeout:.0f}s; see {log_path}")
        time.sleep(0.25)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(info_path: Path, grace: float = 20.0) -> bool:
    """SIGTERM the process group named in ``info_path``, SIGKILL after ``grace``; remove the file."""
    found = _read(info_path)
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
