"""Point Prefect at the right API before it is imported.

With a Prefect server started by ``odh up`` (its URL in ``<state>/prefect.json``) flows report there and
show in its UI. Otherwise Prefect runs its ephemeral server on SQLite under ``<state>/prefect``. An
explicit ``PREFECT_API_URL`` always wins.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from deployments.prefect_server import prefect_healthy


def configure_prefect(state: Path) -> str | None:
    """Set Prefect's environment for ``state``; returns the server URL in use, if any."""
    os.environ.setdefault("PREFECT_HOME", str(state / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_UI_ENABLED", "true")
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    try:
        url = json.loads((state / "prefect.json").read_text())["api_url"]
    except (OSError, ValueError, KeyError):
        return None
    if prefect_healthy(url):
        os.environ["PREFECT_API_URL"] = url
        return url
    return None
