"""Where the embedded platform keeps its state, and the settings every part reads.

The state directory defaults to ``~/.odh``; ``ODH_STATE_DIR`` or a ``--state-dir`` flag overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR_ENV = "ODH_STATE_DIR"
DEFAULT_GATEWAY_PORT = 8080


def state_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The state directory: the explicit override, else ``$ODH_STATE_DIR``, else ``~/.odh``."""
    chosen = override or os.environ.get(STATE_DIR_ENV) or Path.home() / ".odh"
    return Path(chosen).expanduser().resolve()


RUNTIMES_DIR_ENV = "ODH_RUNTIMES_DIR"


def runtimes_dir(state: Path) -> Path:
    """Where runtime environments (e.g. vLLM's 2 GB venv) live: ``$ODH_RUNTIMES_DIR``, else ``<state>/runtimes``.

    The override lets several state directories (test runs, users) share one environment.
    """
    override = os.environ.get(RUNTIMES_DIR_ENV)
    return Path(override).expanduser().resolve() if override else state / "runtimes"


def model_cache_dir(state: Path) -> Path:
    """The content-addressed model cache shared by every replica on this machine."""
    return state / "models"


def mlflow_tracking_uri(state: Path) -> str:
    """MLflow's default tracking URI: SQLite in the state directory (``MLFLOW_TRACKING_URI`` wins)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state / 'mlflow.db'}"


def mlflow_artifact_root(state: Path) -> str:
    return (state / "mlartifacts").as_uri()
