"""Seconds from `odh deploy` to Ready for KServe's iris model with the platform and Prefect up, against
`LocalPlatform.apply` to Ready of the same model in the same run.

    .venv/bin/python benchmarks/deploy_ready.py [--rounds 5] [--state-dir DIR] [--ephemeral-runs 0]

- ``odh deploy``: the whole command as a user types it, from process start to its exit with the service Ready
  (the CLI creates a deploy-model run through the Prefect API; the flow worker `odh up` started runs it:
  upload, register in MLflow, configure, deploy, initialize, register service; the CLI reads the result
  from the platform).
- ``platform apply``: ``LocalPlatform.apply`` of an InferenceService for the same model directory, then
  ``wait_ready`` (storage initializer, replica start, readiness probe, status): the floor any deploy path has.

Both run in every round, the order flipping each round, each under a new name (deleted after it is
measured). A first round of each warms the model cache and the registry and is reported apart. Without
``--state-dir`` the script runs `odh up` itself on a temporary state directory (free gateway and Prefect
ports) and `odh down` at the end. ``--ephemeral-runs N`` also times N deploys without the Prefect server
(the flow runs in the CLI process, as with `odh up --no-prefect`). Results are printed and written to
benchmarks/results/deploy_ready.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from support import IRIS_DIR, free_port  # noqa: E402

from serving.platform.local import LocalPlatform  # noqa: E402

ODH = [sys.executable, "-m", "deployments.cli"]


def odh(state: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ODH_STATE_DIR": str(state), **(extra_env or {})}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([*ODH, *args], capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"odh {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def odh_deploy(state: Path, name: str) -> float:
    started = time.perf_counter()
    done = odh(state, "deploy", str(IRIS_DIR / "model.joblib"), "--name", name)
    elapsed = time.perf_counter() - started
    if f"/serving/default/{name}" not in done.stdout:
        raise RuntimeError(f"odh deploy {name} printed no URL:\n{done.stdout}")
    return elapsed


def platform_apply(client: LocalPlatform, name: str) -> float:
    started = time.perf_counter()
    client.apply({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": name},
                  "spec": {"predictor": {"sklearn": {"storageUri": IRIS_DIR.as_uri()}}}})
    client.wait_ready("InferenceService", "default", name, timeout=300)
    return time.perf_counter() - started


def in_process_deploy(state: Path, name: str) -> float:
    """`odh deploy` without the Prefect server: the worker file is hidden so the CLI takes its in-process path."""
    worker = state / "flow_worker.json"
    hidden = state / "flow_worker.json.benchmark"
    worker.rename(hidden)
    try:
        return odh_deploy(state, name)
    finally:
        hidden.rename(worker)


def measure(state: Path, rounds: int, ephemeral_runs: int) -> dict[str, Any]:
    client = LocalPlatform(state)
    first = {"odh deploy": odh_deploy(state, "warm-deploy"), "platform apply": platform_apply(client, "warm-apply")}
    for name in ("warm-deploy", "warm-apply"):
        client.delete("InferenceService", "default", name)
    series: dict[str, list[float]] = {"odh deploy": [], "platform apply": []}
    for i in range(rounds):
        order = ["odh deploy", "platform apply"] if i % 2 == 0 else ["platform apply", "odh deploy"]
        for what in order:
            name = f"iris-d{i}" if what == "odh deploy" else f"iris-a{i}"
            series[what].append(odh_deploy(state, name) if what == "odh deploy" else platform_apply(client, name))
            client.delete("InferenceService", "default", name)
    if ephemeral_runs:
        series["odh deploy, flow in the CLI process"] = []
        for i in range(ephemeral_runs):
            series["odh deploy, flow in the CLI process"].append(in_process_deploy(state, f"iris-e{i}"))
            client.delete("InferenceService", "default", f"iris-e{i}")
    return {"first": first, "series": series}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--state-dir", type=Path, default=None, help="a platform `odh up` already runs (with Prefect)")
    parser.add_argument("--ephemeral-runs", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = args.state_dir or Path(tmp) / "state"
        if args.state_dir is None:
            started = time.perf_counter()
            odh(state, "up", "--gateway-port", str(free_port()), "--prefect-port", str(free_port()))
            print(f"odh up (daemon, Prefect server, flow worker): {time.perf_counter() - started:.1f}s")
        try:
            results = measure(state, args.rounds, args.ephemeral_runs)
        finally:
            if args.state_dir is None:
                odh(state, "down")
    series = results["series"]
    floor = statistics.median(series["platform apply"])
    print(f"{'measurement':44} {'median s':>9} {'min s':>7} {'max s':>7} {'x apply':>8}")
    for label, values in series.items():
        median = statistics.median(values)
        print(f"{label:44} {median:9.2f} {min(values):7.2f} {max(values):7.2f} {median / floor:8.2f}")
    print("first round (cold model cache and registry): " +
          ", ".join(f"{k} {v:.2f}s" for k, v in results["first"].items()))
    verdict = "under" if statistics.median(series["odh deploy"]) < 5.0 else "NOT under"
    print(f"odh deploy median {statistics.median(series['odh deploy']):.2f}s: {verdict} the 5 s target")
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "deploy_ready.json").write_text(json.dumps({
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}", "rounds": args.rounds, **results}, indent=2))


if __name__ == "__main__":
    main()
