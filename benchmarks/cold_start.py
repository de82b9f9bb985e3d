"""Cold start: from the decision to start a replica to its first 200 answer, with and without the fork server.

    .venv/bin/python benchmarks/cold_start.py [--warm-runs 10] [--runs 3] [--compare-with DIR ...] [--daemon-runs 5]

Side by side, in one run, on KServe's iris model (sklearn SVC), driving ``Replica`` as the daemon does:
- (a) warm: the model was fetched before (a cache hit) and the fork server is ready: the replica forks
  from the pre-imported zygote;
- (b) first-ever: an empty model cache and a plain spawned replica (a machine that never ran the
  runtime: what every start cost before the fork server); (b') the same empty cache through a warm zygote;
- (c) baseline: a bare interpreter (``python -c``) that imports the model server and loads the model from
  the cache directory, until loaded (no socket, no probe, no request).
- (b'') the first-ever spawned start again, each in a fresh interpreter that imports one tree's ``serving``:
  this tree's and, with ``--compare-with DIR`` (a git worktree of an earlier commit, e.g. the one before the
  fork server: ``git worktree add --detach /tmp/before 666cfc8^``), that commit's, in the same rounds and in
  an order that turns every round: "the first-ever load must not get slower".
End to end (``--daemon-runs``): a real daemon runs a Serverless iris with ``minReplicas: 0``; each round
waits until the revision reports zero replicas, then times one V1 predict through the gateway (the
activator's hold, the KPA's decision, the fork, the probe, the proxied predict) and the same request once
the replica is ready (each on a new connection).
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
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
# The tree whose ``serving`` this process drives: this one, or an earlier commit's worktree when a child run
# measures it (``--compare-with``; the names imported below exist in every commit since the model cache).
SOURCE_ENV = "ODH_COLD_START_SOURCE"
SOURCE = Path(os.environ.get(SOURCE_ENV) or REPO)
sys.path.insert(0, str(SOURCE))

from serving.platform.local.pods import PodPlan  # noqa: E402
from serving.platform.local.replicas import Replica  # noqa: E402
from serving.storage import StorageSettings, initialize  # noqa: E402

if TYPE_CHECKING:
    from serving.platform.local.forkserver import ForkServer

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
    # CPU seconds the replica process used until ready (utime + stime): the machine's other load stretches
    # wall-clock figures, not this one, so it compares trees even on a busy machine
    cpu_to_ready: float | None = None

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
    # An earlier commit's Replica has no fork_server argument: pass it only when there is one.
    forking: dict[str, Any] = {"fork_server": server} if server is not None else {}
    replica = Replica(name, PLAN, pod, fetch, lambda: None, **forking)
    client = httpx.AsyncClient()  # made before the clock starts: its TLS context is not the replica's time
    t0 = time.perf_counter()
    replica.start()
    try:
        port = replica.port
        assert port is not None
        t_pid = await _observed(lambda: replica.info().pid is not None)
        t_bind = await _observed(lambda: _accepts(port))
        t_ready = await _observed(lambda: replica.ready)
        pid = replica.info().pid
        cpu_to_ready = _cpu_seconds(pid) if pid is not None else None
        response = await client.post(f"http://127.0.0.1:{replica.port}/v1/models/iris:predict", json=BODY)
        t_answer = time.perf_counter()
        assert response.status_code == 200 and response.json()["predictions"] == [1, 1], response.text
        how = "forked" if type(replica._proc).__name__ == "ForkedProcess" else "spawned"
    finally:
        await client.aclose()
        await replica.stop()
    loaded = LOADED.search((pod / "replica.log").read_text())
    return Start(how, fetched[0] if fetched else 0.0, t_pid - t0, t_bind - t_pid, t_ready - t_bind, t_answer - t_ready,
                 float(loaded[1]) if loaded else None, cpu_to_ready)


async def _observed(check: Callable[[], bool]) -> float:
    """When ``check`` first held, polled every half millisecond (the event loop runs in between)."""
    while True:
        if check():
            return time.perf_counter()
        await asyncio.sleep(0.0005)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    cpu = [s.cpu_to_ready for s in starts if s.cpu_to_ready is not None]
    out = {k: statistics.median(getattr(s, k) for s in starts) for k in keys}
    loads = [s.model_load for s in starts if s.model_load is not None]
    out["model_load"] = statistics.median(loads) if loads else float("nan")
    out["max_total"] = max(s.total for s in starts)
    out["cpu_to_ready"] = statistics.median(cpu) if cpu else float("nan")
    return out


def first_ever_in_child(source: Path, state: Path) -> Start:
    """One first-ever spawned start driven by ``source``'s ``serving`` (an earlier commit's worktree, or this
    tree) in a fresh interpreter, so that only that tree's code is on the path. Its imports happen before
    its clock starts, as in this process."""
    env = {**os.environ, SOURCE_ENV: str(source), "PYTHONPATH": str(source), "ODH_FORK_SERVER": "0"}
    out = subprocess.run([sys.executable, "-P", str(Path(__file__).resolve()), "--child-first-ever", str(state)],
                         cwd=source, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"the first-ever start with {source} failed:\n{out.stderr[-3000:]}")
    return Start(**json.loads(out.stdout.strip().splitlines()[-1]))


def _child_main(state: Path) -> None:
    start = asyncio.run(one_start(state, "r", None))
    print(json.dumps(asdict(start)), flush=True)


async def run(warm_runs: int, runs: int, compare_with: list[Path]) -> dict[str, object]:
    from serving.platform.local.forkserver import ForkServer

    work = Path(tempfile.mkdtemp(prefix="odh-cold-"))
    zygote = ForkServer(work / "forkserver.log")
    began = time.perf_counter()
    await zygote.start()
    if not await zygote.wait_ready(300):
        raise SystemExit(f"the fork server did not become ready: {(work / 'forkserver.log').read_text()}")
    zygote_ready = time.perf_counter() - began
    results: dict[str, list[Start]] = {"a_warm_forked": [], "b_first_ever_spawned": [], "b_first_ever_forked": []}
    sources = {"b_first_ever_spawned_child_this_tree": REPO, **{
        f"b_first_ever_spawned_child_{_commit_of(tree)}": tree for tree in compare_with}}
    results.update({label: [] for label in sources})
    baseline: list[float] = []
    try:
        warm_state = work / "warm"
        await one_start(warm_state, "prime", zygote)  # the model loaded once on this machine: now in the cache
        for i in range(warm_runs):
            results["a_warm_forked"].append(await one_start(warm_state, f"warm-{i}", zygote))
        for i in range(runs):
            results["b_first_ever_spawned"].append(await one_start(work / f"fresh-spawn-{i}", "r", None))
            results["b_first_ever_forked"].append(await one_start(work / f"fresh-fork-{i}", "r", zygote))
            # This tree and each earlier one, the same first-ever spawn, in an order that turns every round.
            labels = list(sources)
            for label in labels[i % len(labels):] + labels[:i % len(labels)]:
                state = work / f"fresh-{label}-{i}"
                results[label].append(await asyncio.to_thread(first_ever_in_child, sources[label], state))
            baseline.append(bare_interpreter_load((warm_state / "pods" / "prime" / "models").resolve()))
    finally:
        await zygote.stop()
        shutil.rmtree(work, ignore_errors=True)
    for label, starts in results.items():
        assert all(s.how == ("spawned" if "spawned" in label else "forked") for s in starts), (label, starts)
    return {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {_cpu_model()}, "
                   f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
        "zygote_ready_s": zygote_ready,
        "compared_with": {label: str(tree) for label, tree in sources.items()},
        "median": {label: summary(starts) for label, starts in results.items()},
        "c_bare_interpreter_load_s": statistics.median(baseline),
        "runs": {label: [asdict(s) for s in starts] for label, starts in results.items()},
        "baseline_runs": baseline,
    }


def _commit_of(tree: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True,
                          check=True).stdout.strip()


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


# -- end to end through the daemon: scale from zero through the gateway's activator --------------------------

# Knative's shortest stable window, so an idle revision goes back to zero within seconds between rounds.
DAEMON_CONFIG = {"autoscaler": {"stable-window": "6s", "scale-to-zero-grace-period": "1s"}}
SAMPLE = REPO / "tests" / "fixtures" / "kserve" / "samples" / "v1beta1__sklearn__v1__sklearn.yaml"


@dataclass
class Wake:
    how: str  # how the replica that answered was started: "forked" (from the daemon's zygote) or "spawned"
    to_replica: float  # request sent -> the replica object created (activator hold, KPA, reconcile tick)
    total: float  # request sent -> its 200 answer (activator hold, fork, probe, proxy, predict)
    ready_answer: float  # the same request on a new connection, the replica now ready (median of 5)


def _serverless_iris(name: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    manifest["metadata"] = {"name": name, "namespace": "default",
                            "annotations": {"serving.kserve.io/deploymentMode": "Serverless"}}
    manifest["spec"]["predictor"]["sklearn"]["storageUri"] = IRIS.as_uri()
    manifest["spec"]["predictor"]["minReplicas"] = 0
    return manifest


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def daemon_wakes(rounds: int) -> list[Wake]:
    """A Serverless iris at zero on a real daemon; each round waits until its revision reports zero replicas,
    then times one V1 predict through the gateway, then the same request with the replica ready."""
    sys.path.insert(0, str(REPO / "tests"))
    from support import free_port, wait_until

    from serving.platform.local import LocalPlatform, start_daemon, stop_daemon

    state = Path(tempfile.mkdtemp(prefix="odh-cold-daemon-"))
    (state / "config.yaml").write_text(yaml.safe_dump(DAEMON_CONFIG))
    start_daemon(state, free_port())
    wakes: list[Wake] = []
    # No keep-alive: every request opens its own connection, the cold one and the ready ones alike.
    http = httpx.Client(timeout=60, limits=httpx.Limits(max_keepalive_connections=0))
    try:
        with LocalPlatform(state) as client:
            daemon_pid = client.info()["pid"]
            wait_until(lambda: any("fork server ready" in log.read_text(errors="replace") for log in state.glob("*.log")),
                       timeout=300, interval=0.5, what="the daemon's fork server")
            client.apply(_serverless_iris("cold"))
            url = client.wait_ready("InferenceService", "default", "cold", timeout=180)["status"]["url"]
            predict = f"{url}/v1/models/cold:predict"
            assert http.post(predict, json=BODY).status_code == 200  # the model fetched once: in the cache

            def at_zero() -> bool:
                revisions = client.kubectl_get("revisions", "default")["items"]
                (revision,) = [r for r in revisions if r["metadata"]["name"] == "cold-predictor-00001"]
                status = revision["status"]
                return (status.get("actualReplicas") == 0 and status.get("desiredReplicas") == 0
                        and not [p for p in client.pods() if p["deployment"].startswith("cold-") and p["pid"]])

            for _ in range(rounds):
                wait_until(at_zero, timeout=120, interval=0.5, what="the idle revision at zero")
                sent = time.time()
                began = time.perf_counter()
                response = http.post(predict, json=BODY)
                total = time.perf_counter() - began
                assert response.status_code == 200 and response.json()["predictions"] == [1, 1], response.text
                (pod,) = [p for p in client.pods() if p["deployment"].startswith("cold-") and p["ready"]]
                how = "spawned" if _parent_pid(pod["pid"]) == daemon_pid else "forked"
                ready = []
                for _ in range(5):
                    began = time.perf_counter()
                    assert http.post(predict, json=BODY).status_code == 200
                    ready.append(time.perf_counter() - began)
                wakes.append(Wake(how, pod["created"] - sent, total, statistics.median(ready)))
                print(f"daemon wake: {json.dumps(asdict(wakes[-1]))}", flush=True)
    finally:
        http.close()
        stop_daemon(state)
        shutil.rmtree(state, ignore_errors=True)
    return wakes


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child-first-ever":
        _child_main(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--warm-runs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare-with", type=Path, action="append", default=[], metavar="DIR",
                        help="a worktree of an earlier commit (repeatable): its first-ever spawned start, same rounds")
    parser.add_argument("--daemon-runs", type=int, default=5, help="scale-from-zero rounds through a real daemon (0: none)")
    args = parser.parse_args()
    for tree in args.compare_with:
        if not (tree / "serving" / "platform" / "local" / "replicas.py").exists():
            parser.error(f"--compare-with {tree}: not a checkout of this project (no serving/platform/local/replicas.py)")
    result = asyncio.run(run(args.warm_runs, args.runs, [tree.resolve() for tree in args.compare_with]))
    if args.daemon_runs:
        wakes = daemon_wakes(args.daemon_runs)
        result["daemon_wakes"] = [asdict(w) for w in wakes]
    out = REPO / "benchmarks" / "results" / "cold_start.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    median = result["median"]
    assert isinstance(median, dict)
    print(f"{result['machine']}; load average {result['load_average']}; zygote ready in {result['zygote_ready_s']:.2f} s")
    print(f"{'case (median seconds)':44} {'fetch':>7} {'start':>7} {'bind':>7} {'ready':>7} {'answer':>7} {'TOTAL':>7} "
          f"{'max':>7} {'model load':>10} {'CPU s':>7}")
    for label, row in median.items():
        print(f"{label:44} {row['fetch']:7.3f} {row['start']:7.3f} {row['bind']:7.3f} {row['ready']:7.3f} "
              f"{row['answer']:7.3f} {row['total']:7.3f} {row['max_total']:7.3f} {row['model_load']:10.3f} {row['cpu_to_ready']:7.3f}")
    print(f"{'c_bare_interpreter (to loaded)':44} {'':>39} {result['c_bare_interpreter_load_s']:7.3f}")
    warm = median["a_warm_forked"]["total"]
    print(f"warm fork to first answer is {result['c_bare_interpreter_load_s'] / warm:.1f}x faster than a bare interpreter "
          f"loading the model, {median['b_first_ever_spawned']['total'] / warm:.1f}x faster than a spawned replica")
    if args.daemon_runs:
        forked = [w for w in wakes if w.how == "forked"]
        print(f"through the daemon, {len(forked)} of {len(wakes)} wakes forked: first answer from zero median "
              f"{statistics.median(w.total for w in wakes):.3f} s (max {max(w.total for w in wakes):.3f}), replica created "
              f"{statistics.median(w.to_replica for w in wakes):.3f} s after the request; the same request with a replica "
              f"ready {statistics.median(w.ready_answer for w in wakes) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
