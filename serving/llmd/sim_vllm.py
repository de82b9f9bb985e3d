"""One simulated engine started with vLLM's own command-line flags.

    python -m serving.llmd.sim_vllm --model DIR --served-model-name NAME --port 8000 \
        --block-size 32 --kv-events-config '{"endpoint": "tcp://*:5557", ...}' [--max-model-len N]

The KV-event endpoint may also be ``ipc://PATH`` (what the embedded platform gives an engine): the
simulator binds it as vLLM does.

An LLMInferenceService whose ``spec.template`` main container runs this module instead of
``vllm.entrypoints.openai.api_server`` gets the same Deployment, router and routes, served by the
simulator: the platform's LLM path can then be exercised in seconds and without vLLM's 2 GB runtime.
Flags the simulator has no use for (``--enable-prefix-caching``, ``--kv-transfer-config``, ...) are
accepted and ignored, as they would be meaningful to vLLM.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path

from serving.llmd.sim import __main__ as sim

_PORT = re.compile(r":(\d+)$")
_BOUND_AS_WRITTEN = ("ipc://", "inproc://")


def translate(argv: Sequence[str]) -> list[str]:
    """vLLM api_server flags -> ``python -m serving.llmd.sim`` flags for one engine."""
    p = argparse.ArgumentParser(prog="python -m serving.llmd.sim_vllm", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model directory (its tokenizer.json is used when present)")
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--num-gpu-blocks-override", type=int, default=None)
    p.add_argument("--kv-events-config", default=None,
                   help="vLLM's KV-events JSON: an ipc:// or inproc:// endpoint is bound as written, a tcp one's "
                        "port on --host")
    args, _ignored = p.parse_known_args(list(argv))
    out = ["--model", args.served_model_name or args.model, "--host", args.host, "--base-port", str(args.port),
           "--block-size", str(args.block_size)]
    if args.max_model_len is not None:
        out += ["--max-model-len", str(args.max_model_len)]
    if args.num_gpu_blocks_override is not None:
        out += ["--num-blocks", str(args.num_gpu_blocks_override)]
    if args.kv_events_config:
        config = json.loads(args.kv_events_config)
        endpoint = str(config.get("endpoint", ""))
        port = _PORT.search(endpoint)
        if config.get("enable_kv_cache_events", True) and endpoint.startswith(_BOUND_AS_WRITTEN):
            out += ["--zmq-endpoint", endpoint]  # vLLM binds these too
        elif config.get("enable_kv_cache_events", True) and port:
            out += ["--zmq-base-port", port[1]]
    if (Path(args.model) / "tokenizer.json").is_file():
        out += ["--tokenizer", args.model]
    return out


def main(argv: Sequence[str] | None = None) -> None:
    import sys

    sim.main(translate(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
