"""The operate flow end to end: real Prefect, MLflow on SQLite, the embedded platform, real traffic, and alerts
received over HTTP on loopback by a webhook receiver and through a saved CustomWebhookNotificationBlock."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support import FIXTURES, IRIS_DIR, wait_until

from serving.config import mlflow_tracking_uri
from serving.platform.local import LocalPlatform
from serving.registry.version_metrics import VersionMetrics

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

NAMESPACE = "ops"
MODEL = "iris-operate"
V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())
REQUESTS = 40


class Receiver:
    """An HTTP server on 127.0.0.1 that records every JSON body POSTed to it, by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def on(self, path: str) -> list[Any]:
        return [body for got, body in self.received if got == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    found.thread.start()
    try:
        yield found
    finally:
        found.server.shutdown()
        found.server.server_close()
        found.thread.join()


def broken_isvc(model_dir: Path) -> dict[str, Any]:
    """KServe's sklearn sample whose model file is not a model: every replica exits at load, and is restarted."""
    manifest = yaml.safe_load((FIXTURES / "kserve" / "samples" / "v1beta1__sklearn__v1__sklearn.yaml").read_text())
    manifest["metadata"] = {"name": "broken", "namespace": NAMESPACE}
    manifest["spec"]["predictor"]["sklearn"]["storageUri"] = model_dir.as_uri()
    return manifest


def restarts_of(platform: LocalPlatform, deployment: str) -> int:
    return sum(p["restarts"] for p in platform.pods() if p["namespace"] == NAMESPACE and p["deployment"] == deployment)


def latest_overview() -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["serving-overview"])),
                                                sort=ArtifactSort.CREATED_DESC, limit=1)
            return str(found[0].data) if found else ""

    return asyncio.run(read())


def test_operate_records_metrics_publishes_the_overview_and_alerts_on_a_crash_loop(
        odh_state: Path, receiver: Receiver, tmp_path: Path) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from flows.deploy_model import deploy_model
    from flows.operate import operate

    CustomWebhookNotificationBlock(name="odh", url=f"{receiver.url}/block",
                                   json_data={"subject": "{{subject}}", "body": "{{body}}"}).save("operate-e2e", overwrite=True)
    (tmp_path / "model.joblib").write_bytes(b"this is not a joblib file")
    platform = LocalPlatform(odh_state)
    deployed = deploy_model(model_uri=str(IRIS_DIR / "model.joblib"), name="iris", namespace=NAMESPACE,
                            registered_model_name=MODEL, state_dir=str(odh_state))
    platform.apply(broken_isvc(tmp_path))
    try:
        # The platform restarts the broken replica: wait until it has, so the first run finds it crashing.
        wait_until(lambda: restarts_of(platform, "broken-predictor") >= 1, timeout=120, what="the broken replica restarted")
        options: dict[str, Any] = {"namespace": NAMESPACE, "window_seconds": 2.0, "state_dir": str(odh_state),
                                   "alert_webhook_url": f"{receiver.url}/webhook",
                                   "notification_block": "custom-webhook/operate-e2e"}
        first = operate(**options)

        broken = first.assessment(f"{NAMESPACE}/broken")
        iris = first.assessment(f"{NAMESPACE}/iris")
        assert broken is not None and iris is not None
        assert broken.health.crash_loop and broken.state == "crash-loop" and broken.health.ready_replicas == 0
        assert iris.state == "ok" and (iris.health.ready_replicas, iris.health.desired_replicas) == (1, 1)
        assert [(a.deployment, a.severity, a.state) for a in first.alerts] == [(f"{NAMESPACE}/broken", "critical", "crash-loop")]
        assert all(d.ok for d in first.deliveries) and len(first.deliveries) == 2
        (hook,) = receiver.on("/webhook")
        assert [(a["deployment"], a["state"]) for a in hook["alerts"]] == [(f"{NAMESPACE}/broken", "crash-loop")]
        assert hook["alerts"][0]["values"]["restarts"] >= 1
        (note,) = receiver.on("/block")
        assert f"{NAMESPACE}/broken" in note["body"] and "crash-loop" in note["body"] and "attention" in note["subject"]
        assert f"{NAMESPACE}/iris" not in json.dumps(receiver.received)  # the healthy deployment raised none

        with httpx.Client(timeout=30) as client:
            for _ in range(REQUESTS):
                client.post(f"{deployed.url}/v1/models/iris:predict", json=V1_BODY).raise_for_status()
        second = operate(**options)

        iris = second.assessment(f"{NAMESPACE}/iris")
        assert iris is not None and iris.traffic.requests == REQUESTS and iris.traffic.errors == 0
        assert iris.traffic.request_rate > 0 and iris.traffic.p50_ms is not None and iris.traffic.p95_ms is not None
        assert iris.slo.state == "ok"
        assert second.alerts == []  # the broken one is still broken: no second alert, iris still fine
        assert len(receiver.on("/webhook")) == 1 and len(receiver.on("/block")) == 1

        history = VersionMetrics(mlflow_tracking_uri(odh_state)).history(MODEL, deployed.model_version)
        assert set(history) == {"request_rate", "error_rate", "p50_ms", "p95_ms", "ready_replicas", "restarts"}
        assert len(history["request_rate"]) == 2  # one value per run, charted by step
        (step_one, rate_one), (step_two, rate_two) = history["request_rate"]
        assert step_one < step_two and rate_one == 0 and rate_two == pytest.approx(iris.traffic.request_rate)
        assert history["ready_replicas"][-1][1] == 1 and history["p95_ms"][-1][1] == pytest.approx(iris.traffic.p95_ms)

        overview = wait_until(latest_overview, timeout=30, what="the serving-overview artifact")
        row = next(line for line in overview.splitlines() if line.startswith(f"| {NAMESPACE}/iris |"))
        assert f"{MODEL} v{deployed.model_version}" in row and "| 1/1 |" in row and "iris-predictor: 100%" in row
        assert f"| {NAMESPACE}/broken |" in overview and "crash-loop" in overview
    finally:
        platform.delete("InferenceService", NAMESPACE, "broken")
        platform.delete("InferenceService", NAMESPACE, "iris")
        platform.close()
