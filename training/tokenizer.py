"""Byte-level BPE tokenizer and the ChatML-style chat format the model is trained on.

The chat format is defined twice on purpose: :data:`CHAT_TEMPLATE` (Jinja, shipped in
``tokenizer_config.json`` and rendered by whatever serves the model) and :func:`render_chat` (Python, used to
build training examples). ``tests/training`` checks they agree, so the model sees at inference exactly the
text layout it was trained on.

Byte-level BPE needs no unknown token: any UTF-8 text (emoji, other scripts) encodes and decodes losslessly.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from tokenizers import Tokenizer

    from training.data import Message

logger = logging.getLogger(__name__)

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
#: Declared as ``bos_token`` for tools that expect one; the chat template never emits it.
ENDOFTEXT = "<|endoftext|>"
PAD = "<|pad|>"
#: Ids 0..3, in this order; the model's embedding rows for them are trained (IM_START/IM_END) or unused.
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END, PAD)

#: What a transformers-compatible runtime renders (``apply_chat_template``); mirrors :func:`render_chat`.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)


def render_chat(messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
    """The training text for ``messages``: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    if add_generation_prompt:
        text += f"{IM_START}assistant\n"
    return text


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train byte-level BPE on ``texts`` (message contents of the training split only).

    The role names and newline used by the chat format are appended so they get merged tokens too.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def corpus() -> Iterable[str]:
        yield from texts
        yield from ("system\n", "user\n", "assistant\n") * 100

    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == i, f"special token {token} must have id {i}"
    logger.debug("trained BPE with %d tokens", tokenizer.get_vocab_size())
    return tokenizer


def tokenizer_config(model_max_length: int) -> dict[str, object]:
    """``tokenizer_config.json`` as transformers and our engine read it (chat template included)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": ENDOFTEXT,
        "eos_token": IM_END,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, t in enumerate(SPECIAL_TOKENS)
        },
    }


def save_tokenizer(tokenizer: Tokenizer, out_dir: Path, model_max_length: int) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (the files a runtime needs, nothing else)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = tokenizer_config(model_max_length)
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def as_transformers(tokenizer: Tokenizer, model_max_length: int) -> object:
    """The same tokenizer as a ``PreTrainedTokenizerFast`` (what exporters and ``save_pretrained`` take)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=ENDOFTEXT,
        eos_token=IM_END,
        pad_token=PAD,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )
