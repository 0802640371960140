"""The chat template shipped with the model renders exactly the text layout the model was trained on."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from training import tokenizer as tok

if TYPE_CHECKING:
    from pathlib import Path

    from training.data import Message

CONVERSATIONS: list[list[Message]] = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi! How are you?"},
        {"role": "user", "content": "Fine.\nAnd you?"},
    ],
]


def render_jinja(template: str, messages: list[Message], add_generation_prompt: bool) -> str:
    # As transformers' apply_chat_template renders it.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, bos_token=tok.ENDOFTEXT,
        eos_token=tok.IM_END,
    )


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_jinja_template_matches_training_renderer(messages: list[Message], add_generation_prompt: bool) -> None:
    expected = tok.render_chat(messages, add_generation_prompt=add_generation_prompt)
    assert render_jinja(tok.CHAT_TEMPLATE, messages, add_generation_prompt) == expected


def test_training_layout_is_chatml() -> None:
    text = tok.render_chat(CONVERSATIONS[1][:2], add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_shipped_tokenizer_config_carries_the_template_and_special_tokens(model_dir: Path) -> None:
    config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == tok.CHAT_TEMPLATE
    assert config["eos_token"] == tok.IM_END
    assert config["pad_token"] == tok.PAD
    assert config["bos_token"] == tok.ENDOFTEXT
    assert config.get("add_bos_token") is False


def test_shipped_generation_config_stops_at_im_end(model_dir: Path, shipped_tokenizer) -> None:
    generation = json.loads((model_dir / "generation_config.json").read_text(encoding="utf-8"))
    model_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    im_end = shipped_tokenizer.token_to_id(tok.IM_END)
    assert generation["eos_token_id"] == im_end == model_config["eos_token_id"]
    assert model_config["vocab_size"] == shipped_tokenizer.get_vocab_size()


def test_special_tokens_are_single_ids_never_split(shipped_tokenizer) -> None:
    for i, token in enumerate(tok.SPECIAL_TOKENS):
        assert shipped_tokenizer.token_to_id(token) == i
    ids = shipped_tokenizer.encode("a<|im_start|>user\nb<|im_end|>", add_special_tokens=False).ids
    assert ids.count(1) == 1 and ids.count(2) == 1
    # A tokenizer with no post-processor: nothing is added around the rendered template.
    assert shipped_tokenizer.encode("hi", add_special_tokens=True).ids == shipped_tokenizer.encode(
        "hi", add_special_tokens=False
    ).ids
