"""Router overhead (issue 3, benchmark b): our router vs vllm-router (round_robin) on zero-latency engines.

    .venv/bin/python benchmarks/llmd/router_overhead.py [--engines 4] [--seconds 6] [--conns 32] [--profile] [--json]

Simulated engines with prefill = decode = 0 ms, short prompts (a few tokens), non-streamed /v1/completions,
max_tokens 4 and no temperature (so our response cache, which only keeps temperature-0 answers, stays out).
The load generator is ``wrk`` (C, one thread) with a Lua POST script, in its own process.

- Added latency: wrk at concurrency 1 directly against engine 0, then through each router (which spreads
  over all engines of the same simulator process); added p50/p99 = router's minus direct's.
- Throughput per router core: wrk with ``--conns`` connections; the router's CPU time (utime + stime from
  /proc/PID/stat) over the run; requests completed / router CPU-seconds = requests per second one fully
  busy router core would serve. Also reported: raw requests/s and the router's and simulator's CPU use.
- ``--profile``: one more run of our router under cProfile (and py-spy when installed in /tmp/vr-venv),
  printing where its time goes.

- ``--compare-with DIR``: in every round, also our router as the tree at DIR has it (a git worktree of an
  earlier commit), measured right after this tree's: the same-run before/after comparison.

Targets: added p50 <= 1 ms; our requests per router-core-second >= half of vllm-router's.
"""

from __future__ import annotations

import argparse
import json
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.llmd.common import (
    MODEL,
    PY,
    Proc,
    Procs,
    Sim,
    busy_processes,
    cpu_seconds,
    free_port_block,
    machine_load,
    start_ours,
    start_sim,
    start_vllm_router,
    vllm_router_bin,
    wait_http,
)

TARGET_ADDED_P50_MS = 1.0
TARGET_PER_CORE_RATIO = 0.5

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "%s", "prompt": "hello there world", "max_tokens": 4}'
local distinct = DISTINCT
local counter = 0
if distinct then
  request = function()
    counter = counter + 1
    return wrk.format(nil, nil, nil, string.format(
      '{"model": "%s", "prompt": "hello there world number %%d", "max_tokens": 4}', counter))
  end
end
local errors = 0
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, ' ..
    '"p99_us": %%d, "mean_us": %%f, "non2xx": %%d, "errors_connect": %%d, "errors_read": %%d, ' ..
    '"errors_timeout": %%d}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.mean, summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.timeout))
end
""" % (MODEL, MODEL)  # noqa: UP031 - a Lua template full of %%d escapes reads better with % than with braces


def wrk(url: str, script: Path, conns: int, seconds: float, watch: dict[str, int] | None = None) -> dict:
    """Run wrk; with ``watch`` (name -> pid) also return each process's CPU seconds over the run."""
    before = {k: cpu_seconds(p) for k, p in (watch or {}).items()}
    t0 = time.monotonic()
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script),
                          url + "/v1/completions"], capture_output=True, text=True, check=True, timeout=seconds + 60)
    wall = time.monotonic() - t0
    m = re.search(r"^WRKJSON (.*)$", out.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk gave no summary:\n{out.stdout}\n{out.stderr}")
    res = json.loads(m.group(1))
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["cpu_s"] = {k: cpu_seconds(p) - before[k] for k, p in (watch or {}).items()}
    res["wall_s"] = wall
    bad = res["non2xx"] + res["errors_connect"] + res["errors_read"] + res["errors_timeout"]
    if bad:
        print(f"  warning: {bad} failed requests against {url}", file=sys.stderr)
    return res


def measure(name: str, url: str, pid: int, sim_pid: int, script: Path, args: argparse.Namespace,
            direct: dict) -> dict:
    wrk(url, script, 1, 1.0)  # warm-up: connections, JIT-free but caches and pools
    lat = wrk(url, script, 1, args.seconds)
    thr = wrk(url, script, args.conns, args.seconds, {"router": pid, "sim": sim_pid})
    router_cpu = thr["cpu_s"]["router"]
    row = {
        "router": name,
        "p50_ms": lat["p50_us"] / 1000, "p99_ms": lat["p99_us"] / 1000,
        "added_p50_ms": (lat["p50_us"] - direct["p50_us"]) / 1000,
        "added_p99_ms": (lat["p99_us"] - direct["p99_us"]) / 1000,
        "rps": thr["rps"], "router_cpu_util": router_cpu / (thr["duration_us"] / 1e6),
        "sim_cpu_util": thr["cpu_s"]["sim"] / (thr["duration_us"] / 1e6),
        "rps_per_router_core": thr["requests"] / router_cpu if router_cpu > 0 else float("nan"),
        "failed": thr["non2xx"] + thr["errors_read"] + thr["errors_timeout"] + thr["errors_connect"],
    }
    print(f"  {name}: p50 {row['p50_ms']:.3f} ms (+{row['added_p50_ms']:.3f}), p99 {row['p99_ms']:.3f} ms "
          f"(+{row['added_p99_ms']:.3f}); {row['rps']:.0f} req/s at c={args.conns}, router CPU "
          f"{row['router_cpu_util']:.2f} cores, sim {row['sim_cpu_util']:.2f} -> "
          f"{row['rps_per_router_core']:.0f} req/s per router core", flush=True)
    return row


def start_ours_from(procs: Procs, sim: Sim, source: Path) -> tuple[Proc, str]:
    """Our router as the tree at ``source`` has it: ``-P`` keeps the working directory off sys.path so that
    PYTHONPATH picks the tree."""
    from benchmarks.llmd.common import BLOCK, HOST, TOKENIZER

    port = free_port_block(1)
    argv = [PY, "-P", "-m", "serving.llmd.serve", "--port", str(port), "--host", HOST, "--model", MODEL,
            "--block-size", str(BLOCK)]
    if TOKENIZER:
        argv += ["--tokenizer", TOKENIZER]
    for i, u in enumerate(sim.urls):
        argv += ["--engine", f"{u}={sim.zmq[i]},replay={sim.replay[i]}" if sim.zmq else u]
    p = procs.start("ours-before", argv, env={"PYTHONPATH": str(source)})
    url = f"http://{HOST}:{port}"
    wait_http(url, p, path="/v1/models")
    return p, url


def profile_ours(procs: Procs, sim: Sim, script: Path, args: argparse.Namespace) -> str:
    """Our router under cProfile for one throughput run, plus py-spy's view when available."""
    out = []
    prof = Path(tempfile.mkdtemp(prefix="llmd-prof-")) / "router.prof"
    port = free_port_block(1)
    argv = [PY, "-m", "cProfile", "-o", str(prof), "-m", "serving.llmd.serve", "--port", str(port),
            "--host", "127.0.0.1", "--model", MODEL, "--block-size", "32"]
    from benchmarks.llmd.common import TOKENIZER

    if TOKENIZER:
        argv += ["--tokenizer", TOKENIZER]
    for i, u in enumerate(sim.urls):
        argv += ["--engine", f"{u}={sim.zmq[i]},replay={sim.replay[i]}"]
    p = procs.start("ours-cprofile", argv)
    url = f"http://127.0.0.1:{port}"
    wait_http(url, p, path="/v1/models")
    wrk(url, script, args.conns, args.seconds)
    # The router stops gracefully on SIGINT or SIGTERM and exits normally, which lets cProfile write its file.
    procs.stop(p, timeout=20, sig=signal.SIGINT)
    if prof.exists():
        import io

        buf = io.StringIO()
        st = pstats.Stats(str(prof), stream=buf)
        st.sort_stats("tottime").print_stats(25)
        out.append(f"cProfile, top 25 by own time (one {args.seconds}s run at c={args.conns}):\n"
                   + "\n".join(buf.getvalue().splitlines()[:45]))
    spy = shutil.which("py-spy") or ("/tmp/vr-venv/bin/py-spy" if Path("/tmp/vr-venv/bin/py-spy").exists() else None)
    if spy:
        p, url = start_ours(procs, sim, name="ours-pyspy")
        wrk(url, script, 1, 1.0)
        rec = subprocess.Popen([spy, "record", "-p", str(p.pid), "-d", str(int(args.seconds)), "-f", "raw",
                                "-o", str(prof.with_suffix(".folded")), "-r", "200", "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wrk(url, script, args.conns, args.seconds)
        rec.wait(60)
        procs.stop(p)
        folded = prof.with_suffix(".folded")
        if folded.exists():
            out.append(summarize_folded(folded))
    return "\n\n".join(out)


def summarize_folded(path: Path) -> str:
    """Own (leaf) time by package and by function, from py-spy's folded stacks. Inclusive times are left
    out: py-spy's --nonblocking samples often catch coroutine stacks part-way, which undercounts them."""
    by_pkg: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        k = int(n)
        total += k
        frame = stack.split(";")[-1]
        m = re.search(r"\((.*?):\d+\)", frame)
        parts = (m.group(1) if m else "?").split("/")
        pkg = "/".join(parts[:3]) if parts[0] == "serving" else parts[0]
        by_pkg[pkg] = by_pkg.get(pkg, 0) + k
        leaf[frame] = leaf.get(frame, 0) + k
    if not total:
        return "py-spy: no samples"
    lines = [f"py-spy ({total} samples): own time by package"]
    lines += [f"  {100 * k / total:5.1f}%  {p}" for p, k in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:16]]
    lines.append("own time by function")
    lines += [f"  {100 * k / total:5.1f}%  {f[:110]}" for f, k in sorted(leaf.items(), key=lambda kv: -kv[1])[:15]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the router pair (alternating) this many times")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-only", action="store_true", help="skip the measurements, only profile ours")
    ap.add_argument("--distinct-prompts", action="store_true",
                    help="a different prompt on every request (defeats the router's tokenization memo, as real traffic does)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--compare-with", type=Path, metavar="DIR",
                    help="also run our router from the tree at DIR (an earlier commit's worktree) in every round")
    ap.add_argument("--no-peer", action="store_true", help="skip vllm-router")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is required (apt-get install wrk)")
    print(f"load before: {machine_load()}; busy: {busy_processes() or 'none'}", flush=True)
    logdir = Path(tempfile.mkdtemp(prefix="llmd-overhead-"))
    script = logdir / "post.lua"
    script.write_text(LUA.replace("DISTINCT", "true" if args.distinct_prompts else "false"))
    rows: list[dict] = []
    directs: list[dict] = []
    profile = ""
    with Procs(logdir) as procs:
        sim = start_sim(procs, args.engines, num_blocks=4096, max_running=256, prefill_ms=0, decode_ms=0)
        wrk(sim.urls[0], script, 1, 1.0)
        for r in range(0 if args.profile_only else args.rounds):
            direct = wrk(sim.urls[0], script, 1, args.seconds)
            direct_thr = wrk(sim.urls[0], script, args.conns, args.seconds, {"sim": sim.proc.pid})
            directs.append({"p50_ms": direct["p50_us"] / 1000, "p99_ms": direct["p99_us"] / 1000,
                            "rps": direct_thr["rps"],
                            "sim_cpu_util": direct_thr["cpu_s"]["sim"] / (direct_thr["duration_us"] / 1e6)})
            print(f"round {r + 1}: direct p50 {directs[-1]['p50_ms']:.3f} ms, p99 {directs[-1]['p99_ms']:.3f} ms, "
                  f"{direct_thr['rps']:.0f} req/s at c={args.conns} (sim CPU {directs[-1]['sim_cpu_util']:.2f})",
                  flush=True)
            p, url = start_ours(procs, sim)
            rows.append({"round": r + 1, **measure("ours", url, p.pid, sim.proc.pid, script, args, direct)})
            procs.stop(p)
            if args.compare_with is not None:
                p, url = start_ours_from(procs, sim, args.compare_with.resolve())
                rows.append({"round": r + 1, **measure("ours before", url, p.pid, sim.proc.pid, script, args, direct)})
                procs.stop(p)
            if vllm_router_bin() and not args.no_peer:
                p, url = start_vllm_router(procs, sim, "round_robin")
                rows.append({"round": r + 1, **measure("vllm-router round_robin", url, p.pid, sim.proc.pid, script,
                                                      args, direct)})
                procs.stop(p)
        if args.profile or args.profile_only:
            profile = profile_ours(procs, sim, script, args)
    print(f"load after: {machine_load()}")
    if rows:
        print(summarize(rows))
    if profile:
        print(profile)
    if args.json:
        print(json.dumps({"direct": directs, "rows": rows, "profile": profile}, indent=1))


def summarize(rows: list[dict]) -> str:
    def med(name: str, key: str) -> float:
        xs = sorted(r[key] for r in rows if r["router"] == name)
        return xs[len(xs) // 2] if xs else float("nan")

    lines = ["| router | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s (c=N) | router CPU (cores) | "
             "req/s per router core |", "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["router"] for r in rows):
        lines.append(f"| {name} | {med(name, 'p50_ms'):.3f} | {med(name, 'p99_ms'):.3f} | "
                     f"{med(name, 'added_p50_ms'):.3f} | {med(name, 'added_p99_ms'):.3f} | {med(name, 'rps'):.0f} | "
                     f"{med(name, 'router_cpu_util'):.2f} | {med(name, 'rps_per_router_core'):.0f} |")
    ours, peer = med("ours", "rps_per_router_core"), med("vllm-router round_robin", "rps_per_router_core")
    added = med("ours", "added_p50_ms")
    lines.append("")
    lines.append(f"added p50 {added:.3f} ms (target <= {TARGET_ADDED_P50_MS} ms: "
                 f"{'met' if added <= TARGET_ADDED_P50_MS else 'NOT met'}); per-core throughput ours/vllm-router = "
                 f"{ours / peer:.2f} (target >= {TARGET_PER_CORE_RATIO}: "
                 f"{'met' if ours / peer >= TARGET_PER_CORE_RATIO else 'NOT met'})")
    # The machine is shared and small: show each round's figures, not only the medians.
    rounds = sorted({r["round"] for r in rows if "round" in r})
    for name in dict.fromkeys(r["router"] for r in rows):
        per = {r["round"]: r for r in rows if r["router"] == name and "round" in r}
        added_by_round = " / ".join(f"{per[k]['added_p50_ms']:.3f}" for k in rounds if k in per)
        per_core = " / ".join(f"{per[k]['rps_per_router_core']:.0f}" for k in rounds if k in per)
        lines.append(f"per round, {name}: added p50 {added_by_round} ms; req/s per router core {per_core}")
    peer_rows = {r["round"]: r for r in rows if r["router"] == "vllm-router round_robin" and "round" in r}
    ratios = [r["rps_per_router_core"] / peer_rows[r["round"]]["rps_per_router_core"]
              for r in rows if r["router"] == "ours" and r.get("round") in peer_rows]
    if ratios:
        lines.append("per-core ratio by round: " + " / ".join(f"{x:.2f}" for x in ratios))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
