"""``python -m serving.llmd.sim``: N simulated vLLM engines in one process and one asyncio loop.

Engine i serves HTTP on ``base_port + i``, publishes KV events on ``zmq_base_port + i`` (a single
engine may bind ``--zmq-endpoint`` instead, e.g. ``ipc://PATH``) and, when ``--replay-base-port`` is
given, answers replay requests on ``replay_base_port + i``. One line per engine is printed once all of
them listen; SIGTERM/SIGINT stop them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any

import uvicorn
import zmq.asyncio

from serving.llmd.sim.engine import EngineConfig
from serving.llmd.sim.events import KVEventPublisher, topic_for
from serving.llmd.sim.hashing import HASH_ALGOS
from serving.llmd.sim.server import EngineAddress, EngineApp
from serving.llmd.sim.tokenize import load_tokenizer


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serving.llmd.sim", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--engines", type=int, default=1)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--base-port", type=int, required=True, help="HTTP port of engine 0; engine i uses +i")
    p.add_argument("--zmq-base-port", type=int, default=None, help="KV-event PUB port of engine 0 (omit: no events)")
    p.add_argument("--zmq-endpoint", default=None,
                   help="KV-event PUB endpoint to bind instead of a port (e.g. ipc://PATH); one engine only")
    p.add_argument("--replay-base-port", type=int, default=None, help="KV-event replay ROUTER port of engine 0")
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--num-blocks", type=int, default=512)
    p.add_argument("--max-running", type=int, default=8)
    p.add_argument("--prefill-ms-per-token", type=float, default=0.05)
    p.add_argument("--decode-ms-per-token", type=float, default=5.0)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--tokenizer", default=None, help="directory with tokenizer.json (default: a hash tokenizer)")
    p.add_argument("--prefix-caching-hash-algo", choices=HASH_ALGOS, default="sha256",
                   help="vLLM's block hash function (default sha256: SHA-256 over pickle)")
    p.add_argument("--hash-seed", default=None,
                   help="NONE_HASH seed as vLLM takes it from PYTHONHASHSEED (default: that variable; unset: "
                        "random per engine, so nobody outside can recompute block hashes)")
    p.add_argument("--replay-buffer", type=int, default=10_000, help="event batches kept for replay")
    args = p.parse_args(argv)
    if args.engines < 1 or args.block_size < 1 or args.num_blocks < 1 or args.max_running < 1:
        p.error("--engines, --block-size, --num-blocks and --max-running must be positive")
    if args.zmq_endpoint is not None and (args.engines != 1 or args.zmq_base_port is not None):
        p.error("--zmq-endpoint names one engine's socket: use it with --engines 1 and without --zmq-base-port")
    return args


class _Server(uvicorn.Server):
    """Several servers share one loop, so signals are handled once, by ``main``, not by each."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    """Bind here, not in uvicorn, so a taken port is one clear error before anything starts."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def run(args: argparse.Namespace) -> None:
    tokenizer = load_tokenizer(args.tokenizer)
    listeners = [_listen(args.host, args.base_port + i) for i in range(args.engines)]
    ctx = zmq.asyncio.Context()
    apps: list[EngineApp] = []
    servers: list[_Server] = []
    publishers: list[KVEventPublisher] = []
    for i in range(args.engines):
        port = args.base_port + i
        pub_ep = f"tcp://{args.host}:{args.zmq_base_port + i}" if args.zmq_base_port is not None else args.zmq_endpoint
        replay_ep = f"tcp://{args.host}:{args.replay_base_port + i}" if args.replay_base_port is not None else None
        publisher = None
        if pub_ep is not None:
            try:
                publisher = KVEventPublisher(ctx, pub_ep, topic_for(args.host, port, args.model), replay_ep,
                                             args.replay_buffer)
            except zmq.ZMQError as exc:
                raise SystemExit(f"cannot bind KV events for engine {i} ({pub_ep}, {replay_ep}): {exc}") from None
            publisher.start()
            publishers.append(publisher)
        config = EngineConfig(model=args.model, block_size=args.block_size, num_blocks=args.num_blocks,
                              max_running=args.max_running, prefill_ms_per_token=args.prefill_ms_per_token,
                              decode_ms_per_token=args.decode_ms_per_token, max_model_len=args.max_model_len,
                              hash_algo=args.prefix_caching_hash_algo, hash_seed=args.hash_seed)
        app = EngineApp(config, tokenizer, EngineAddress(args.host, port, pub_ep, replay_ep), publisher)
        # A fresh engine starts with an empty cache: say so, as vLLM does on a prefix-cache reset, so
        # an indexer that replays from seq 0 drops what it held for this address.
        app.engine.reset_prefix_cache()
        apps.append(app)
        servers.append(_Server(uvicorn.Config(
            app.app, host=args.host, port=port, log_level="warning", access_log=False, lifespan="off",
            server_header=False, date_header=False, timeout_graceful_shutdown=1,
        )))

    loop = asyncio.get_running_loop()

    def stop() -> None:
        for s in servers:
            s.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)

    tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in zip(servers, listeners, strict=True)]
    # uvicorn's ``started`` is a plain flag with no event to await, so poll it; a server whose task has ended
    # failed to start, and waiting on it would spin forever.
    while not all(s.started for s in servers) and not any(t.done() for t in tasks):  # noqa: ASYNC110 - see above
        await asyncio.sleep(0.02)
    if not all(s.started for s in servers):
        stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for p in publishers:
            await p.close()
        ctx.term()
        raise SystemExit(f"an engine failed to start: {[r for r in results if isinstance(r, BaseException)]}")
    for i, app in enumerate(apps):
        a = app.address
        print(f"engine {i} url=http://{a.host}:{a.port} model={args.model} zmq={a.zmq_endpoint or '-'} "
              f"replay={a.replay_endpoint or '-'} topic={topic_for(a.host, a.port, args.model)}", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    for p in publishers:
        await p.close()
    ctx.term()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        runner = asyncio.run
    runner(run(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
