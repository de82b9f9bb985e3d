"""One process running the LLM-D router, scheduler, load monitor and (with ZMQ endpoints) KV indexer.

    python -m serving.llmd.serve --port 8000 --model tiny-llama \
        --engine http://127.0.0.1:8001=tcp://127.0.0.1:5557 --engine http://127.0.0.1:8002 \
        [--config scheduler.yaml] [--api-key KEY[:TIER[:TENANT]] ...] [--api-key-file PATH] [--tokenizer DIR]
        [--redis-url URL]
        [--max-request-body-bytes N] [--max-request-head-bytes N] [--request-head-timeout-s S]
        [--request-body-timeout-s S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from serving.llmd.auth import KeyRing, parse_key
from serving.llmd.http_server import HttpServer, RequestLimits
from serving.llmd.keyfile import FileKeyRing
from serving.llmd.monitor import EngineSpec, LoadMonitor, parse_engine
from serving.llmd.router import Router, RouterConfig
from serving.llmd.scheduler import Scheduler, load_config

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from serving.llmd.kvcache.index import KVIndex

__all__ = ["EngineSpec", "build", "main", "parse_engine", "serve"]

SHUTDOWN_GRACE_S = 2.0  # what uvicorn's timeout_graceful_shutdown was
DEFAULT_LIMITS = RequestLimits()


def build(
    model: str,
    engines: Sequence[EngineSpec],
    config_path: str | Path | None = None,
    api_keys: Sequence[str] = (),
    tokenizer_dir: str | Path | None = None,
    block_size: int = 16,
    *,
    redis_url: str | None = None,
    max_model_len: int | None = None,
    scrape_interval_s: float = 0.075,
    api_key_file: str | Path | None = None,
) -> tuple[Router, KVIndex | None]:
    """The router (not started) and the KV index its event subscriber feeds (None without ZMQ endpoints)."""
    if not engines:
        raise ValueError("at least one --engine is required")
    names = [e.pod for e in engines]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate engines: {names}")
    scheduler = Scheduler(load_config(config_path))
    tokenizer = None
    if tokenizer_dir is not None:
        from serving.llmd.kvcache.tokenize import PromptTokenizer

        tokenizer = PromptTokenizer(tokenizer_dir)
    index = None
    if any(e.zmq_endpoint for e in engines):
        from serving.llmd.kvcache.index import KVIndex

        index = KVIndex(block_size=None, model=model)
    monitor = LoadMonitor(engines, interval_s=scrape_interval_s)
    config = RouterConfig(model=model, block_size=block_size, redis_url=redis_url, max_model_len=max_model_len)
    # A key file (the platform's copy of a Secret) is re-read when it changes; --api-key keys are fixed.
    keys = FileKeyRing(api_key_file, api_keys) if api_key_file is not None else KeyRing(api_keys)
    router = Router(config, monitor, scheduler, keys, tokenizer=tokenizer, index=index)
    monitor.on_down = router.pod_down
    monitor.on_up = router.pod_up
    monitor.on_scrape = router.pump
    if index is not None:
        monitor.on_scrape = _learning_block_size(index, monitor, router.pump)
    return router, index


def _learning_block_size(index: KVIndex, monitor: LoadMonitor, then: Callable[[], object]) -> Callable[[], None]:
    """After each scrape: until KV events have taught the index its block size, take it from the engines'
    ``vllm:cache_config_info`` (a pod that reported it has ``num_blocks``), so the first prompts are keyed
    right; then ``then()``."""

    def on_scrape() -> None:
        if index.block_size is None:
            sizes = {p.block_size for p in monitor.pods.values() if p.num_blocks > 0}
            if len(sizes) == 1:
                index.learn_block_size(sizes.pop())
        then()

    return on_scrape


async def serve_async(
    port: int,
    model: str,
    engines: Sequence[EngineSpec],
    config_path: str | Path | None = None,
    api_keys: Sequence[str] = (),
    tokenizer_dir: str | Path | None = None,
    block_size: int = 16,
    *,
    host: str = "127.0.0.1",
    redis_url: str | None = None,
    max_model_len: int | None = None,
    scrape_interval_s: float = 0.075,
    limits: RequestLimits = DEFAULT_LIMITS,
    api_key_file: str | Path | None = None,
) -> None:
    router, index = build(model, engines, config_path, api_keys, tokenizer_dir, block_size,
                          redis_url=redis_url, max_model_len=max_model_len, scrape_interval_s=scrape_interval_s,
                          api_key_file=api_key_file)
    subscriber = None
    if index is not None:
        from serving.llmd.kvcache.subscriber import KVEventSubscriber

        subscriber = KVEventSubscriber(index)
        for engine in engines:
            if engine.zmq_endpoint:
                await subscriber.add_pod(engine.pod, engine.zmq_endpoint, engine.replay_endpoint)
    await router.start()
    await router.monitor.start()
    server = HttpServer(router.serve_http, limits=limits)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start(host, port)
        await stop.wait()
        await server.stop(grace=SHUTDOWN_GRACE_S)  # in-flight requests finish first, within the grace period
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await router.monitor.stop()
        await router.stop()
        if subscriber is not None:
            await subscriber.close()


def serve(
    port: int,
    model: str,
    engines: Sequence[EngineSpec],
    config_path: str | Path | None = None,
    api_keys: Sequence[str] = (),
    tokenizer_dir: str | Path | None = None,
    block_size: int = 16,
    **kwargs: object,
) -> None:
    """Run router + scheduler + monitor (+ indexer) until SIGTERM/SIGINT, on uvloop when installed."""
    main_coro = serve_async(port, model, engines, config_path, api_keys, tokenizer_dir, block_size,
                            **kwargs)  # type: ignore[arg-type]
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)  # the event loop in C: a large share of the router's per-request CPU


def _positive(kind: Callable[[str], int | float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serving.llmd.serve", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--model", required=True, help="the served model name clients send")
    p.add_argument("--engine", action="append", default=[], metavar="URL[=ZMQ_ENDPOINT][,replay=ENDPOINT][,role=ROLE]",
                   required=True)
    p.add_argument("--config", default=None, help="scheduler YAML (default: the built-in profile)")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY[:TIER[:TENANT]]")
    p.add_argument("--api-key-file", default=None, metavar="PATH",
                   help='keys as JSON {"keys": [{"key": ..., "tenant": ..., "tier": ...}]}, re-read when the file '
                        "changes; no key on the command line (an empty or missing file refuses every request)")
    p.add_argument("--tokenizer", default=None, help="directory with the model's tokenizer.json")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--redis-url", default=None)
    p.add_argument("--scrape-interval-ms", type=float, default=75.0,
                   help="how often each engine's /metrics is read (the issue asks for 50-100 ms)")
    defaults = RequestLimits()
    p.add_argument("--max-request-body-bytes", type=_positive(int), default=defaults.max_body,
                   help="larger request bodies are refused with 413 (default: %(default)s, 100 MiB)")
    p.add_argument("--max-request-head-bytes", type=_positive(int), default=defaults.max_head,
                   help="a larger request line plus headers is refused with 431 (default: %(default)s, 64 KiB)")
    p.add_argument("--request-head-timeout-s", type=_positive(float), default=defaults.head_timeout,
                   help="seconds from a request's first byte to the end of its head; then 408 (default: %(default)s)")
    p.add_argument("--request-body-timeout-s", type=_positive(float), default=defaults.body_timeout,
                   help="seconds a request body may go without a byte; then 408 (default: %(default)s)")
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


def limits_from(args: argparse.Namespace) -> RequestLimits:
    return RequestLimits(max_body=args.max_request_body_bytes, max_head=args.max_request_head_bytes,
                         head_timeout=args.request_head_timeout_s, body_timeout=args.request_body_timeout_s)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        engines = [parse_engine(e) for e in args.engine]
        for spec in args.api_key:
            parse_key(spec)  # checked before anything starts: a bad tier is one line, not a traceback
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.port, args.model, engines, args.config, args.api_key, args.tokenizer, args.block_size,
              host=args.host, redis_url=args.redis_url, max_model_len=args.max_model_len,
              scrape_interval_s=args.scrape_interval_ms / 1000, limits=limits_from(args),
              api_key_file=args.api_key_file)
    sys.exit(0)


if __name__ == "__main__":
    main()
