"""Scale-up reaction time: the KPA (Serverless) against the HPA with Kubernetes' defaults (Standard), same run.

    .venv/bin/python benchmarks/autoscale_reaction.py [--rounds 4] [--hpa-downscale-window 15]

One real ``odh`` daemon runs two InferenceServices side by side, each starting at one replica, and the rounds
alternate between them (the order flips every round). Each round sends a loopback burst (8 concurrent
keep-alive clients, ``tests/load.py``) through the gateway and times, from the burst's first request:

(a) ``decision``: the autoscaler's first decision above one replica (the KPA's ``odh_autoscaler_desired_pods``
    on the gateway's ``/metrics``; the HPA object's ``status.desiredReplicas``);
(b) ``ready``: a second replica ready (its readiness probe passed, the daemon's ``/pods``);
(c) ``serving``: the second replica has answered a request (its own ``odh_model_server_requests_total``).

The burst lasts until (c) and at least ``--min-burst`` seconds. Then, from the burst's last answer, the scale
*down*: ``down decision`` (the autoscaler wants one replica again) and ``down`` (one replica left running).

Cases:
- ``kpa``: KServe's iris sample in Serverless mode; ``autoscaling.knative.dev/target: "1"`` (concurrency),
  ``window: "6s"`` (Knative's shortest stable window) with the default 10 % panic window; min 1, max 4.
- ``hpa``: Standard mode, ``autoscalerClass: hpa``, ``scaleMetric: cpu``, ``scaleTarget: 50`` against a request
  of 250m; Kubernetes' defaults (15 s sync period, 0 s scale-up window, 100 % or 4 pods per 15 s); min 1,
  max 4. The HPA scales on CPU, so its replicas serve a CPU-burning model (a brute-force 3-NN over 40,000
  points, ~60 ms of CPU per 50-row request, as in ``tests/integration/test_hpa_platform.py``): iris answers
  in microseconds and 8 clients would not lift a replica's CPU over its target. Kubernetes' 300 s
  scale-down stabilization window would make every round five minutes long, so the daemon runs with
  ``ODH_HPA_DOWNSCALE_STABILIZATION_S`` = ``--hpa-downscale-window`` (default 15 s): the HPA's scale-down
  figure is for that window, not the default.

Every answer is counted (a transport error too); a failed request is reported. Results are printed and
written to ``benchmarks/results/autoscale_reaction.json``.
"""

from __future__ import annotations

import argparse
import asyncio
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from load import LoadResult, drive  # noqa: E402
from support import free_port, wait_until  # noqa: E402

from serving.platform.local import LocalPlatform, start_daemon, stop_daemon  # noqa: E402
from serving.platform.local.autoscalers import DOWNSCALE_STABILIZATION_ENV  # noqa: E402

IRIS_DIR = REPO / "tests" / "fixtures" / "kserve-iris"
SAMPLE = REPO / "tests" / "fixtures" / "kserve" / "samples" / "v1beta1__sklearn__v1__sklearn.yaml"
RESULTS = REPO / "benchmarks" / "results" / "autoscale_reaction.json"
V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())
BURNER = """
import sys
import joblib
import numpy as np
from sklearn.neighbors import KNeighborsClassifier

rng = np.random.default_rng(0)
points = rng.random((40000, 4))
model = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(points, (points[:, 0] > 0.5).astype(int))
joblib.dump(model, sys.argv[1])
"""
ROWS = [[0.1 * (i % 10), 0.5, 0.25, 0.75] for i in range(50)]
BURN_BODY = {"inputs": [{"name": "input-0", "shape": [len(ROWS), 4], "datatype": "FP32", "data": ROWS}]}
CLIENTS = 8
SYNC_PERIOD_S = 15.0  # Kubernetes' --horizontal-pod-autoscaler-sync-period, the daemon's default
MAX_REPLICAS = 4
POLL_S = 0.05
NAMESPACE = "default"


@dataclass(frozen=True)
class Case:
    name: str  # "kpa" or "hpa"
    isvc: str
    deployment: str  # the Deployment whose replicas the autoscaler sizes
    url_path: str
    body: dict[str, Any]


@dataclass
class Round:
    case: str
    index: int
    load_average: float
    sync_phase_s: float | None = None  # hpa: the burst began this long after a sync (the next is one period later)
    decision_s: float | None = None
    ready_s: float | None = None
    serving_s: float | None = None
    burst_s: float = 0.0
    down_decision_s: float | None = None
    down_s: float | None = None
    down_t: float = 0.0  # monotonic time of the down decision (an HPA sync)
    peak_ready: int = 1
    requests: int = 0
    failures: int = 0
    failure_sample: str = ""


def kpa_manifest(name: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    manifest["metadata"] = {"name": name, "namespace": NAMESPACE, "annotations": {
        "serving.kserve.io/deploymentMode": "Serverless",
        "autoscaling.knative.dev/target": "1",
        "autoscaling.knative.dev/window": "6s",
        "autoscaling.knative.dev/panic-window-percentage": "10",
    }}
    predictor = manifest["spec"]["predictor"]
    predictor["sklearn"]["storageUri"] = IRIS_DIR.as_uri()
    predictor.update(minReplicas=1, maxReplicas=MAX_REPLICAS)
    return manifest


def hpa_manifest(name: str, model_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": {"serving.kserve.io/autoscalerClass": "hpa"}},
        "spec": {"predictor": {
            "minReplicas": 1, "maxReplicas": MAX_REPLICAS, "scaleMetric": "cpu", "scaleTarget": 50,
            "sklearn": {"storageUri": model_dir.as_uri(),
                        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}},
        }},
    }


class Observer:
    """Samples, every ``POLL_S`` in a thread of its own, what the autoscaler wants and what runs: the desired
    count, the ready and running replicas, and which of the replicas that were not there before have served."""

    def __init__(self, client: LocalPlatform, gateway: str, case: Case, desired: Callable[[], int | None]) -> None:
        self.client = client
        self.gateway = gateway
        self.case = case
        self._desired = desired
        self._http = httpx.Client(timeout=5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"observe {case.name}", daemon=True)
        self.before: set[str] = set()
        self.served: set[str] = set()
        self.desired: int | None = None
        self.ready = 0
        self.running = 0
        self.peak_ready = 0
        self.errors = 0

    def __enter__(self) -> Observer:
        self.before = {p["name"] for p in self._pods()}
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._http.close()

    def _pods(self) -> list[dict[str, Any]]:
        return [p for p in self.client.pods() if p["deployment"] == self.case.deployment]

    def sample(self) -> None:
        self.desired = self._desired()
        pods = self._pods()
        ready = [p for p in pods if p["ready"]]
        self.ready = len(ready)
        self.running = sum(1 for p in pods if p["state"] not in ("Terminating", "Stopped"))
        self.peak_ready = max(self.peak_ready, self.ready)
        for pod in ready:
            if pod["name"] not in self.before and pod["name"] not in self.served and self._answered(pod["port"]):
                self.served.add(pod["name"])

    def _answered(self, port: int) -> bool:
        """Whether the replica on ``port`` has answered a predict (its own counter; probes are protocol health)."""
        text = self._http.get(f"http://127.0.0.1:{port}/metrics").text
        return any(sample.value > 0 and sample.labels.get("protocol") in ("v1", "v2") and sample.labels.get("status") == "200"
                   for family in text_string_to_metric_families(text) if family.name == "odh_model_server_requests"
                   for sample in family.samples if sample.name.endswith("_total"))

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.sample()
            except (httpx.HTTPError, OSError, KeyError):  # a replica going away between two calls
                self.errors += 1


def gateway_gauge(http: httpx.Client, gateway: str, metric: str, revision: str) -> float | None:
    text = http.get(f"{gateway}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"odh_autoscaler_{metric}" and sample.labels.get("revision_name") == revision:
                return sample.value
    return None


async def first(check: Callable[[], bool], since: float, limit_s: float) -> float | None:
    """Seconds from ``since`` until ``check`` held (polled every ``POLL_S``), None if not within ``limit_s``."""
    deadline = since + limit_s
    while time.monotonic() < deadline:
        if check():
            return time.monotonic() - since
        await asyncio.sleep(POLL_S)
    return None


async def one_round(client: LocalPlatform, gateway: str, case: Case, index: int, desired: Callable[[], int | None],
                    min_burst: float, max_burst: float) -> Round:
    result = Round(case.name, index, os.getloadavg()[0])
    url = f"{gateway}/serving/{NAMESPACE}/{case.isvc}{case.url_path}"
    with Observer(client, gateway, case, desired) as seen:
        assert seen.ready == 1 and seen.running == 1, f"{case.name}: round {index} must start at one replica"
        stop = asyncio.Event()
        answers = LoadResult()
        t0 = time.monotonic()
        load = asyncio.create_task(drive(url, case.body, clients=CLIENTS, stop=stop, into=answers, request_timeout=120))
        try:
            decision = asyncio.create_task(first(lambda: (seen.desired or 0) > 1, t0, max_burst))
            ready = asyncio.create_task(first(lambda: seen.ready >= 2, t0, max_burst))
            result.serving_s = await first(lambda: bool(seen.served), t0, max_burst)
            result.decision_s, result.ready_s = await decision, await ready
            remaining = t0 + min_burst - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)  # the burst's shape: a benchmark parameter, not a wait for an event
        finally:
            stop.set()
            await load
        t_end = time.monotonic()
        result.burst_s = t_end - t0
        result.peak_ready = seen.peak_ready
        result.requests, result.failures = len(answers.answers), len(answers.failures)
        result.failure_sample = answers.describe_failures() if answers.failures else ""
        down_decision = asyncio.create_task(first(lambda: seen.desired is not None and seen.desired <= 1, t_end, 240))
        result.down_s = await first(lambda: seen.running == 1 and seen.ready == 1, t_end, 240)
        result.down_decision_s = await down_decision
        if result.down_decision_s is not None:
            result.down_t = t_end + result.down_decision_s
    return result


def median_worst(values: list[float | None]) -> tuple[float | None, float | None, int]:
    seen = [v for v in values if v is not None]
    return (statistics.median(seen) if seen else None, max(seen) if seen else None, len(values) - len(seen))


def summarize(rounds: list[Round]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for case in sorted({r.case for r in rounds}):
        mine = [r for r in rounds if r.case == case]
        row: dict[str, Any] = {}
        for key in ("decision_s", "ready_s", "serving_s", "down_decision_s", "down_s", "burst_s"):
            med, worst, missing = median_worst([getattr(r, key) for r in mine])
            row[key] = {"median": med, "worst": worst, "not_seen": missing}
        row["requests"] = sum(r.requests for r in mine)
        row["failures"] = sum(r.failures for r in mine)
        row["peak_ready"] = max(r.peak_ready for r in mine)
        out[case] = row
    return out


def _fork_server_ready(state: Path) -> bool:
    return any("fork server ready" in log.read_text(errors="replace") for log in state.glob("*.log"))


def run(rounds: int, min_burst: float, max_burst: float, hpa_window: int, cases: list[str]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="odh-autoscale-"))
    burner = work / "burner"
    burner.mkdir()
    subprocess.run([sys.executable, "-c", BURNER, str(burner / "model.joblib")], check=True, timeout=120)
    state = work / "state"
    state.mkdir()
    start_daemon(state, free_port(), env={DOWNSCALE_STABILIZATION_ENV: str(hpa_window)})
    all_rounds: list[Round] = []
    try:
        with LocalPlatform(state) as client, httpx.Client(timeout=5) as http:
            wait_until(lambda: _fork_server_ready(state), timeout=300, interval=0.5, what="the daemon's fork server")
            known = {
                "kpa": (Case("kpa", "kpa", "kpa-predictor-00001-deployment", "/v1/models/kpa:predict", V1_BODY),
                        kpa_manifest("kpa")),
                "hpa": (Case("hpa", "hpa", "hpa-predictor", "/v2/models/hpa/infer", BURN_BODY), hpa_manifest("hpa", burner)),
            }
            chosen = [known[name] for name in cases]
            for _, manifest in chosen:
                client.apply(manifest)
            gateway = ""
            for case, _ in chosen:
                url = client.wait_ready("InferenceService", NAMESPACE, case.isvc, timeout=180)["status"]["url"]
                gateway = url.split("/serving/")[0]
                assert httpx.post(url + case.url_path, json=case.body, timeout=60).status_code == 200
            hpa_sync: float | None = None
            if "hpa" in cases:
                def hpa_status() -> str:
                    return json.dumps(client.get("HorizontalPodAutoscaler", NAMESPACE, "hpa-predictor").get("status"),
                                      sort_keys=True)

                # The HPA writes its status only at a sync: the first change seen marks one (within 50 ms).
                first_status = hpa_status()
                wait_until(lambda: hpa_status() != first_status, timeout=2 * SYNC_PERIOD_S + 5, interval=0.05,
                           what="an HPA sync")
                hpa_sync = time.monotonic()

            def desired_of(case: Case) -> Callable[[], int | None]:
                if case.name == "kpa":
                    revision = case.deployment.removesuffix("-deployment")

                    def kpa() -> int | None:
                        value = gateway_gauge(http, gateway, "desired_pods", revision)
                        return None if value is None else int(value)
                    return kpa

                def hpa() -> int | None:
                    status = client.get("HorizontalPodAutoscaler", NAMESPACE, f"{case.isvc}-predictor").get("status") or {}
                    value = status.get("desiredReplicas")
                    return int(value) if value is not None else None
                return hpa

            def settled(case: Case) -> bool:
                pods = [p for p in client.pods() if p["deployment"] == case.deployment]
                running = [p for p in pods if p["state"] not in ("Terminating", "Stopped")]
                if len(running) != 1 or not running[0]["ready"]:
                    return False
                if case.name == "kpa":
                    revision = case.deployment.removesuffix("-deployment")
                    return (gateway_gauge(http, gateway, "panic_mode", revision) == 0
                            and gateway_gauge(http, gateway, "desired_pods", revision) == 1)
                status = client.get("HorizontalPodAutoscaler", NAMESPACE, f"{case.isvc}-predictor").get("status") or {}
                return bool(status.get("currentMetrics")) and status.get("desiredReplicas") == 1

            for index in range(rounds):
                order = chosen if index % 2 == 0 else list(reversed(chosen))
                for case, _ in order:
                    wait_until(lambda c=case: settled(c), timeout=300, interval=0.5,  # type: ignore[misc]
                               what=f"{case.name} back at one idle replica")
                    phase = None
                    if case.name == "hpa":
                        # Where in the HPA's sync period a burst begins decides most of its reaction time, and the
                        # settle above is seen just after a sync: spread the rounds' phases evenly over the period
                        # ((k + 1/2) / rounds of it) from the last sync seen, so the figures are not all worst case.
                        phase = (index + 0.5) / rounds * SYNC_PERIOD_S
                        assert hpa_sync is not None
                        begin = hpa_sync + phase
                        while begin < time.monotonic() + 0.2:
                            begin += SYNC_PERIOD_S
                        time.sleep(begin - time.monotonic())  # pacing the benchmark's start, not waiting for an event
                    done = asyncio.run(one_round(client, gateway, case, index + 1, desired_of(case), min_burst, max_burst))
                    done.sync_phase_s = phase
                    if case.name == "hpa" and done.down_decision_s is not None:
                        hpa_sync = done.down_t  # the HPA decides only at a sync: this was one
                    all_rounds.append(done)
                    print(f"round {index + 1} {case.name}: " + json.dumps(
                        {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(done).items()}), flush=True)
    finally:
        stop_daemon(state)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "autoscale_reaction",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, {_cpu_model()}, Python {platform.python_version()}",
        "clients": CLIENTS, "max_replicas": MAX_REPLICAS, "min_burst_s": min_burst, "hpa_downscale_window_s": hpa_window,
        "summary": summarize(all_rounds),
        "rounds": [asdict(r) for r in all_rounds],
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds per case (alternating)")
    parser.add_argument("--min-burst", type=float, default=20.0, help="the burst lasts at least this long (s)")
    parser.add_argument("--max-burst", type=float, default=90.0, help="give up waiting for a second replica after (s)")
    parser.add_argument("--hpa-downscale-window", type=int, default=15,
                        help="ODH_HPA_DOWNSCALE_STABILIZATION_S for the daemon (Kubernetes' default is 300)")
    parser.add_argument("--cases", default="kpa,hpa", help="comma-separated: kpa, hpa")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - {"kpa", "hpa"}
    if unknown:
        parser.error(f"--cases: unknown case(s) {sorted(unknown)}; use kpa and/or hpa")
    load_before = os.getloadavg()
    result = run(args.rounds, args.min_burst, args.max_burst, args.hpa_downscale_window, cases)
    result["load_average_before"] = load_before
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['machine']}; load average before {load_before}; {args.rounds} rounds per case")
    print(f"{'case':6} {'(a) decision':>16} {'(b) ready':>16} {'(c) serving':>16} {'down decision':>16} {'down':>16} "
          f"{'requests':>9} {'failed':>7}")
    print(f"{'':6} " + " ".join(f"{'median / worst':>16}" for _ in range(5)))
    for case, row in result["summary"].items():
        cells = [f"{_fmt(row[k]['median'])} / {_fmt(row[k]['worst'])}" for k in
                 ("decision_s", "ready_s", "serving_s", "down_decision_s", "down_s")]
        print(f"{case:6} " + " ".join(f"{c:>16}" for c in cells) + f" {row['requests']:>9} {row['failures']:>7}")
    print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
