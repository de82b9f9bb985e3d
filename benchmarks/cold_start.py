"""Cold start: from the decision to start a replica to its first 200 answer, with and without the fork server.

    .venv/bin/python benchmarks/cold_start.py [--warm-runs 10] [--runs 3]

Side by side, in one run, on KServe's iris model (sklearn SVC), driving ``Replica`` as the daemon does:
- (a) warm: the model was fetched before (a cache hit) and the fork server is ready: the replica forks
  from the pre-imported zygote;
- (b) first-ever: an empty model cache and a plain spawned replica (a machine that never ran the
  runtime: what every start cost before the fork server); (b') the same empty cache through a warm zygote;
- (c) baseline: a bare interpreter (``python -c``) that imports the model server and loads the model from
  the cache directory, until loaded (no socket, no probe, no request).
Where the time goes, per start: ``start`` (fetch from the cache, then fork or spawn, until the pid is
known), ``bind`` (until the port accepts a connection), ``ready`` (until the readiness probe passed),
``answer`` (the first V1 predict through the replica's port); ``model load`` is the server's own figure.
Results are printed and written to benchmarks/results/cold_start.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from serving.platform.local.forkserver import ForkedProcess, ForkServer  # noqa: E402
from serving.platform.local.pods import PodPlan  # noqa: E402
from serving.platform.local.replicas import Replica  # noqa: E402
from serving.storage import StorageSettings, initialize  # noqa: E402

IRIS = REPO / "tests" / "fixtures" / "kserve-iris"
BODY = json.loads((IRIS / "iris-input-v1.json").read_text())
PLAN = PodPlan(("python", "-m", "serving.runtimes.server", "--model_name=iris", "--model_dir=/mnt/models",
                "--http_port=8080"), {}, 8080, "/v2/health/ready", IRIS.as_uri())
LOADED = re.compile(r"model 'iris' loaded in ([0-9.]+)s")


@dataclass
class Start:
    how: str  # "forked" or "spawned"
    fetch: float
    start: float
    bind: float
    ready: float
    answer: float
    model_load: float | None

    @property
    def total(self) -> float:
        return self.start + self.bind + self.ready + self.answer


async def one_start(state: Path, name: str, server: ForkServer | None) -> Start:
    settings = StorageSettings.for_state(state)
    fetched: list[float] = []

    def fetch(uri: str, dest: Path) -> Path:
        began = time.perf_counter()
        try:
            return initialize(uri, dest, settings)
        finally:
            fetched.append(time.perf_counter() - began)

    pod = state / "pods" / name
    replica = Replica(name, PLAN, pod, fetch, lambda: None, fork_server=server)
    client = httpx.AsyncClient()  # made before the clock starts: its TLS context is not the replica's time
    t0 = time.perf_counter()
    replica.start()
    try:
        port = replica.port
        assert port is not None
        t_pid = await _observed(lambda: replica.info().pid is not None)
        t_bind = await _observed(lambda: _accepts(port))
        t_ready = await _observed(lambda: replica.ready)
        response = await client.post(f"http://127.0.0.1:{replica.port}/v1/models/iris:predict", json=BODY)
        t_answer = time.perf_counter()
        assert response.status_code == 200 and response.json()["predictions"] == [1, 1], response.text
        how = "forked" if isinstance(replica._proc, ForkedProcess) else "spawned"
    finally:
        await client.aclose()
        await replica.stop()
    loaded = LOADED.search((pod / "replica.log").read_text())
    return Start(how, fetched[0] if fetched else 0.0, t_pid - t0, t_bind - t_pid, t_ready - t_bind, t_answer - t_ready,
                 float(loaded[1]) if loaded else None)


async def _observed(check: Callable[[], bool]) -> float:
    """When ``check`` first held, polled every half millisecond (the event loop runs in between)."""
    while True:
        if check():
            return time.perf_counter()
        await asyncio.sleep(0.0005)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def bare_interpreter_load(model_dir: Path) -> float:
    """Seconds from starting ``python -c`` to the model loaded in it (imports included)."""
    script = ("import asyncio\nfrom serving.runtimes.server import build_model\n"
              f"model = build_model('iris', {str(model_dir)!r})\nasyncio.run(model.load())\nprint('loaded', flush=True)\n")
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - began
    proc.wait()
    assert line.strip() == "loaded", line
    return elapsed


def summary(starts: list[Start]) -> dict[str, float]:
    keys = ("fetch", "start", "bind", "ready", "answer", "total")
    out = {k: statistics.median(getattr(s, k) for s in starts) for k in keys}
    loads = [s.model_load for s in starts if s.model_load is not None]
    out["model_load"] = statistics.median(loads) if loads else float("nan")
    out["max_total"] = max(s.total for s in starts)
    return out


async def run(warm_runs: int, runs: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="odh-cold-"))
    zygote = ForkServer(work / "forkserver.log")
    began = time.perf_counter()
    await zygote.start()
    if not await zygote.wait_ready(300):
        raise SystemExit(f"the fork server did not become ready: {(work / 'forkserver.log').read_text()}")
    zygote_ready = time.perf_counter() - began
    results: dict[str, list[Start]] = {"a_warm_forked": [], "b_first_ever_spawned": [], "b_first_ever_forked": []}
    baseline: list[float] = []
    try:
        warm_state = work / "warm"
        await one_start(warm_state, "prime", zygote)  # the model loaded once on this machine: now in the cache
        for i in range(warm_runs):
            results["a_warm_forked"].append(await one_start(warm_state, f"warm-{i}", zygote))
        for i in range(runs):
            results["b_first_ever_spawned"].append(await one_start(work / f"fresh-spawn-{i}", "r", None))
            results["b_first_ever_forked"].append(await one_start(work / f"fresh-fork-{i}", "r", zygote))
            baseline.append(bare_interpreter_load((warm_state / "pods" / "prime" / "models").resolve()))
    finally:
        await zygote.stop()
    for label, starts in results.items():
        assert all(s.how == ("spawned" if "spawned" in label else "forked") for s in starts), (label, starts)
    return {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
        "zygote_ready_s": zygote_ready,
        "median": {label: summary(starts) for label, starts in results.items()},
        "c_bare_interpreter_load_s": statistics.median(baseline),
        "runs": {label: [asdict(s) for s in starts] for label, starts in results.items()},
        "baseline_runs": baseline,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warm-runs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(run(args.warm_runs, args.runs))
    out = REPO / "benchmarks" / "results" / "cold_start.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    median = result["median"]
    assert isinstance(median, dict)
    print(f"{result['machine']}; load average {result['load_average']}; zygote ready in {result['zygote_ready_s']:.2f} s")
    print(f"{'case (median seconds)':34} {'fetch':>7} {'start':>7} {'bind':>7} {'ready':>7} {'answer':>7} {'TOTAL':>7} "
          f"{'max':>7} {'model load':>10}")
    for label, row in median.items():
        print(f"{label:34} {row['fetch']:7.3f} {row['start']:7.3f} {row['bind']:7.3f} {row['ready']:7.3f} "
              f"{row['answer']:7.3f} {row['total']:7.3f} {row['max_total']:7.3f} {row['model_load']:10.3f}")
    print(f"{'c_bare_interpreter (to loaded)':34} {'':>39} {result['c_bare_interpreter_load_s']:7.3f}")
    warm = median["a_warm_forked"]["total"]
    print(f"warm fork to first answer is {result['c_bare_interpreter_load_s'] / warm:.1f}x faster than a bare interpreter "
          f"loading the model, {median['b_first_ever_spawned']['total'] / warm:.1f}x faster than a spawned replica")


if __name__ == "__main__":
    main()
