"""Shared helpers for the LLM-D benchmarks: start/stop processes, engines and routers, read /proc and metrics.

Every process a benchmark starts goes through ``Procs``, which stops exactly those processes (by PID, SIGTERM
then SIGKILL) on exit, error or Ctrl-C. Only loopback addresses are used.

The peer, ``vllm-router`` (PyPI, Rust), lives in its own virtual environment, never in the project's:

    python3 -m venv /tmp/vr-venv && /tmp/vr-venv/bin/pip install vllm-router
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
HOST = "127.0.0.1"
MODEL = "sim-model"
BLOCK = 32
_FIXTURE_TOKENIZER = ROOT.parent / "shared" / "fixtures" / "vllm-kv-events" / "tokenizer"
TOKENIZER = str(_FIXTURE_TOKENIZER) if _FIXTURE_TOKENIZER.exists() else None
CLK_TCK = os.sysconf("SC_CLK_TCK")


def vllm_router_bin() -> str | None:
    for cand in (os.environ.get("VLLM_ROUTER"), "/tmp/vr-venv/bin/vllm-router", shutil.which("vllm-router")):
        if cand and Path(cand).exists():
            return cand
    return None


def free_port_block(n: int, start: int = 20000, stop: int = 60000) -> int:
    """A base port such that base..base+n-1 are all free on loopback (best effort)."""
    import random

    rng = random.Random(os.getpid() ^ int(time.time()))
    for _ in range(200):
        base = rng.randrange(start, stop - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((HOST, p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_load() -> str:
    return Path("/proc/loadavg").read_text().strip()


def busy_processes(threshold: float = 20.0) -> list[str]:
    """Other processes using > threshold % CPU right now (ps's lifetime average is useless: sample /proc)."""
    def snap() -> dict[int, tuple[float, str]]:
        out = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:100]
                    out[int(d.name)] = (cpu_seconds(int(d.name)), cmd)
        return out

    a = snap()
    time.sleep(1.0)
    b = snap()
    return [f"{pid} {100 * (b[pid][0] - a[pid][0]):.0f}% {b[pid][1]}" for pid in b
            if pid in a and pid != os.getpid() and 100 * (b[pid][0] - a[pid][0]) > threshold]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""


@dataclass
class Procs:
    """Processes this benchmark started; ``stop_all`` ends exactly those."""

    logdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = self.logdir / f"{name}.log"
        fh = open(log, "wb")  # noqa: SIM115 - the child owns it
        popen = subprocess.Popen(list(argv), stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                 env={**os.environ, **(env or {})}, start_new_session=True)
        fh.close()
        p = Proc(name, popen, log)
        self.procs.append(p)
        return p

    def stop(self, p: Proc, timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
        if p.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
            try:
                p.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.popen.wait(timeout)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in reversed(list(self.procs)):
            self.stop(p)

    def __enter__(self) -> Procs:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_http(url: str, proc: Proc, timeout: float = 60.0, path: str = "/health") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=1.0).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url}{path} after {timeout}s:\n{proc.tail()}")


@dataclass
class Sim:
    proc: Proc
    urls: list[str]
    zmq: list[str]
    replay: list[str]


def start_sim(procs: Procs, engines: int, *, num_blocks: int = 512, max_running: int = 8,
              prefill_ms: float = 0.0, decode_ms: float = 0.0, events: bool = True, name: str = "sim",
              max_model_len: int = 8192) -> Sim:
    base = free_port_block(3 * engines)
    http, zmq, rep = base, base + engines, base + 2 * engines
    argv = [PY, "-m", "serving.llmd.sim", "--model", MODEL, "--engines", str(engines), "--host", HOST,
            "--base-port", str(http), "--block-size", str(BLOCK), "--num-blocks", str(num_blocks),
            "--max-running", str(max_running), "--prefill-ms-per-token", str(prefill_ms),
            "--decode-ms-per-token", str(decode_ms), "--max-model-len", str(max_model_len)]
    if events:
        argv += ["--zmq-base-port", str(zmq), "--replay-base-port", str(rep)]
    if TOKENIZER:
        argv += ["--tokenizer", TOKENIZER]
    p = procs.start(name, argv)
    urls = [f"http://{HOST}:{http + i}" for i in range(engines)]
    for u in urls:
        wait_http(u, p)
    return Sim(p, urls,
               [f"tcp://{HOST}:{zmq + i}" for i in range(engines)] if events else [],
               [f"tcp://{HOST}:{rep + i}" for i in range(engines)] if events else [])


def start_ours(procs: Procs, sim: Sim, *, events: bool = True, name: str = "ours",
               extra: Sequence[str] = ()) -> tuple[Proc, str]:
    port = free_port_block(1)
    argv = [PY, "-m", "serving.llmd.serve", "--port", str(port), "--host", HOST, "--model", MODEL,
            "--block-size", str(BLOCK), *extra]
    if TOKENIZER:
        argv += ["--tokenizer", TOKENIZER]
    for i, u in enumerate(sim.urls):
        argv += ["--engine", f"{u}={sim.zmq[i]},replay={sim.replay[i]}" if events and sim.zmq else u]
    p = procs.start(name, argv)
    url = f"http://{HOST}:{port}"
    wait_http(url, p, path="/v1/models")
    return p, url


def start_vllm_router(procs: Procs, sim: Sim, policy: str, *, name: str | None = None) -> tuple[Proc, str]:
    exe = vllm_router_bin()
    if exe is None:
        raise RuntimeError("vllm-router not found: python3 -m venv /tmp/vr-venv && "
                           "/tmp/vr-venv/bin/pip install vllm-router")
    port = free_port_block(1)
    argv = [exe, "--host", HOST, "--port", str(port), "--policy", policy, "--log-level", "warning",
            "--worker-urls", *sim.urls]
    if policy == "kv_aware":
        for i, u in enumerate(sim.urls):
            argv += ["--kv-event-source", f"{u}={sim.zmq[i]}", "--kv-event-replay-source", f"{u}={sim.replay[i]}"]
        argv += ["--kv-event-block-size", str(BLOCK), "--kv-event-model", MODEL]
    p = procs.start(name or f"vllm-router-{policy}", argv)
    url = f"http://{HOST}:{port}"
    wait_http(url, p, path="/health")
    return p, url


_METRIC = re.compile(r"^(vllm:prefix_cache_(?:queries|hits)_total)\{[^}]*\}\s+([0-9.eE+-]+)", re.M)


def prefix_counters(urls: Sequence[str]) -> tuple[float, float]:
    """Sum over engines of (queries, hits) tokens."""
    q = h = 0.0
    with httpx.Client(timeout=5.0) as c:
        for u in urls:
            for name, val in _METRIC.findall(c.get(u + "/metrics").text):
                if name.endswith("queries_total"):
                    q += float(val)
                else:
                    h += float(val)
    return q, h


def reset_prefix_caches(urls: Sequence[str]) -> None:
    with httpx.Client(timeout=5.0) as c:
        for u in urls:
            c.post(u + "/reset_prefix_cache")


def percentile(xs: Sequence[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
