"""Seconds from `odh deploy` to Ready for KServe's iris model, against a bare model-server start.

    .venv/bin/python benchmarks/deploy_ready.py [--runs 3]

Three measurements, side by side:
- baseline: start `python -m serving.runtimes.server` on the model directly until /v2/health/ready is 200;
- platform: `LocalPlatform.apply` of the InferenceService until Ready (storage initializer, replica start,
  readiness probe, status);
- odh deploy: the whole `odh deploy` command (Prefect flow: upload, register in MLflow, configure, deploy,
  initialize, register service) until it returns with the service Ready, first with Prefect's ephemeral
  server (what a bare `odh up` gives), then with the Prefect server `odh up --prefect` starts.
Results are printed and written to benchmarks/results/deploy_ready.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from support import IRIS_DIR, free_port, running  # noqa: E402

from deployments.prefect_server import start_prefect_server, stop_prefect_server  # noqa: E402
from serving.platform.local import LocalPlatform, start_daemon, stop_daemon  # noqa: E402


def bare_server_start() -> float:
    port = free_port()
    started = time.perf_counter()
    with running([sys.executable, "-m", "serving.runtimes.server", "--model_name", "iris", "--model_dir", str(IRIS_DIR),
                  "--http_port", str(port)]):
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)


def platform_apply(platform: LocalPlatform, name: str) -> float:
    started = time.perf_counter()
    platform.apply({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": name},
                    "spec": {"predictor": {"sklearn": {"storageUri": IRIS_DIR.as_uri()}}}})
    platform.wait_ready("InferenceService", "default", name, timeout=120)
    elapsed = time.perf_counter() - started
    platform.delete("InferenceService", "default", name)
    return elapsed


def odh_deploy(state: Path, name: str, prefect_api: str | None = None) -> float:
    env = {**os.environ, "ODH_STATE_DIR": str(state)}
    env.pop("PREFECT_API_URL", None)
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    started = time.perf_counter()
    subprocess.run([str(REPO / ".venv" / "bin" / "odh"), "deploy", str(IRIS_DIR / "model.joblib"), "--name", name],
                   check=True, env=env, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        start_daemon(state, free_port())
        try:
            platform = LocalPlatform(state)
            odh_deploy(state, "warmup")  # first run creates the Prefect and MLflow databases
            results = {
                "baseline: bare model server start": [bare_server_start() for _ in range(args.runs)],
                "platform apply -> Ready": [platform_apply(platform, f"apply-{i}") for i in range(args.runs)],
                "odh deploy -> Ready (ephemeral Prefect)": [odh_deploy(state, f"iris-{i}") for i in range(args.runs)],
            }
            api = start_prefect_server(state, port=free_port())
            odh_deploy(state, "warmup-server", api)
            results["odh deploy -> Ready (odh up --prefect)"] = [
                odh_deploy(state, f"iris-server-{i}", api) for i in range(args.runs)]
        finally:
            stop_prefect_server(state)
            stop_daemon(state)
    base = statistics.median(results["baseline: bare model server start"])
    print(f"{'measurement':42} {'median s':>9} {'min s':>7} {'x baseline':>11}")
    for label, values in results.items():
        median = statistics.median(values)
        print(f"{label:42} {median:9.2f} {min(values):7.2f} {median / base:11.2f}")
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "deploy_ready.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
