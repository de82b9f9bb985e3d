"""Start and stop a Prefect server for the embedded platform (``odh up`` / ``odh down``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

PREFECT_PORT = 4200


def start_prefect_server(state: Path, port: int = PREFECT_PORT, timeout: float = 120.0) -> str:
    """Run ``prefect server start`` in the background on SQLite in ``state``; returns its API URL."""
    info_path = state / "prefect.json"
    api_url = f"http://127.0.0.1:{port}/api"
    if prefect_healthy(api_url):
        return api_url
    env = {**os.environ, "PREFECT_HOME": str(state / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    with (state / "prefect.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        )
    info_path.write_text(json.dumps({"pid": proc.pid, "api_url": api_url, "ui_url": f"http://127.0.0.1:{port}"}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}; see {state / 'prefect.log'}")
        if prefect_healthy(api_url):
            return api_url
        time.sleep(0.5)
    raise RuntimeError(f"prefect server did not answer within {timeout:.0f}s; see {state / 'prefect.log'}")


def stop_prefect_server(state: Path) -> bool:
    info_path = state / "prefect.json"
    try:
        pid = int(json.loads(info_path.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return False
    info_path.unlink(missing_ok=True)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
    return True


def prefect_healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
