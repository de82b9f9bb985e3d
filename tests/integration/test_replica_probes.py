"""Readiness and liveness as the kubelet treats them, on a real process: failing readiness takes a replica out of
service without restarting it; only failing liveness (or readiness, when no liveness probe is declared)
replaces the process."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import wait_until_async

from serving.platform.local import replicas
from serving.platform.local.pods import PodPlan
from serving.platform.local.replicas import Replica

pytestmark = pytest.mark.integration

# /ready answers 200 while the flag file exists; /health answers 200 while the other one does, and counts
# its probes (one line each) in a third file.
SERVER = """
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
ready, live, probes = sys.argv[1], sys.argv[2], sys.argv[3]
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            with open(probes, "a") as f:
                f.write("probe\\n")
        flag = {"/ready": ready, "/health": live}.get(self.path)
        self.send_response(200 if flag and os.path.exists(flag) else 503)
        self.end_headers()
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def plan(tmp_path: Path, liveness: bool) -> PodPlan:
    return PodPlan(("python", "-c", SERVER, str(tmp_path / "ready"), str(tmp_path / "live"), str(tmp_path / "probes")),
                   {}, 8080, "/ready", None, liveness_path="/health" if liveness else None)


def liveness_probes(tmp_path: Path) -> int:
    try:
        return (tmp_path / "probes").read_text().count("probe")
    except FileNotFoundError:
        return 0


async def wait_for(condition, what: str = "condition") -> None:
    await wait_until_async(condition, timeout=30, interval=0.05, what=what)


@pytest.fixture(autouse=True)
def fast_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replicas, "PROBE_INTERVAL_READY", 0.1)
    monkeypatch.setattr(replicas, "PROBE_INTERVAL_STARTING", 0.05)


async def test_failing_readiness_with_a_liveness_probe_keeps_the_process(tmp_path: Path) -> None:
    (tmp_path / "ready").touch()
    (tmp_path / "live").touch()
    replica = Replica("r", plan(tmp_path, liveness=True), tmp_path / "pod", lambda uri, dest: dest, lambda: None)
    replica.start()
    try:
        await wait_for(lambda: replica.ready)
        pid = replica.info().pid
        (tmp_path / "ready").unlink()
        await wait_for(lambda: not replica.ready)
        assert "readiness probe" in replica.message
        # Readiness keeps failing while liveness is probed and passes, more times than it takes to give up on a
        # probe: the replica stays out of service and is not restarted.
        probed = liveness_probes(tmp_path)
        await wait_for(lambda: liveness_probes(tmp_path) >= probed + 2 * replicas.PROBE_FAILURES_TO_UNREADY,
                       what="liveness probed while not ready")
        assert replica.info().pid == pid and replica.restarts == 0  # out of service, not restarted
        (tmp_path / "ready").touch()
        await wait_for(lambda: replica.ready)
        assert replica.info().pid == pid
        (tmp_path / "ready").unlink()
        (tmp_path / "live").unlink()
        await wait_for(lambda: replica.restarts == 1)  # liveness failed: replaced
        assert "liveness probe" in replica.message
    finally:
        await replica.stop()


async def test_without_a_liveness_probe_a_replica_that_stops_being_ready_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "ready").touch()
    replica = Replica("r", plan(tmp_path, liveness=False), tmp_path / "pod", lambda uri, dest: dest, lambda: None)
    replica.start()
    try:
        await wait_for(lambda: replica.ready)
        port = replica.port
        (tmp_path / "ready").unlink()
        await wait_for(lambda: replica.restarts == 1)
        assert "readiness probe" in replica.message
        (tmp_path / "ready").touch()
        await wait_for(lambda: replica.ready)
        assert replica.port == port  # a replica keeps its address across restarts
    finally:
        await replica.stop()
