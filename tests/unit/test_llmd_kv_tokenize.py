"""Tokenizing like the engine: the recorded /tokenize ids, the chat template, BOS handling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import FIXTURES

from serving.llmd.kvcache.tokenize import PromptTokenizer, TokenizeError

TOKENIZER = FIXTURES / "vllm-kv-events" / "tokenizer"


@pytest.fixture(scope="module")
def tok() -> PromptTokenizer:
    return PromptTokenizer(TOKENIZER)


def test_equals_the_engine_ids_for_the_recorded_requests(tok: PromptTokenizer) -> None:
    requests = json.loads((FIXTURES / "vllm-kv-events" / "requests.json").read_text())[:4]
    assert [r["kind"] for r in requests] == ["completion"] * 3 + ["chat"]
    for r in requests:
        ids = tok.encode_chat(r["messages"]) if r["kind"] == "chat" else tok.encode_prompt(r["prompt"])
        assert ids == r["prompt_token_ids"], r["kind"]


def test_chat_template_rendering(tok: PromptTokenizer) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert tok.render_chat(messages) == "system: be brief\nuser: hi\nassistant:"


def _copy(tmp_path: Path, config: dict, with_jinja: bool = False) -> Path:
    shutil.copy(TOKENIZER / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    if with_jinja:
        shutil.copy(TOKENIZER / "chat_template.jinja", tmp_path / "chat_template.jinja")
    return tmp_path


def test_template_from_tokenizer_config_with_bos_and_raise_exception(tmp_path: Path) -> None:
    template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools') }}{% endif %}"
        "[{{ m['role'] }}]{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    tok = PromptTokenizer(_copy(tmp_path, {"bos_token": "<s>", "eos_token": "</s>", "chat_template": template}))
    assert tok.render_chat([{"role": "user", "content": "x"}]) == "<s>[user]x[assistant]"
    ids = tok.encode_chat([{"role": "user", "content": "x"}])
    assert ids[0] == 1 and ids.count(1) == 1  # BOS from the template only, never added twice
    with pytest.raises(TokenizeError, match="no tools"):
        tok.render_chat([{"role": "tool", "content": "x"}])


def test_add_bos_token_flag_is_honoured_for_completions(tmp_path: Path) -> None:
    plain = PromptTokenizer(TOKENIZER).encode_prompt("hello world")
    tok = PromptTokenizer(_copy(tmp_path, {"bos_token": "<s>", "add_bos_token": True}))
    assert tok.encode_prompt("hello world") == [1, *plain]


def test_errors(tmp_path: Path, tok: PromptTokenizer) -> None:
    with pytest.raises(TokenizeError, match=r"no tokenizer\.json"):
        PromptTokenizer(tmp_path)
    no_template = PromptTokenizer(_copy(tmp_path, {}))
    with pytest.raises(TokenizeError, match="no chat template"):
        no_template.encode_chat([{"role": "user", "content": "x"}])
    with pytest.raises(TokenizeError, match="messages\\[0\\]"):
        tok.encode_chat([{"content": "x"}])
