"""HTTP scoring API over the index: ``POST /score`` -> per pod, its longest cached prefix in blocks.

    python -m serving.llmd.kvcache.server --port 8200 --model tiny-llama --tokenizer DIR \
        --engine pod-a=tcp://127.0.0.1:5557,replay=tcp://127.0.0.1:5558 --engine pod-b=tcp://...
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from serving.llmd.kvcache.index import KVIndex
from serving.llmd.kvcache.subscriber import KVEventSubscriber
from serving.llmd.kvcache.tokenize import PromptTokenizer, TokenizeError


@dataclass(frozen=True)
class EngineSpec:
    pod: str
    endpoint: str
    replay_endpoint: str | None = None


def parse_engine(text: str) -> EngineSpec:
    """``POD=tcp://HOST:PORT[,replay=tcp://HOST:PORT]``."""
    pod, sep, rest = text.partition("=")
    if not sep or not pod or not rest:
        raise ValueError(f"engine {text!r}: expected POD=tcp://HOST:PORT[,replay=tcp://HOST:PORT]")
    endpoint, _, option = rest.partition(",")
    replay = None
    if option:
        key, sep, value = option.partition("=")
        if key != "replay" or not sep or not value:
            raise ValueError(f"engine {text!r}: unknown option {option!r} (only replay=tcp://HOST:PORT)")
        replay = value
    return EngineSpec(pod, endpoint, replay)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    index: KVIndex,
    tokenizer: PromptTokenizer | None = None,
    engines: Sequence[EngineSpec] = (),
    model: str | None = None,
) -> FastAPI:
    """The app; subscribes to ``engines`` for its lifetime (none: the caller feeds ``index`` itself)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        subscriber = KVEventSubscriber(index)
        app.state.subscriber = subscriber
        for engine in engines:
            await subscriber.add_pod(engine.pod, engine.endpoint, engine.replay_endpoint)
        try:
            yield
        finally:
            await subscriber.close()

    app = FastAPI(title="odh llmd kvcache", lifespan=lifespan)
    app.state.index = index

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "pods": len(index.pods), "keys": len(index), "block_size": index.block_size}

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        subscriber = getattr(request.app.state, "subscriber", None)
        return {
            "index": asdict(index.stats),
            "keys": len(index),
            "pods": {pod: index.pod_blocks(pod) for pod in index.pods},
            "streams": subscriber.status() if subscriber else {},
        }

    @app.post("/score")
    async def score(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        requested = body.get("model")
        if model and requested is not None and requested != model:
            return _error(404, f"unknown model {requested!r}: this indexer serves {model!r}")
        lora_id = body.get("lora_id")
        if lora_id is not None and type(lora_id) is not int:
            return _error(400, "lora_id must be an integer")
        if "token_ids" in body:
            token_ids = body["token_ids"]
            if not isinstance(token_ids, list) or not all(type(t) is int and t >= 0 for t in token_ids):
                return _error(400, "token_ids must be a list of non-negative integers")
        elif "prompt" in body or "messages" in body:
            if tokenizer is None:
                return _error(400, "this indexer has no tokenizer (--tokenizer): send token_ids")
            try:
                if "prompt" in body:
                    prompt = body["prompt"]
                    if not isinstance(prompt, str):
                        return _error(400, "prompt must be a string")
                    token_ids = tokenizer.encode_prompt(prompt)
                else:
                    messages = body["messages"]
                    if not isinstance(messages, list) or not messages:
                        return _error(400, "messages must be a non-empty list")
                    token_ids = tokenizer.encode_chat(messages)
            except TokenizeError as exc:
                return _error(400, str(exc))
        else:
            return _error(400, "request body needs one of 'prompt', 'messages' or 'token_ids'")
        keys = index.keys_for(token_ids, lora_id)
        return JSONResponse(
            {
                "block_size": index.block_size,
                "tokens": len(token_ids),
                "blocks": len(keys),
                "scores": index.score(keys),
            }
        )

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="odh llmd kvcache", description="vLLM KV-event indexer with a scoring API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument(
        "--engine",
        action="append",
        default=[],
        type=parse_engine,
        metavar="POD=tcp://HOST:PORT[,replay=tcp://HOST:PORT]",
        help="an engine's KV-event publisher (repeat per engine)",
    )
    parser.add_argument("--block-size", type=int, default=None, help="engine block size (default: learned from events)")
    parser.add_argument("--capacity", type=int, default=1_000_000, help="most block keys held (LRU beyond)")
    parser.add_argument("--tokenizer", default=None, help="directory with tokenizer.json (+ chat template)")
    parser.add_argument("--model", default="", help="served model name; salts keys and checks requests")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    import uvicorn

    tokenizer = PromptTokenizer(args.tokenizer) if args.tokenizer else None
    index = KVIndex(block_size=args.block_size, capacity=args.capacity, model=args.model)
    app = create_app(index, tokenizer, args.engine, args.model or None)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
