"""Start and stop the Prefect server and the flow worker of the embedded platform (``odh up`` / ``odh down``).

No Prefect import here: both run as their own processes, each in its own session (so a stop reaches its
children), with pid and log in the state directory:

    <state>/prefect.json, prefect.log            the server (UI and API on 127.0.0.1:<port>)
    <state>/flow_worker.json, flow_worker.log    the flow worker (``deployments.flow_worker``)

Both take long on a loaded 2-core machine (the server's first start migrates its database; the worker
imports Prefect, MLflow and the flows): the waits are generous, and a failure names the log to read.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from deployments.background import StartError, alive, read_info, spawn, stop, wait_started

PREFECT_PORT = 4200
SERVER_FILE = "prefect.json"
SERVER_LOG = "prefect.log"
WORKER_FILE = "flow_worker.json"
WORKER_LOG = "flow_worker.log"
SERVER_TIMEOUT_S = 300.0
WORKER_TIMEOUT_S = 300.0


# The server or the worker did not come up; the message names the log to read.
PrefectStartError = StartError


def start_prefect_server(state: Path, port: int = PREFECT_PORT, timeout: float = SERVER_TIMEOUT_S) -> str:
    """Run ``prefect server start`` in the background on SQLite in ``state``; returns its API URL.

    An already running server for ``state`` is kept (same port); a port another process holds is an error.
    """
    info_path = state / SERVER_FILE
    api_url = f"http://127.0.0.1:{port}/api"
    running = read_info(info_path)
    if running and alive(running.get("pid")) and prefect_healthy(str(running.get("api_url"))):
        return str(running["api_url"])
    if prefect_healthy(api_url):
        raise PrefectStartError(f"port {port} already serves a Prefect API that this state directory did not start: "
                                f"choose another with --prefect-port, or stop that server")
    env = {**os.environ, "PREFECT_HOME": str(state / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": api_url, "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)  # the server itself must not talk to another one
    log_path = state / SERVER_LOG
    proc = spawn([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                 log_path, env=env)
    info_path.write_text(json.dumps({"pid": proc.pid, "api_url": api_url, "ui_url": f"http://127.0.0.1:{port}"}))
    try:
        wait_started(lambda: prefect_healthy(api_url), proc, timeout, f"the Prefect server on port {port}", log_path)
    except PrefectStartError:
        stop_prefect_server(state)
        raise
    return api_url


def stop_prefect_server(state: Path) -> bool:
    """Stop the server ``start_prefect_server`` started for ``state``; False when there was none."""
    return stop(state / SERVER_FILE)


def start_flow_worker(state: Path, api_url: str, timeout: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
    """Start ``deployments.flow_worker`` for ``state`` and wait until its deployments are applied; returns
    what it reports (``deployments``: full name -> id, ``missing``: flow -> why it is not served)."""
    info_path = state / WORKER_FILE
    running = read_info(info_path)
    if running and running.get("ready") and running.get("api_url") == api_url and alive(running.get("pid")):
        return running
    stop(info_path)  # a worker for another server, or one that never got ready
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(state / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "ODH_STATE_DIR": str(state)}
    log_path = state / WORKER_LOG
    proc = spawn([sys.executable, "-m", "deployments.flow_worker", "--state-dir", str(state)], log_path, env=env)
    info_path.write_text(json.dumps({"pid": proc.pid, "api_url": api_url, "ready": False}))

    def ready() -> bool:
        found = read_info(info_path)
        return bool(found and found.get("ready") and found.get("pid") == proc.pid)

    try:
        wait_started(ready, proc, timeout, "the flow worker", log_path)
    except PrefectStartError:
        stop(info_path)
        raise
    return read_info(info_path) or {}


def stop_flow_worker(state: Path) -> bool:
    return stop(state / WORKER_FILE)


def running_api(state: Path) -> str | None:
    """The API URL of the server ``odh up`` started for ``state``, when it answers and its flow worker is ready."""
    server, worker = read_info(state / SERVER_FILE), read_info(state / WORKER_FILE)
    if not server or not worker or not worker.get("ready") or not alive(worker.get("pid")):
        return None
    api_url = str(server.get("api_url"))
    return api_url if worker.get("api_url") == api_url and prefect_healthy(api_url) else None


def server_without_worker(state: Path) -> bool:
    """A server of ``state`` answers but no flow worker serves it (it crashed, or was stopped by hand)."""
    server = read_info(state / SERVER_FILE)
    return bool(server and running_api(state) is None and prefect_healthy(str(server.get("api_url"))))


def prefect_healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False
