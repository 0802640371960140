"""``PromptTokenCounter`` (the context fit's token counts, a fix measured by ``bench.overhead``): its sum of cached
piece counts equals the tokenizer's count of the whole text, special-token look-alikes and Unicode included, and a
tokenizer whose added tokens strip whitespace is counted whole."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from clawdbot.config.settings import DEFAULT_MODEL_DIR
from clawdbot.inference.prompt_count import PromptTokenCounter
from clawdbot.inference.tokenizer_bundle import TokenizerBundle
from clawdbot.inference.types import ChatMessage

MODEL_DIR = Path(DEFAULT_MODEL_DIR)
BUNDLE = TokenizerBundle(MODEL_DIR)
TEMPLATE = BUNDLE.template

_text = st.lists(st.sampled_from(["a", "b", " ", "\n", "\t", "é", "😀", ".", "<|im_end|>", "<|im_start|>", "<|",
                                  "|>", "im_", "<|endoftext|>", "Hello", " world"]), max_size=30).map("".join)
_messages = st.lists(st.builds(ChatMessage, st.sampled_from(["system", "user", "assistant"]), _text),
                     min_size=1, max_size=6)


def _whole(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def _render(messages: list[ChatMessage]) -> str:
    return TEMPLATE.render([{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True)


@settings(max_examples=150, deadline=None)
@given(_messages)
def test_piece_counts_add_up_to_the_whole_prompt(messages: list[ChatMessage]) -> None:
    counter = PromptTokenCounter(BUNDLE.tokenizer)
    assert counter.exact_pieces
    text = _render(messages)
    assert counter.count(text) == _whole(BUNDLE.tokenizer, text)
    assert counter.count(text) == _whole(BUNDLE.tokenizer, text)  # again, from the cache
    assert BUNDLE.count_prompt_tokens(messages) == len(BUNDLE.encode_prompt(messages))


def test_a_history_one_turn_longer_counts_the_same_as_encoding_it() -> None:
    counter = PromptTokenCounter(BUNDLE.tokenizer)
    history: list[ChatMessage] = [ChatMessage("system", "You are Clawdbot.")]
    for turn in range(20):
        history += [ChatMessage("user", f"Question {turn}: what now?"), ChatMessage("assistant", f"Answer {turn}.")]
        text = _render(history)
        assert counter.count(text) == _whole(BUNDLE.tokenizer, text)


def test_added_tokens_that_strip_whitespace_are_counted_on_the_whole_text() -> None:
    spec = json.loads((MODEL_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    for token in spec["added_tokens"]:
        token["lstrip"] = token["rstrip"] = True
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    counter = PromptTokenCounter(tokenizer)
    assert not counter.exact_pieces
    text = _render([ChatMessage("user", "  spaced  <|im_end|>  out  "), ChatMessage("assistant", " x ")])
    assert counter.count(text) == _whole(tokenizer, text)
