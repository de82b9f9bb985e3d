"""From a new MLflow model version to the first request the canary answers, through webhooks.

    .venv/bin/python benchmarks/webhook_to_canary.py [--rounds 3]

Everything real, on loopback, in a fresh state directory: the odh daemon and gateway, a Prefect server with the
platform's flow worker (in this process, serving ``on-new-model-version``), the webhook receiver process, and
``mlflow server`` on the platform's SQLite registry with a webhook to the receiver. One InferenceService
(Standard, canary 50 %, analysis window 3 s) serves iris under steady load (3 keep-alive clients through the
gateway). Each round registers a new version through the MLflow server's REST API (``create_model_version``;
its source is an ``http://`` URL on a loopback file server, since MLflow's server takes no bare local path) and
times from that call returning to the first answer from the new model seen by the load: MLflow's delivery,
the signature check, the flow run's creation, the worker picking it up (0.5 s poll), the rollout's upload
and canary apply, the canary replica's start and model load, and the gateway's traffic split. The rollout
then finishes (promotion) before the next round; rounds alternate between two models so each answer says
which one served it. Printed, and written to ``benchmarks/results/webhook_to_canary.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import functools
import http.server
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from load import LoadResult, drive  # noqa: E402
from support import IRIS_DIR, free_port, served_by, wait_http, wait_until, write_constant_model  # noqa: E402

NAME = "bench-iris"
V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="odh-webhook-bench-"))
    prefect_port = free_port()
    os.environ.update(PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api", PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      PREFECT_HOME=str(state / "prefect-client"))
    from deployments.prefect_server import start_prefect_server, stop_prefect_server
    from deployments.webhooks import load_or_create_secret, register_mlflow_webhook, start_receiver, stop_receiver
    from serving.platform.local import start_daemon, stop_daemon

    procs: list[subprocess.Popen[bytes]] = []
    try:
        start_daemon(state, free_port())
        api = start_prefect_server(state, prefect_port)
        models = _model_server(state)
        tracking = _mlflow_server(state, procs)
        receiver = start_receiver(state, free_port(), api)
        register_mlflow_webhook(tracking, receiver, load_or_create_secret(state))
        url = _deploy_v1(state)
        timings = _rounds(state, tracking, models, url, args.rounds)
    finally:
        stop_receiver(state)
        for proc in procs:
            _kill(proc)
        stop_prefect_server(state)
        stop_daemon(state)
    median = statistics.median(timings)
    print(f"webhook -> first canary answer: median {median:.2f} s over {len(timings)} rounds "
          f"({', '.join(f'{t:.2f}' for t in timings)})")
    out = ROOT / "benchmarks" / "results" / "webhook_to_canary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"median_s": median, "rounds_s": timings, "cpus": os.cpu_count(),
                               "python": platform.python_version()}, indent=2))
    shutil.rmtree(state, ignore_errors=True)


def _rounds(state: Path, tracking: str, models: str, url: str, rounds: int) -> list[float]:
    import mlflow

    from deployments.catalog import CATALOG
    from deployments.flow_worker import FlowWorker, apply_deployments, load_catalog

    loaded, missing = load_catalog([e for e in CATALOG if e.name == "on-new-model-version"])
    if missing:
        raise SystemExit(f"cannot serve on-new-model-version: {missing}")
    worker = FlowWorker(apply_deployments(loaded))
    threading.Thread(target=contextvars.copy_context().run, args=(worker.run_forever,), daemon=True).start()
    client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    timings: list[float] = []
    load, halt = _start_load(url)
    try:
        for number in range(rounds):
            kind = "v2" if number % 2 == 0 else "v1"  # what the new model answers: constant 2, or iris's [1, 1]
            source = f"{models}/{'constant' if kind == 'v2' else 'iris'}/model.joblib"
            version = str(client.create_model_version(NAME, source=source, tags={"odh.model_format": "sklearn"}).version)
            started, seen = time.monotonic(), len(load.answers)
            wait_until(functools.partial(_answered_by, load, kind, seen), timeout=300, interval=0.02,
                       what=f"an answer from version {version}")
            timings.append(time.monotonic() - started)
            print(f"round {number + 1}: version {version} answered after {timings[-1]:.2f} s")
            wait_until(functools.partial(_promoted, state, version), timeout=300, interval=0.5, what=f"v{version} promoted")
    finally:
        halt()
        worker.stopping.set()
    return timings


def _answered_by(load: LoadResult, kind: str, since: int) -> bool:
    return any(a.answered_by == kind for a in load.answers[since:])


def _promoted(state: Path, version: str) -> bool:
    return _serving(state) == version


def _serving(state: Path) -> str | None:
    from serving.platform.local import LocalPlatform
    from serving.policy import MODEL_VERSION_LABEL

    with LocalPlatform(state) as platform_:
        labels = platform_.get("InferenceService", "default", NAME)["metadata"].get("labels") or {}
    return labels.get(MODEL_VERSION_LABEL)


def _start_load(url: str) -> tuple[LoadResult, Callable[[], None]]:
    """Steady load from a thread of its own; the function returned stops it."""
    result = LoadResult()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    task = loop.create_task(drive(f"{url}/v1/models/{NAME}:predict", V1_BODY, clients=3, stop=stop,
                                  identify=served_by, into=result))
    thread = threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True)
    thread.start()

    def halt() -> None:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=60)
        loop.close()

    return result, halt


def _deploy_v1(state: Path) -> str:
    from serving.artifacts import upload_model
    from serving.config import mlflow_tracking_uri
    from serving.lifecycle import ANALYSIS_WINDOW, CANARY_PERCENT
    from serving.platform.local import LocalPlatform
    from serving.policy import ServingPolicy, inference_service
    from serving.registry import ModelRegistry
    from serving.storage import StorageSettings

    uploaded = upload_model(str(IRIS_DIR / "model.joblib"), state / "artifacts", StorageSettings.for_state(state))
    v1 = ModelRegistry(mlflow_tracking_uri(state)).register_version(NAME, uploaded.uri, digest=uploaded.digest)
    manifest = inference_service(NAME, v1.source, "sklearn", model_name=NAME, model_version=v1.version,
                                 policy=ServingPolicy(deployment_mode="Standard"))
    manifest["metadata"]["annotations"].update({CANARY_PERCENT: "50", ANALYSIS_WINDOW: "3"})
    with LocalPlatform(state) as platform_:
        platform_.apply(manifest)
        return str(platform_.wait_ready("InferenceService", "default", NAME, timeout=180)["status"]["url"])


def _model_server(state: Path) -> str:
    """Two model directories over http on loopback: ``/constant`` (answers 2) and ``/iris``."""
    root = state / "http-models"
    (root / "constant").mkdir(parents=True)
    write_constant_model(root / "constant")
    (root / "iris").mkdir()
    shutil.copy(IRIS_DIR / "model.joblib", root / "iris" / "model.joblib")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def _mlflow_server(state: Path, procs: list[subprocess.Popen[bytes]]) -> str:
    from cryptography.fernet import Fernet

    from serving.config import mlflow_tracking_uri

    port = free_port()
    env = {**os.environ, "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true", "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
           "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
           "MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES": "http"}  # the loopback file server's sources
    with (state / "mlflow-server.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", mlflow_tracking_uri(state),
                                 "--default-artifact-root", (state / "mlartifacts").as_uri(), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=180, proc=proc)
    return url


def _kill(proc: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    main()
