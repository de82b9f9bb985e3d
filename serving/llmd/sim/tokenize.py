"""Prompt and chat tokenization for the simulator, as the engine's ``/tokenize`` would give it.

With ``--tokenizer DIR`` the model's own ``tokenizer.json`` (``tokenizers``) and chat template
(``chat_template.jinja`` or ``tokenizer_config.json``'s ``chat_template``, rendered with jinja2) are
used, so ids match a real vLLM engine serving that model. Without one, a cheap deterministic
tokenizer: each whitespace-led word (long words in 8-character pieces) hashes to an id, which is all a
load test needs (stable ids, realistic counts) at a fraction of a BPE's cost.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any, Protocol

# The fallback chat template: the same shape as the fixture model's template.
SIMPLE_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"

_WORD = re.compile(r"\s*\S{1,8}|\s+")
_VOCAB = 32_000
_RESERVED = 256  # ids below are left for special tokens


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def render_chat(self, messages: list[dict[str, Any]]) -> str: ...


def _flatten(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI content parts -> plain text, so templates see strings."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({**m, "content": "" if content is None else content})
    return out


class _Template:
    def __init__(self, source: str, specials: dict[str, str]) -> None:
        import jinja2  # only when a template is rendered

        env = jinja2.Environment(keep_trailing_newline=True)
        self._template = env.from_string(source)
        self._specials = specials

    def render(self, messages: list[dict[str, Any]]) -> str:
        return self._template.render(messages=_flatten(messages), add_generation_prompt=True, **self._specials)


class HashTokenizer:
    """Deterministic and cheap: ~1 token per short word, like a BPE on English text."""

    def __init__(self) -> None:
        self._template = _Template(SIMPLE_TEMPLATE, {})

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [_RESERVED + zlib.crc32(piece.encode()) % (_VOCAB - _RESERVED) for piece in _WORD.findall(text)]

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return self._template.render(messages)


class HFTokenizer:
    """A model's ``tokenizer.json`` plus its chat template."""

    def __init__(self, directory: str | Path) -> None:
        from tokenizers import Tokenizer as _Tok

        d = Path(directory)
        self._tok = _Tok.from_file(str(d / "tokenizer.json"))
        config: dict[str, Any] = {}
        if (d / "tokenizer_config.json").exists():
            config = json.loads((d / "tokenizer_config.json").read_text())
        source = config.get("chat_template")
        if (d / "chat_template.jinja").exists():
            source = (d / "chat_template.jinja").read_text()
        specials = {k: v for k in ("bos_token", "eos_token") if isinstance(v := config.get(k), str)}
        self._template = _Template(source if isinstance(source, str) else SIMPLE_TEMPLATE, specials)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return self._template.render(messages)


def load_tokenizer(directory: str | Path | None) -> Tokenizer:
    return HFTokenizer(directory) if directory else HashTokenizer()


def prompt_ids(tok: Tokenizer, prompt: Any) -> list[int]:
    """A completions ``prompt``: text, or token ids as vLLM accepts them."""
    if isinstance(prompt, list) and len(prompt) == 1 and not isinstance(prompt[0], int):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tok.encode(prompt, add_special_tokens=True)
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    raise ValueError("prompt must be a string, a list of token ids, or a list of one string")


def chat_ids(tok: Tokenizer, messages: Any) -> list[int]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("messages must be a list of objects")
    # The template carries any special tokens, as vLLM's chat path encodes without adding them.
    return tok.encode(tok.render_chat(messages), add_special_tokens=False)
