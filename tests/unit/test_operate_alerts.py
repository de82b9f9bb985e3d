"""Alerts on transitions only, what is remembered after delivery, the webhook payload, and the snapshot file."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from serving.operate.alerts import message, remembered_states, transitions, webhook
from serving.operate.assess import Assessment
from serving.operate.health import Health
from serving.operate.inventory import Served
from serving.operate.scrape import Scrape
from serving.operate.slo import SloState
from serving.operate.snapshot import MAX_AGE_SECONDS, Snapshot, load_snapshot, save_snapshot, snapshot_path
from serving.operate.window import TrafficFigures

HEALTHY = Health(True, "", 1, 1, 0, 0, False)
LOOPING = Health(False, "CrashLoopBackOff: exit 1", 0, 1, 4, 2, True)
SLO_OK = SloState("ok")


def assessment(name: str, health: Health = HEALTHY, slo: SloState = SLO_OK) -> Assessment:
    served = Served("InferenceService", "default", name, "Standard", "iris", "2")
    return Assessment(served, TrafficFigures(10.0, 50, 1, 0, 5.0, 9.0), health, slo)


def test_alert_when_entering_a_bad_state_once_and_again_on_recovery() -> None:
    first = transitions([assessment("iris"), assessment("bad", LOOPING)], {})
    assert [(a.deployment, a.severity, a.state, a.previous) for a in first] == [("default/bad", "critical", "crash-loop", "ok")]
    assert first[0].reason == "CrashLoopBackOff: exit 1" and first[0].values["new_restarts"] == 2
    assert (first[0].model_name, first[0].model_version) == ("iris", "2")
    remembered = remembered_states({}, [assessment("iris"), assessment("bad", LOOPING)], True, {"default/iris", "default/bad"})
    assert remembered == {"default/iris": "ok", "default/bad": "crash-loop"}
    assert transitions([assessment("iris"), assessment("bad", LOOPING)], remembered) == []  # still bad: silent
    recovered = transitions([assessment("bad")], remembered)
    assert [(a.severity, a.state, a.previous) for a in recovered] == [("resolved", "ok", "crash-loop")]


def test_slo_breach_is_a_warning_naming_the_broken_promise() -> None:
    (alert,) = transitions([assessment("slow", slo=SloState("breached", ("p95 1500 ms > 1000 ms",)))], {})
    assert (alert.severity, alert.state, alert.reason) == ("warning", "slo-breached", "p95 1500 ms > 1000 ms")


def test_undelivered_transitions_are_not_remembered_so_the_next_run_retries() -> None:
    previous = {"default/bad": "ok", "default/gone": "crash-loop", "team/x": "not-ready"}
    kept = remembered_states(previous, [assessment("bad", LOOPING), assessment("iris")], False,
                             {"default/bad", "default/iris", "team/x"})
    assert kept == {"default/bad": "ok", "default/iris": "ok", "team/x": "not-ready"}  # gone forgotten, team kept


def test_message_subject_and_body() -> None:
    alerts = transitions([assessment("bad", LOOPING)], {})
    subject, body = message(alerts)
    assert subject == "odh: 1 deployment(s) need attention"
    assert body == "[critical] default/bad (iris v2): ok -> crash-loop: CrashLoopBackOff: exit 1"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Any], list[int]]]:
    """A real HTTP server on loopback recording the JSON it gets; ``status`` decides its answer."""
    received: list[Any] = []
    status = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(status[0])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received, status
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_webhook_posts_the_alerts_and_reports_a_failing_receiver(receiver: tuple[str, list[Any], list[int]]) -> None:
    url, received, status = receiver
    alerts = transitions([assessment("bad", LOOPING)], {})
    assert webhook(url, alerts).ok
    assert received[0]["source"] == "odh-operate" and received[0]["alerts"][0]["deployment"] == "default/bad"
    status[0] = 500
    failed = webhook(url, alerts)
    assert not failed.ok and "500" in failed.detail


def test_webhook_nobody_listening_is_reported_not_raised() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    delivery = webhook(f"http://127.0.0.1:{port}/", transitions([assessment("bad", LOOPING)], {}), timeout=1.0)
    assert not delivery.ok and "ConnectError" in delivery.detail


def test_snapshot_round_trip_atomic_and_freshness(tmp_path: Path) -> None:
    assert load_snapshot(tmp_path) is None
    snapshot = Snapshot(scrape=Scrape(taken_at=1000.0, route_requests={"default/iris": {"200": 3}}),
                        restarts={"default/iris": 2}, alert_states={"default/iris": "ok"}, gateway="http://127.0.0.1:1")
    path = save_snapshot(tmp_path, snapshot)
    assert path == snapshot_path(tmp_path) and load_snapshot(tmp_path) == snapshot
    assert [p.name for p in path.parent.iterdir()] == ["last.json"]  # no temporary file left behind
    assert snapshot.fresh(1000.0 + MAX_AGE_SECONDS, "http://127.0.0.1:1")
    assert not snapshot.fresh(1001.0 + MAX_AGE_SECONDS, "http://127.0.0.1:1")
    assert not snapshot.fresh(1001.0, "http://127.0.0.1:2")  # another gateway's counters
    path.write_text("{not json")
    assert load_snapshot(tmp_path) is None
