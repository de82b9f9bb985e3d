"""Shared-prefix multi-turn chat under KV-cache pressure (issue 3, benchmark a), on simulated engines.

    .venv/bin/python benchmarks/llmd/shared_prefix_chat.py [--engines 8 16] [--routers ours,round_robin,cache_aware,kv_aware]
        [--groups-per-engine 3] [--users 4] [--turns 4] [--doc-tokens 512] [--num-blocks 96] [--json]

Workload: ``groups = groups_per_engine * engines`` groups; each group has one long system prompt (a
document of ~``doc-tokens`` tokens) shared by ``users`` users; each user runs a ``turns``-turn chat
where every turn appends the previous answer and a new question. Sessions are shuffled (fixed seed) and
run by ``concurrency`` workers (default: 2 per engine), each session's turns in order. Every request is
a streamed /v1/chat/completions (max_tokens 16); TTFT is time to the first content token.

Capacity pressure: each engine holds ``num-blocks`` blocks of 32 tokens; with the defaults the
engines together hold 96 * E blocks while the shared documents alone take ~58 * E blocks (3 documents of
~19 blocks per engine), so the documents fit once but not twice (1.65x): spreading every document over
every engine (round robin) thrashes, and piling prefixes onto a few engines overflows them.
``--num-blocks 64`` (1.1x) is the harsher case where documents plus live conversations barely fit once.

Per router (each on a fresh simulator process, so every run starts cold):
- hit rate: delta of sum over engines of ``vllm:prefix_cache_hits_total`` / ``..._queries_total``;
- ideal hit rate: for each request in send order, its longest block-aligned prefix (never the last token,
  as vLLM) shared with any earlier request's prompt, summed over requests / prompt tokens; an engine
  with unbounded cache, all requests on it;
- TTFT p50/p90, throughput (requests/s over the run), and the busiest engine's share of prompt tokens.

Targets: ours >= kv_aware's hit rate and >= 90% of ideal; our TTFT p90 <= kv_aware's.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp
import httpx

from benchmarks.llmd.common import (
    BLOCK,
    MODEL,
    TOKENIZER,
    Procs,
    busy_processes,
    cpu_seconds,
    machine_load,
    percentile,
    start_ours,
    start_sim,
    start_vllm_router,
    vllm_router_bin,
)
from serving.llmd.sim.engine import block_hashes
from serving.llmd.sim.tokenize import chat_ids, load_tokenizer

_VOCAB = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma", "omega", "river",
    "mountain", "valley", "forest", "ocean", "desert", "island", "harbor", "castle", "bridge", "tower", "garden",
    "market", "engine", "signal", "vector", "matrix", "tensor", "cache", "block", "token", "prefix", "router",
    "policy", "kernel", "thread", "socket", "packet", "server", "client", "model", "weight", "layer", "attention",
    "memory", "storage", "network", "cluster", "replica", "shard", "index", "query", "answer", "report", "summary",
]

ROUTERS = ("ours", "round_robin", "cache_aware", "kv_aware")


@dataclass
class Workload:
    docs: list[str]
    sessions: list[tuple[int, int]]  # (group, user), in run order
    turns: int
    questions: dict[tuple[int, int, int], str]


def make_workload(groups: int, users: int, turns: int, doc_tokens: int, seed: int) -> Workload:
    rng = random.Random(seed)
    tok = load_tokenizer(TOKENIZER)
    docs = []
    for g in range(groups):
        words = [f"Document {g}. You are assistant number {g}; answer from this document only."]
        text = " ".join(words)
        while len(tok.encode(text)) < doc_tokens:
            words.extend(rng.choice(_VOCAB) for _ in range(32))
            text = " ".join(words)
        docs.append(text)
    sessions = [(g, u) for g in range(groups) for u in range(users)]
    rng.shuffle(sessions)
    questions = {(g, u, t): f"User {u} of group {g}, question {t}: " + " ".join(rng.choice(_VOCAB) for _ in range(12))
                 for g in range(groups) for u in range(users) for t in range(turns)}
    return Workload(docs, sessions, turns, questions)


@dataclass
class Result:
    ttft: list[float] = field(default_factory=list)
    sent: list[tuple[float, list[dict]]] = field(default_factory=list)  # (send time, messages)
    errors: int = 0
    first_error: str = ""


async def chat_turn(session: aiohttp.ClientSession, url: str, messages: list[dict], res: Result,
                    extra: dict | None = None) -> str:
    body = {"model": MODEL, "messages": messages, "max_tokens": 16, "stream": True, **(extra or {})}
    t0 = time.perf_counter()
    res.sent.append((t0, [dict(m) for m in messages]))
    text: list[str] = []
    first = None
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        buf = b""
        async for chunk in resp.content.iter_any():
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.splitlines():
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    obj = json.loads(line[6:])
                    for ch in obj.get("choices") or ():
                        c = (ch.get("delta") or {}).get("content")
                        if c:
                            if first is None:
                                first = time.perf_counter() - t0
                            text.append(c)
    if first is None:
        raise RuntimeError("no content in stream")
    res.ttft.append(first)
    return "".join(text)


async def drive(url: str, wl: Workload, concurrency: int, extra: dict | None = None) -> tuple[Result, float]:
    """Run every session; ``extra`` is merged into each request body (e.g. vLLM's ``ignore_eos``)."""
    res = Result()
    queue = list(wl.sessions)
    conn = aiohttp.TCPConnector(limit=concurrency * 2)
    timeout = aiohttp.ClientTimeout(total=120)

    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        async def worker() -> None:
            while queue:
                g, u = queue.pop(0)
                messages = [{"role": "system", "content": wl.docs[g]}]
                for t in range(wl.turns):
                    messages.append({"role": "user", "content": wl.questions[(g, u, t)]})
                    try:
                        answer = await chat_turn(session, url, messages, res, extra)
                    except Exception as exc:  # counted and reported
                        res.errors += 1
                        res.first_error = res.first_error or repr(exc)
                        break
                    messages.append({"role": "assistant", "content": answer})

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return res, wall


def ideal_hit_rate(sent: list[tuple[float, list[dict]]]) -> tuple[float, int]:
    tok = load_tokenizer(TOKENIZER)
    seen: set[int] = set()
    hits = total = 0
    for _, messages in sorted(sent, key=lambda s: s[0]):
        ids = chat_ids(tok, messages)
        hashes = block_hashes(ids, BLOCK)
        limit = min(len(hashes), max(0, len(ids) - 1) // BLOCK)
        h = 0
        while h < limit and hashes[h] in seen:
            h += 1
        hits += h * BLOCK
        total += len(ids)
        seen.update(hashes)
    return (hits / total if total else 0.0), total


def capacity_bound_hit_rate(sent: list[tuple[float, list[dict]]], capacity_blocks: int) -> float:
    """The best hit rate any router could reach with ``capacity_blocks`` of KV cache over all engines.

    ``ideal_hit_rate`` assumes every block ever seen is still cached; when the prompts' working set
    exceeds the engines' caches no router can get there. This bound pools every engine's blocks into one
    cache (a router can only do worse: it splits the pool and may duplicate blocks) and evicts with
    Belady's MIN, the block whose next use is farthest away (optimal for a single cache). Keys are
    chained, so a block's next use is never later than its successor's: MIN keeps prefixes whole, and
    counting the consecutive prefix as the hit matches what vLLM counts. A request's own blocks stay
    resident while it is placed, as they do while a real engine prefills it.
    """
    tok = load_tokenizer(TOKENIZER)
    requests: list[tuple[list[int], int, int]] = []  # (block keys, blocks that may hit, prompt tokens)
    for _, messages in sorted(sent, key=lambda s: s[0]):
        ids = chat_ids(tok, messages)
        hashes = block_hashes(ids, BLOCK)
        requests.append((hashes, min(len(hashes), max(0, len(ids) - 1) // BLOCK), len(ids)))
    uses: dict[int, list[int]] = {}
    for i, (hashes, _, _) in enumerate(requests):
        for key in hashes:
            uses.setdefault(key, []).append(i)
    never = len(requests)
    cursor = dict.fromkeys(uses, 0)
    next_use: dict[int, int] = {}  # cached key -> index of the next request that reads it
    farthest: list[tuple[int, int]] = []  # max-heap of (-next use, key), stale entries skipped
    hits = total = 0
    for i, (hashes, limit, n_tokens) in enumerate(requests):
        h = 0
        while h < limit and hashes[h] in next_use:
            h += 1
        hits += h * BLOCK
        total += n_tokens
        for key in hashes:
            seen = uses[key]
            while cursor[key] < len(seen) and seen[cursor[key]] <= i:
                cursor[key] += 1
            nxt = seen[cursor[key]] if cursor[key] < len(seen) else never
            next_use[key] = nxt
            heapq.heappush(farthest, (-nxt, key))
        pinned = set(hashes)
        held: list[tuple[int, int]] = []
        while len(next_use) > capacity_blocks and farthest:
            neg, key = heapq.heappop(farthest)
            if next_use.get(key) != -neg:
                continue  # stale: evicted already or re-used since
            if key in pinned:
                held.append((neg, key))
                continue
            del next_use[key]
        for entry in held:
            heapq.heappush(farthest, entry)
    return hits / total if total else 0.0


def per_engine_counters(urls: list[str]) -> list[tuple[float, float]]:
    import re

    pat = re.compile(r"^(vllm:prefix_cache_(?:queries|hits)_total)\{[^}]*\}\s+([0-9.eE+-]+)", re.M)
    out = []
    with httpx.Client(timeout=5.0) as c:
        for u in urls:
            q = h = 0.0
            for name, val in pat.findall(c.get(u + "/metrics").text):
                if name.endswith("queries_total"):
                    q += float(val)
                else:
                    h += float(val)
            out.append((q, h))
    return out


def run_one(router: str, engines: int, wl: Workload, args: argparse.Namespace, logdir: Path) -> dict:
    with Procs(logdir / f"{router}-{engines}") as procs:
        sim = start_sim(procs, engines, num_blocks=args.num_blocks, max_running=args.max_running,
                        prefill_ms=args.prefill_ms, decode_ms=args.decode_ms)
        if router == "ours":
            rp, url = start_ours(procs, sim, extra=["--config", args.ours_config] if args.ours_config else ())
        else:
            rp, url = start_vllm_router(procs, sim, router)
        time.sleep(1.0)  # subscribers connected, first scrapes done
        before = per_engine_counters(sim.urls)
        cpu0 = (cpu_seconds(rp.pid), cpu_seconds(sim.proc.pid), time.process_time())
        res, wall = asyncio.run(drive(url, wl, args.concurrency or 2 * engines))
        cpu1 = (cpu_seconds(rp.pid), cpu_seconds(sim.proc.pid), time.process_time())
        time.sleep(0.3)
        after = per_engine_counters(sim.urls)
    dq = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    dh = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
    q, h = sum(dq), sum(dh)
    ideal, _ = ideal_hit_rate(res.sent)
    bound = capacity_bound_hit_rate(res.sent, engines * args.num_blocks)
    row: dict[str, Any] = {
        "router": "ours" if router == "ours" else f"vllm-router {router}", "engines": engines,
        "requests": len(res.ttft), "errors": res.errors, "hit_rate": h / q if q else 0.0, "ideal": ideal,
        "bound": bound,
        "ttft_p50_ms": 1000 * percentile(res.ttft, 50), "ttft_p90_ms": 1000 * percentile(res.ttft, 90),
        "rps": len(res.ttft) / wall, "wall_s": wall, "max_engine_share": max(dq) / q if q else 0.0,
        "engines_used": sum(1 for x in dq if x > 0),
        "router_cpu": (cpu1[0] - cpu0[0]) / wall, "sim_cpu": (cpu1[1] - cpu0[1]) / wall,
        "loadgen_cpu": (cpu1[2] - cpu0[2]) / wall,
    }
    print(f"  {row['router']:<26} E={engines}: hit {row['hit_rate']:.3f} (ideal {ideal:.3f}, capacity bound "
          f"{bound:.3f}), TTFT p50 "
          f"{row['ttft_p50_ms']:.0f} ms p90 {row['ttft_p90_ms']:.0f} ms, {row['rps']:.1f} req/s, "
          f"{row['requests']} ok / {row['errors']} errors, busiest engine {100 * row['max_engine_share']:.0f}% "
          f"of prompt tokens, {row['engines_used']} engines used; CPU (cores) router {row['router_cpu']:.2f} "
          f"sim {row['sim_cpu']:.2f} loadgen {row['loadgen_cpu']:.2f}"
          + (f"  first error: {res.first_error}" if res.errors else ""), flush=True)
    return row


def table(rows: list[dict]) -> str:
    """Markdown rows plus verdicts. "% of ideal" is against every seen block still cached; "% of bound"
    against ``capacity_bound_hit_rate``, the best the engines' total KV capacity allows."""
    def pct(r: dict, key: str) -> float:
        return 100 * r["hit_rate"] / r[key] if r.get(key) else 0.0

    lines = ["| engines | router | requests (errors) | hit rate | % of ideal | ideal | % of bound | bound | TTFT p50 ms | "
             "TTFT p90 ms | req/s | busiest engine share | CPU router/sim/loadgen |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engines']} | {r['router']} | {r['requests']} ({r['errors']}) | {r['hit_rate']:.3f} | "
                     f"{pct(r, 'ideal'):.0f}% | {r['ideal']:.3f} | {pct(r, 'bound'):.0f}% | {r.get('bound', 0):.3f} | "
                     f"{r['ttft_p50_ms']:.0f} | {r['ttft_p90_ms']:.0f} | {r['rps']:.1f} | "
                     f"{100 * r['max_engine_share']:.0f}% | {r['router_cpu']:.2f}/{r['sim_cpu']:.2f}/"
                     f"{r['loadgen_cpu']:.2f} |")
    def median_row(engines: int, router: str) -> dict | None:
        """One row of per-key medians over the rounds (a single run is its own median)."""
        runs = [r for r in rows if r["engines"] == engines and r["router"] == router]
        if not runs:
            return None
        keys = ("hit_rate", "ideal", "bound", "ttft_p90_ms")
        return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys} | {"rounds": len(runs)}

    verdicts = []
    for e in sorted({r["engines"] for r in rows}):
        ours, kv = median_row(e, "ours"), median_row(e, "vllm-router kv_aware")
        if ours and kv:
            over = f" (medians of {ours['rounds']} rounds)" if ours["rounds"] > 1 else ""
            verdicts.append(
                f"E={e}{over}: hit {ours['hit_rate']:.3f} vs kv_aware {kv['hit_rate']:.3f} "
                f"({'met' if ours['hit_rate'] >= kv['hit_rate'] else 'NOT met'}), "
                f"{pct(ours, 'ideal'):.0f}% of ideal ({'met' if pct(ours, 'ideal') >= 90 else 'NOT met'}), "
                f"{pct(ours, 'bound'):.0f}% of the capacity bound "
                f"({'met' if pct(ours, 'bound') >= 90 else 'NOT met'}), "
                f"TTFT p90 {ours['ttft_p90_ms']:.0f} vs {kv['ttft_p90_ms']:.0f} ms "
                f"({'met' if ours['ttft_p90_ms'] <= kv['ttft_p90_ms'] else 'NOT met'})")
    return "\n".join(lines + [""] + verdicts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--routers", default=",".join(ROUTERS))
    ap.add_argument("--groups-per-engine", type=int, default=3)
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--doc-tokens", type=int, default=512)
    ap.add_argument("--num-blocks", type=int, default=96)
    ap.add_argument("--max-running", type=int, default=2)
    ap.add_argument("--prefill-ms", type=float, default=0.2, help="per uncached prompt token")
    ap.add_argument("--decode-ms", type=float, default=2.0, help="per output token")
    ap.add_argument("--concurrency", type=int, default=0, help="sessions in flight (default 2 per engine)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--ours-config", default=None, help="scheduler YAML for our router (default: built-in)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    routers = [r for r in args.routers.split(",") if r]
    if not vllm_router_bin():
        print("vllm-router not installed: measuring ours only", file=sys.stderr)
        routers = [r for r in routers if r == "ours"]
    print(f"load before: {machine_load()}; busy: {busy_processes() or 'none'}", flush=True)
    logdir = Path(tempfile.mkdtemp(prefix="llmd-chat-"))
    rows = []
    for e in args.engines:
        wl = make_workload(args.groups_per_engine * e, args.users, args.turns, args.doc_tokens, args.seed)
        doc_blocks = sum(len(block_hashes(load_tokenizer(TOKENIZER).encode(d), BLOCK)) for d in wl.docs)
        print(f"E={e}: {len(wl.docs)} groups x {args.users} users x {args.turns} turns = "
              f"{len(wl.sessions) * args.turns} requests; shared documents {doc_blocks} blocks, engines hold "
              f"{e * args.num_blocks} blocks ({e * args.num_blocks / doc_blocks:.2f}x the documents)", flush=True)
        for r in routers:
            rows.append(run_one(r, e, wl, args, logdir))
    print(f"load after: {machine_load()}")
    print(table(rows))
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
