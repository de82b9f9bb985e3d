"""Tokenize prompts and chat messages exactly as the engine does, so our block keys match its blocks.

Completions: ``tokenizer.json`` with special tokens added (vLLM's ``/tokenize`` and ``/v1/completions``
use ``add_special_tokens=True``), honouring ``add_bos_token``/``add_eos_token`` from
``tokenizer_config.json`` when set. Chat: the model's chat template rendered like transformers'
``apply_chat_template(add_generation_prompt=True)``, then encoded *without* special tokens, because
templates write BOS themselves and vLLM does not add it a second time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from serving.errors import ServingError


class TokenizeError(ServingError, ValueError):
    """The tokenizer directory or the messages cannot be used; the message says why."""


def _raise_exception(message: str) -> None:
    raise TokenizeError(f"chat template error: {message}")


def _token_text(value: Any) -> str | None:
    # tokenizer_config may spell a special token as a string or as an AddedToken dict.
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class PromptTokenizer:
    def __init__(self, directory: str | Path) -> None:
        # One text per call: rayon's pool can only add a thread hand-off (and idle spinning) to it.
        # Serial encoding measured 13 us against 22 us for a short prompt, and is faster on long ones too.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise TokenizeError(f"no tokenizer.json in {directory}")
        self.tokenizer = Tokenizer.from_file(str(path))
        config_path = directory / "tokenizer_config.json"
        self.config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.is_file() else {}
        self.bos_token = _token_text(self.config.get("bos_token"))
        self.eos_token = _token_text(self.config.get("eos_token"))
        self.template_source = self._find_template(directory)
        self._template: jinja2.Template | None = None

    def _find_template(self, directory: Path) -> str | None:
        jinja_file = directory / "chat_template.jinja"
        if jinja_file.is_file():
            return jinja_file.read_text()
        json_file = directory / "chat_template.json"
        if json_file.is_file():
            return json.loads(json_file.read_text()).get("chat_template")
        template = self.config.get("chat_template")
        if isinstance(template, list):  # named templates: transformers uses "default"
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            return named.get("default") or next(iter(named.values()), None)
        return template if isinstance(template, str) else None

    # completions

    def encode_prompt(self, prompt: str) -> list[int]:
        return self._apply_bos_eos(self._encode(prompt, add_special_tokens=True))

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        # encode_batch_fast skips offset tracking: ~25% faster on long prompts, same ids.
        return self.tokenizer.encode_batch_fast([text], add_special_tokens=add_special_tokens)[0].ids

    def _apply_bos_eos(self, ids: list[int]) -> list[int]:
        add_bos, add_eos = self.config.get("add_bos_token"), self.config.get("add_eos_token")
        bos_id = self.tokenizer.token_to_id(self.bos_token) if self.bos_token else None
        eos_id = self.tokenizer.token_to_id(self.eos_token) if self.eos_token else None
        # The post-processor in tokenizer.json decides by default; explicit config flags override it.
        if bos_id is not None:
            if add_bos is True and (not ids or ids[0] != bos_id):
                ids = [bos_id, *ids]
            elif add_bos is False and ids and ids[0] == bos_id:
                ids = ids[1:]
        if eos_id is not None:
            if add_eos is True and (not ids or ids[-1] != eos_id):
                ids = [*ids, eos_id]
            elif add_eos is False and ids and ids[-1] == eos_id:
                ids = ids[:-1]
        return ids

    # chat

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        if self.template_source is None:
            raise TokenizeError("the tokenizer has no chat template (chat_template.jinja or tokenizer_config.json)")
        if self._template is None:
            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )
            env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False, sort_keys=False: json.dumps(
                x, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys
            )
            env.globals["raise_exception"] = _raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(self.template_source)
        special = {
            k: _token_text(v) for k, v in self.config.items() if k.endswith("_token") and _token_text(v) is not None
        }
        context: dict[str, Any] = {"bos_token": "", "eos_token": "", **special, **extra}
        context["messages"] = [_flatten(m, i) for i, m in enumerate(messages)]
        context["add_generation_prompt"] = add_generation_prompt
        return self._template.render(**context)

    def encode_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        text = self.render_chat(messages, add_generation_prompt)
        return self._encode(text, add_special_tokens=False)


def _flatten(message: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Check a message and turn OpenAI content parts into the plain string most templates expect."""
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
        raise TokenizeError(f"messages[{index}] must be an object with a string 'role'")
    content = message.get("content")
    if isinstance(content, list):  # vLLM joins text parts with newlines for string-content templates
        texts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                texts.append(part)
        content = "\n".join(texts)
    elif content is not None and not isinstance(content, str):
        raise TokenizeError(f"messages[{index}].content must be a string or a list of parts")
    return {**message, "content": content}
