"""What the embedded gateway costs: the V2 iris request direct to the model server vs through the gateway.

    .venv/bin/python benchmarks/gateway_latency.py [--duration 8] [--repeat 3] [--upstream auto|server|standin]

Starts the real model server (``python -m serving.runtimes.server``; a stand-in Starlette app with the
same work when that module is missing or ``--upstream standin``) and the gateway in its own process
(``python -m serving.platform.local.gateway``), then POSTs ``tests/fixtures/kserve-iris/iris-input-v2.json``
to ``/v2/models/iris/infer``:

(a) latency p50/p99 at concurrency 1, direct vs ``/serving/default/iris/v2/models/iris/infer``;
(b) throughput at concurrency 16, direct vs through the gateway.

Load comes from ``wrk`` (Debian package) with a Lua script for the POST body, else from a lean Python
load generator in a separate process. Direct and gateway runs alternate, ``--repeat`` times each, and
the median run counts. Targets: the gateway adds < 1 ms at p50 and keeps >= 80% of direct throughput.
Results go to ``benchmarks/results/gateway_latency.json``.

``--compare-with DIR`` (a git worktree of an earlier commit, e.g. ``git worktree add /tmp/http-before HEAD``)
runs one model server and two standalone gateways, this tree's and DIR's, and alternates direct, before and
after in every round: latency at concurrency 1, throughput at ``--concurrency`` and each gateway's CPU time
per request (utime + stime from ``/proc``). Results go to ``benchmarks/results/gateway_before_after.json``.

``--activator`` measures what the activator and traffic split add when a replica is ready: one model server,
two standalone gateways in front of it, one routing ``default/iris`` with ``set`` (no revision, no hold: the
baseline), one with ``set_split`` (a revision with 100 %, held when not ready, metered), alternated with direct
in every round, with each gateway's CPU time per request. Target: the split route adds < 1 ms at p50 over
the plain one. Results go to ``benchmarks/results/gateway_activator.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from support import free_port, running, wait_http  # noqa: E402

IRIS_DIR = REPO / "tests" / "fixtures" / "kserve-iris"
BODY = (IRIS_DIR / "iris-input-v2.json").read_bytes()
DIRECT_PATH = "/v2/models/iris/infer"
GATEWAY_PATH = "/serving/default/iris/v2/models/iris/infer"
RESULTS = REPO / "benchmarks" / "results" / "gateway_latency.json"
TARGET_ADDED_P50_MS = 1.0
TARGET_THROUGHPUT_RATIO = 0.80


# -- load generation ---------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
"""


def _wrk(url: str, connections: int, duration: float) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % BODY.decode())
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "-s", script.name, url],
            capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    latency = {int(p): _ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)", out, re.M)}
    rps = re.search(r"Requests/sec:\s+(\S+)", out)
    if rps is None:
        raise RuntimeError(f"no Requests/sec in wrk's output for {url}:\n{out}")
    return {"p50_ms": latency[50], "p99_ms": latency[99], "rps": float(rps[1])}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def _python_load(url: str, connections: int, duration: float) -> dict[str, float]:
    """Fallback when wrk is missing: the generator below, in its own process (not this one's GIL)."""
    out = subprocess.run([sys.executable, __file__, "--load", url, str(connections), str(duration)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _load_main(url: str, connections: int, duration: float) -> None:
    """Keep-alive connections, each sending the same precomputed request as soon as the last answered."""
    import asyncio
    from urllib.parse import urlsplit

    import httptools

    parts = urlsplit(url)
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY
    latencies: list[float] = []

    class Done:
        def __init__(self) -> None:
            self.complete = False
            self.status = 0

        def on_message_complete(self) -> None:
            self.complete = True

    async def one(deadline: float) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        while time.perf_counter() < deadline:
            done = Done()
            parser = httptools.HttpResponseParser(done)
            started = time.perf_counter()
            writer.write(request)
            while not done.complete:
                parser.feed_data(await reader.read(65536))
            latencies.append(time.perf_counter() - started)
            if parser.get_status_code() != 200:
                raise RuntimeError(f"status {parser.get_status_code()}")
        writer.close()

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(one(started + duration) for _ in range(connections)))
        return time.perf_counter() - started

    try:
        import uvloop
        elapsed = uvloop.run(main())
    except ImportError:
        elapsed = asyncio.run(main())
    latencies.sort()
    print(json.dumps({"p50_ms": latencies[len(latencies) // 2] * 1e3,
                      "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3, "rps": len(latencies) / elapsed}))


# -- the stand-in upstream (until serving.runtimes.server exists) ----------------------------------


def _standin_main(port: int) -> None:
    """A Starlette app doing the real server's work: parse V2 JSON, sklearn predict, V2 JSON answer."""
    import joblib
    import numpy as np
    import orjson
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    model = joblib.load(IRIS_DIR / "model.joblib")

    async def infer(request: Request) -> Response:
        payload = orjson.loads(await request.body())
        tensor = payload["inputs"][0]
        data = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        result = model.predict(data)
        return Response(orjson.dumps({"model_name": "iris", "outputs": [
            {"name": "output-0", "shape": list(result.shape), "datatype": "INT64", "data": result.tolist()}]}),
            media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    app = Starlette(routes=[Route("/v2/models/iris/infer", infer, methods=["POST"]), Route("/v2/health/ready", ready)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools")


# -- the run ---------------------------------------------------------------------------------------


def load(url: str, connections: int, duration: float) -> dict[str, float]:
    """``wrk`` when it is installed (apt-get install -y wrk), else the pure-Python load generator."""
    return (_wrk if shutil.which("wrk") else _python_load)(url, connections, duration)


def _measure(url: str, pid: int | None, concurrency: int, duration: float) -> dict[str, float]:
    """One round of one target: latency at concurrency 1, throughput at ``concurrency``, and the gateway
    process's CPU per request over the throughput run (when ``pid`` is a gateway's)."""
    latency = load(url, 1, duration)
    cpu = _cpu_seconds(pid) if pid is not None else 0.0
    started = time.monotonic()
    throughput = load(url, concurrency, duration)
    elapsed = time.monotonic() - started
    row = {"p50_ms": latency["p50_ms"], "p99_ms": latency["p99_ms"], "rps_c1": latency["rps"], "rps": throughput["rps"]}
    if pid is not None:
        requests = throughput["rps"] * min(elapsed, max(1, round(duration)))
        row["cpu_us_per_request"] = (_cpu_seconds(pid) - cpu) / requests * 1e6
    return row


def _echo_main(port: int) -> None:
    """The cheapest upstream there is (a fixed 200 per request, no parsing beyond framing), so that what is
    measured through the gateway is the gateway's own cost rather than the model server's variance."""
    import asyncio

    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                head, found, rest = self.buffer.partition(b"\r\n\r\n")
                if not found:
                    return
                match = re.search(rb"(?i)content-length: *(\d+)", head)
                length = int(match[1]) if match else 0
                if len(rest) < length:
                    return
                self.buffer = rest[length:]
                self.transport.write(answer)  # type: ignore[attr-defined]

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    try:
        import uvloop
        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


def _upstream_command(kind: str, port: int) -> tuple[list[str], str]:
    if kind == "echo":
        return [sys.executable, __file__, "--serve-echo", str(port)], "echo stand-in (a fixed 200 per request)"
    real = (REPO / "serving" / "runtimes" / "server.py").exists()
    if kind == "server" or (kind == "auto" and real):
        return ([sys.executable, "-m", "serving.runtimes.server", "--model_name", "iris", "--model_dir", str(IRIS_DIR),
                 "--http_port", str(port), "--log_level", "warning"], "serving.runtimes.server")
    return [sys.executable, __file__, "--serve-standin", str(port)], "stand-in (Starlette + sklearn)"


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    runs = sorted(runs, key=lambda r: r["p50_ms"])
    middle = runs[len(runs) // 2]
    return {**middle, "runs": [{k: round(v, 4) for k, v in r.items()} for r in runs]}  # type: ignore[dict-item]


@contextlib.contextmanager
def _standalone(upstream: str) -> Iterator[tuple[str, str, str]]:
    """A model server and the gateway in its own process, routed by a --route flag."""
    server_port, gateway_port = free_port(), free_port()
    command, upstream_name = _upstream_command(upstream, server_port)
    with running(command) as server:
        wait_http(f"http://127.0.0.1:{server_port}/v2/health/ready", timeout=60, proc=server)
        gateway_cmd = [sys.executable, "-m", "serving.platform.local.gateway", "--port", str(gateway_port),
                       "--route", f"default/iris=127.0.0.1:{server_port}"]
        with running(gateway_cmd) as gateway:
            wait_http(f"http://127.0.0.1:{gateway_port}/healthz", timeout=30, proc=gateway)
            yield (f"http://127.0.0.1:{server_port}{DIRECT_PATH}", f"http://127.0.0.1:{gateway_port}{GATEWAY_PATH}",
                   f"{upstream_name}, gateway process")


@contextlib.contextmanager
def _daemon() -> Iterator[tuple[str, str, str]]:
    """The real embedded platform: `odh up`'s daemon runs the iris InferenceService; its gateway shares
    the daemon's event loop with the control API and the reconcile loop, as users run it."""
    from serving.platform.local import LocalPlatform, start_daemon, stop_daemon

    with tempfile.TemporaryDirectory() as state_dir:
        state = Path(state_dir)
        start_daemon(state, free_port())
        try:
            platform = LocalPlatform(state)
            platform.apply({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                            "metadata": {"name": "iris"},
                            "spec": {"predictor": {"sklearn": {"storageUri": IRIS_DIR.as_uri()}}}})
            url = platform.wait_ready("InferenceService", "default", "iris", timeout=120)["status"]["url"]
            (pod,) = [p for p in platform.pods() if p["ready"]]
            yield (f"http://127.0.0.1:{pod['port']}{DIRECT_PATH}", f"{url}{DIRECT_PATH}",
                   "serving.runtimes.server replica, gateway inside the odh daemon")
        finally:
            stop_daemon(state)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gateway_from(source: Path, port: int, server_port: int) -> list[str]:
    """The standalone gateway as ``source`` has it: ``-P`` keeps the working directory off sys.path, so
    PYTHONPATH (set by the caller) decides which tree's ``serving`` is imported."""
    return [sys.executable, "-P", "-m", "serving.platform.local.gateway", "--port", str(port),
            "--route", f"default/iris=127.0.0.1:{server_port}"]


def compare(before: Path, duration: float, repeat: int, upstream: str, concurrency: int) -> dict[str, Any]:
    """This tree's gateway against ``before``'s, interleaved in every round against one model server."""
    server_port = free_port()
    command, upstream_name = _upstream_command(upstream, server_port)
    rows: dict[str, list[dict[str, float]]] = {"direct": [], "before": [], "after": []}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running(command))
        wait_http(f"http://127.0.0.1:{server_port}/v2/health/ready", timeout=60, proc=server)
        urls = {"direct": f"http://127.0.0.1:{server_port}{DIRECT_PATH}"}
        pids: dict[str, int] = {}
        for name, source in (("before", before), ("after", REPO)):
            port = free_port()
            proc = stack.enter_context(running(_gateway_from(source, port, server_port),
                                               env={"PYTHONPATH": str(source)}, cwd=source))
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, proc=proc)
            urls[name], pids[name] = f"http://127.0.0.1:{port}{GATEWAY_PATH}", proc.pid
        for url in urls.values():
            load(url, 4, 2)
        for round_ in range(repeat):
            order = ["direct", "before", "after"] if round_ % 2 == 0 else ["direct", "after", "before"]
            for name in order:
                row = _measure(urls[name], pids.get(name), concurrency, duration)
                rows[name].append(row)
                print(f"round {round_ + 1} {name:>6}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    summary: dict[str, Any] = {}
    for name in ("before", "after"):
        pairs = list(zip(rows["direct"], rows[name], strict=True))
        summary[name] = {
            "added_p50_ms": statistics.median(g["p50_ms"] - d["p50_ms"] for d, g in pairs),
            "added_p99_ms": statistics.median(g["p99_ms"] - d["p99_ms"] for d, g in pairs),
            "throughput_ratio": statistics.median(g["rps"] / d["rps"] for d, g in pairs),
            "cpu_us_per_request": [round(r["cpu_us_per_request"], 1) for r in rows[name]],
        }
    return {"benchmark": "gateway_before_after", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "upstream": upstream_name, "before": str(before), "duration_s": duration, "repeat": repeat,
            "concurrency": concurrency, "rows": rows, "summary": summary}


def _fast_path_ns(calls: int = 200_000) -> float:
    """Nanoseconds per request of what the split and the activator add to a request whose revision has a
    ready replica, timed in-process on the real objects: the split's choice, the meter's two calls and the
    per-revision count (the hold check itself is one attribute test)."""
    from serving.platform.local.routes import Backend, Endpoint, RouteTable

    table = RouteTable()
    table.set_split("default", "iris", [Backend("iris-00001", 100, (Endpoint("127.0.0.1", 1),))])
    route = table.route("default", "iris")
    assert route is not None
    counts: dict[tuple[str, str, int], int] = {}
    clock = time.monotonic
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(calls):
            target = route.choose()
            assert target is not None
            meter = target.meter
            meter.started(clock())
            meter.finished(clock())
            key = (target.namespace, target.name, 200)
            counts[key] = counts.get(key, 0) + 1
        best = min(best, (time.perf_counter_ns() - started) / calls)
    return best


def activator(duration: float, repeat: int, upstream: str, concurrency: int) -> dict[str, Any]:
    """The activator's fast path: a gateway whose route goes through ``set_split`` (one ready revision) against
    one whose route goes through ``set``, two processes in front of one model server, interleaved with direct in
    every round; each gateway's CPU time per request too (robust where a shared machine makes latency noisy)."""
    server_port = free_port()
    command, upstream_name = _upstream_command(upstream, server_port)
    urls = {"direct": f"http://127.0.0.1:{server_port}{DIRECT_PATH}"}
    rows: dict[str, list[dict[str, float]]] = {"direct": [], "set": [], "set_split": []}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running(command))
        wait_http(f"http://127.0.0.1:{server_port}/v2/health/ready", timeout=60, proc=server)
        pids: dict[str, int] = {}
        for name, flag in (("set", "--route"), ("set_split", "--split-route")):
            port = free_port()
            proc = stack.enter_context(running([sys.executable, "-m", "serving.platform.local.gateway", "--port", str(port),
                                                flag, f"default/iris=127.0.0.1:{server_port}"]))
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, proc=proc)
            urls[name], pids[name] = f"http://127.0.0.1:{port}{GATEWAY_PATH}", proc.pid
        for url in urls.values():
            load(url, 4, 2)
        for round_ in range(repeat):
            order = ["direct", "set", "set_split"] if round_ % 2 == 0 else ["direct", "set_split", "set"]
            for name in order:
                row = _measure(urls[name], pids.get(name), concurrency, duration)
                rows[name].append(row)
                print(f"round {round_ + 1} {name:>9}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)

    def paired(name: str, base: str, key: str, ratio: bool = False) -> float:
        pairs = zip(rows[base], rows[name], strict=True)
        return statistics.median(g[key] / b[key] if ratio else g[key] - b[key] for b, g in pairs)

    summary: dict[str, Any] = {
        "split_over_set_p50_ms": paired("set_split", "set", "p50_ms"),
        "split_over_set_p99_ms": paired("set_split", "set", "p99_ms"),
        "split_over_set_throughput_ratio": paired("set_split", "set", "rps", ratio=True),
        "set_over_direct_p50_ms": paired("set", "direct", "p50_ms"),
        "split_over_direct_p50_ms": paired("set_split", "direct", "p50_ms"),
        "cpu_us_per_request": {name: statistics.median(r["cpu_us_per_request"] for r in rows[name])
                               for name in ("set", "set_split")},
        "activator_fast_path_ns": _fast_path_ns(),
    }
    return {"benchmark": "gateway_activator", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "upstream": upstream_name, "load_tool": "wrk" if load is _wrk else "python load generator",
            "duration_s": duration, "repeat": repeat, "concurrency": concurrency, "rows": rows, "summary": summary,
            "pass": {"split_adds_under_1ms_p50": summary["split_over_set_p50_ms"] < TARGET_ADDED_P50_MS}}


def run(duration: float, repeat: int, upstream: str, concurrency: int, via: str = "daemon") -> dict[str, Any]:
    tool = "wrk" if load is _wrk else "python load generator"
    with (_daemon() if via == "daemon" else _standalone(upstream)) as (direct, through, upstream_name):
        for url in (direct, through):  # warm up both paths (imports, pools, caches)
            load(url, 4, 2)
        results: dict[str, dict[str, list[dict[str, float]]]] = {
            "latency_c1": {"direct": [], "gateway": []}, f"throughput_c{concurrency}": {"direct": [], "gateway": []}}
        for _ in range(repeat):
            for name, url in (("direct", direct), ("gateway", through)):
                results["latency_c1"][name].append(load(url, 1, duration))
            for name, url in (("direct", direct), ("gateway", through)):
                results[f"throughput_c{concurrency}"][name].append(load(url, concurrency, duration))
    lat = {name: _median_run(runs) for name, runs in results["latency_c1"].items()}
    thr = {name: sorted(results[f"throughput_c{concurrency}"][name], key=lambda r: r["rps"]) for name in ("direct", "gateway")}
    thr_direct = statistics.median(r["rps"] for r in thr["direct"])
    thr_gateway = statistics.median(r["rps"] for r in thr["gateway"])
    # The verdicts use paired runs (direct then gateway, back to back), so that drift in what else the
    # machine is doing cancels out; the median over the pairs counts.
    lat_runs, thr_runs = results["latency_c1"], results[f"throughput_c{concurrency}"]
    added = statistics.median(g["p50_ms"] - d["p50_ms"] for d, g in zip(lat_runs["direct"], lat_runs["gateway"], strict=True))
    added_p99 = statistics.median(g["p99_ms"] - d["p99_ms"] for d, g in zip(lat_runs["direct"], lat_runs["gateway"], strict=True))
    ratio = statistics.median(g["rps"] / d["rps"] for d, g in zip(thr_runs["direct"], thr_runs["gateway"], strict=True))
    return {
        "benchmark": "gateway_latency",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "upstream": upstream_name,
        "load_tool": tool,
        "request": f"POST {DIRECT_PATH} with iris-input-v2.json ({len(BODY)} bytes)",
        "duration_s": duration,
        "repeat": repeat,
        "latency_c1": {**lat, "added_p50_ms": round(added, 4), "added_p99_ms": round(added_p99, 4)},
        f"throughput_c{concurrency}": {
            "direct_rps": round(thr_direct, 1), "gateway_rps": round(thr_gateway, 1), "ratio": round(ratio, 4),
            "direct_runs": thr["direct"], "gateway_runs": thr["gateway"]},
        "targets": {"added_p50_ms_below": TARGET_ADDED_P50_MS, "throughput_ratio_at_least": TARGET_THROUGHPUT_RATIO},
        "pass": {"added_p50": added < TARGET_ADDED_P50_MS, "throughput": ratio >= TARGET_THROUGHPUT_RATIO},
    }


def _print_table(result: dict[str, Any], concurrency: int) -> None:
    lat, thr = result["latency_c1"], result[f"throughput_c{concurrency}"]
    ok = {True: "ok", False: "MISSED"}
    print(f"\nGateway overhead: {result['request']}")
    print(f"upstream: {result['upstream']}; load: {result['load_tool']}; {result['machine']['cpus']} CPUs; "
          f"median of {result['repeat']} runs x {result['duration_s']}s (deltas, ratios: median of paired runs)\n")
    print(f"{'measure':<34}{'direct':>12}{'gateway':>12}{'delta/ratio':>14}{'target':>12}  result")
    print("-" * 92)
    print(f"{'latency p50 @c1 (ms)':<34}{lat['direct']['p50_ms']:>12.3f}{lat['gateway']['p50_ms']:>12.3f}"
          f"{lat['added_p50_ms']:>+14.3f}{'< +1.000':>12}  {ok[result['pass']['added_p50']]}")
    print(f"{'latency p99 @c1 (ms)':<34}{lat['direct']['p99_ms']:>12.3f}{lat['gateway']['p99_ms']:>12.3f}"
          f"{lat['added_p99_ms']:>+14.3f}{'':>12}")
    print(f"{'requests/s @c1':<34}{lat['direct']['rps']:>12.1f}{lat['gateway']['rps']:>12.1f}"
          f"{lat['gateway']['rps'] / lat['direct']['rps']:>14.3f}{'':>12}")
    print(f"{f'throughput @c{concurrency} (req/s)':<34}{thr['direct_rps']:>12.1f}{thr['gateway_rps']:>12.1f}"
          f"{thr['ratio']:>14.3f}{'>= 0.800':>12}  {ok[result['pass']['throughput']]}")
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-standin":
        _standin_main(int(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-echo":
        _echo_main(int(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        _load_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measure (the median counts)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--upstream", choices=["auto", "server", "standin", "echo"], default="auto",
                        help="upstream for --via standalone, --compare-with and --activator (echo: a fixed 200, to "
                             "isolate the gateway's own cost)")
    parser.add_argument("--via", choices=["daemon", "standalone"], default="daemon",
                        help="the gateway inside a real odh daemon (default) or alone in its own process")
    parser.add_argument("--compare-with", type=Path, metavar="DIR",
                        help="a worktree of an earlier commit: its standalone gateway against this tree's, interleaved")
    parser.add_argument("--activator", action="store_true",
                        help="a route through set_split (one ready revision) against one through set, interleaved")
    args = parser.parse_args()
    if args.activator:
        result = activator(args.duration, args.repeat, args.upstream, args.concurrency)
        out = RESULTS.with_name("gateway_activator.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({"summary": result["summary"], "pass": result["pass"]}, indent=2))
        return
    if args.compare_with is not None:
        result = compare(args.compare_with.resolve(), args.duration, args.repeat, args.upstream, args.concurrency)
        out = RESULTS.with_name("gateway_before_after.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        for name, figures in result["summary"].items():
            print(f"{name}: " + json.dumps(figures))
        return
    result = run(args.duration, args.repeat, args.upstream, args.concurrency, args.via)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    _print_table(result, args.concurrency)


if __name__ == "__main__":
    main()
