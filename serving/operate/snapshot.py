"""What one operate run leaves for the next: its last scrape, restart counts and alert states.

Kept in ``<state>/operate/last.json``, written atomically (a temporary file renamed over it), so a run
that dies half-way or two runs at once never leave a torn file. A missing, unreadable or stale snapshot
(older than ``MAX_AGE_SECONDS``) makes the next run measure its own window instead.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from serving.operate.scrape import Scrape

log = logging.getLogger(__name__)

MAX_AGE_SECONDS = 600.0
FILE = Path("operate") / "last.json"


class Snapshot(BaseModel):
    scrape: Scrape
    restarts: dict[str, int] = Field(default_factory=dict)  # deployment key -> restart total
    alert_states: dict[str, str] = Field(default_factory=dict)  # deployment key -> state last alerted
    gateway: str = ""  # the gateway scraped: another one's counters do not continue these

    def fresh(self, now: float, gateway: str) -> bool:
        return self.gateway == gateway and 0 <= now - self.scrape.taken_at <= MAX_AGE_SECONDS


def snapshot_path(state: Path) -> Path:
    return state / FILE


def load_snapshot(state: Path) -> Snapshot | None:
    """The previous run's snapshot, or None (none yet, or unreadable: logged and treated as a first run)."""
    path = snapshot_path(state)
    try:
        return Snapshot.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        log.warning("ignoring unreadable operate snapshot %s: %s", path, exc)
        return None


def save_snapshot(state: Path, snapshot: Snapshot) -> Path:
    path = snapshot_path(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".last-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(snapshot.model_dump_json())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
