"""Prefect's environment for the flows: set on ``import flows``, before Prefect itself is imported.

The Python API, the CLI and the demo all run the flows with the same settings:

- ``PREFECT_HOME`` in ``<state>/prefect`` (once ``odh up`` has made the state directory): the ephemeral
  server's SQLite lives in the state directory.
- ``PREFECT_SERVER_ANALYTICS_ENABLED=false``: no telemetry. Prefect's telemetry service is also what
  failed a first run on a fresh database (two writers of its session row in the new database: an
  IntegrityError, or "database is locked").
- ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120``: the ephemeral server's first start migrates
  a new database, which took over Prefect's default 20 s on a loaded 2-core machine.
- ``PREFECT_API_URL`` of the ``odh up --prefect`` server (``<state>/prefect.json``) when it answers, so
  that flow runs show in its UI.

A variable the user set wins. Calling ``configure_prefect`` again for another state directory (the
CLI's ``--state-dir``) replaces what the previous call chose, and refreshes Prefect's settings when
Prefect was imported meanwhile.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 120
_MANAGED = ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
            "PREFECT_UI_ENABLED", "PREFECT_API_URL")
_chosen: dict[str, str] = {}  # what configure_prefect set, as opposed to the user


def configure_prefect(state: Path) -> str | None:
    """Set Prefect's environment for ``state``; returns the server URL in use, if any."""
    before = {name: os.environ.get(name) for name in _MANAGED}
    for name, value in _chosen.items():
        if os.environ.get(name) == value:
            del os.environ[name]
    _chosen.clear()
    wanted = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(STARTUP_TIMEOUT_S),
        "PREFECT_UI_ENABLED": "true",
    }
    if state.is_dir():  # `odh up` made it; importing flows creates no state directory of its own
        wanted["PREFECT_HOME"] = str(state / "prefect")
    if not os.environ.get("PREFECT_API_URL"):
        server = running_server(state)
        if server is not None:
            wanted["PREFECT_API_URL"] = server
    for name, value in wanted.items():
        if name not in os.environ:
            os.environ[name] = _chosen[name] = value
    if "prefect.context" in sys.modules and before != {name: os.environ.get(name) for name in _MANAGED}:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
    return os.environ.get("PREFECT_API_URL")


def running_server(state: Path) -> str | None:
    """The API URL of the Prefect server ``odh up --prefect`` started for ``state``, if it answers."""
    try:
        url = json.loads((state / "prefect.json").read_text())["api_url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        healthy = httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return None
    return url if healthy else None
