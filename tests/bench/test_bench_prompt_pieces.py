"""``PromptPieces`` (prompt ids and the context fit's token counts from cached pieces, fixes measured by
``bench.overhead`` and ``bench.prompt_encoding``): its ids joined from cached pieces equal the tokenizer's ids of the
whole text, special-token look-alikes and Unicode included; a tokenizer whose added tokens strip whitespace, or
whose pre-tokenizer treats the text's start apart, is encoded whole; the cache keeps to its token budget."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from clawdbot.config.settings import DEFAULT_MODEL_DIR
from clawdbot.inference.prompt_pieces import PromptPieces
from clawdbot.inference.tokenizer_bundle import TokenizerBundle
from clawdbot.inference.types import ChatMessage

MODEL_DIR = Path(DEFAULT_MODEL_DIR)
BUNDLE = TokenizerBundle(MODEL_DIR)
TEMPLATE = BUNDLE.template

_text = st.lists(st.sampled_from(["a", "b", " ", "\n", "\t", "é", "😀", ".", "<|im_end|>", "<|im_start|>", "<|",
                                  "|>", "im_", "<|endoftext|>", "Hello", " world"]), max_size=30).map("".join)
_messages = st.lists(st.builds(ChatMessage, st.sampled_from(["system", "user", "assistant"]), _text),
                     min_size=1, max_size=6)


def _whole(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def _render(messages: list[ChatMessage]) -> str:
    return TEMPLATE.render([{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True)


def _variant(edit: object) -> Tokenizer:
    """The shipped tokenizer with ``edit`` applied to its JSON."""
    spec = json.loads((MODEL_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    edit(spec)  # type: ignore[operator]
    return Tokenizer.from_str(json.dumps(spec))


@settings(max_examples=150, deadline=None)
@given(_messages)
def test_ids_joined_from_pieces_are_the_whole_prompts_ids(messages: list[ChatMessage]) -> None:
    pieces = PromptPieces(BUNDLE.tokenizer)
    assert pieces.exact_pieces
    text = _render(messages)
    expected = _whole(BUNDLE.tokenizer, text)
    assert pieces.encode(text) == expected
    assert pieces.encode(text) == expected  # again, from the cache
    assert pieces.count(text) == len(expected)
    assert BUNDLE.count_prompt_tokens(messages) == len(BUNDLE.encode_prompt(messages))


def test_a_history_one_turn_longer_encodes_as_the_whole_text() -> None:
    pieces = PromptPieces(BUNDLE.tokenizer)
    history: list[ChatMessage] = [ChatMessage("system", "You are Clawdbot.")]
    for turn in range(20):
        history += [ChatMessage("user", f"Question {turn}: what now?"), ChatMessage("assistant", f"Answer {turn}.")]
        text = _render(history)
        assert pieces.encode(text) == _whole(BUNDLE.tokenizer, text)
        assert pieces.count(text) == len(_whole(BUNDLE.tokenizer, text))


def test_added_tokens_that_strip_whitespace_are_encoded_on_the_whole_text() -> None:
    def strip(spec: dict) -> None:
        for token in spec["added_tokens"]:
            token["lstrip"] = token["rstrip"] = True

    tokenizer = _variant(strip)
    pieces = PromptPieces(tokenizer)
    assert not pieces.exact_pieces
    text = _render([ChatMessage("user", "  spaced  <|im_end|>  out  "), ChatMessage("assistant", " x ")])
    assert pieces.encode(text) == _whole(tokenizer, text)
    assert pieces.count(text) == len(_whole(tokenizer, text))


def _metaspace_tokenizer(prepend_scheme: str) -> Tokenizer:
    """A small BPE tokenizer with a Metaspace pre-tokenizer, trained here, with chat-template added tokens."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"])
    tokenizer.train_from_iterator(["Hello there, general Kenobi.", "there is a user and an assistant"] * 20, trainer)
    return tokenizer


def test_a_pre_tokenizer_that_marks_the_start_of_the_text_is_found_by_the_probe() -> None:
    """Metaspace with ``prepend_scheme="first"`` (Llama and Mistral tokenizers) prefixes only the text's first
    piece: a piece after an added token encodes differently alone. The added tokens' flags do not show it."""
    text = "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\nthere<|im_end|>"
    first = _metaspace_tokenizer("first")
    assert _whole(first, "there") != _whole(first, "<|im_end|>there")[1:]  # what the probe has to find
    pieces = PromptPieces(first)
    assert not pieces.exact_pieces
    assert pieces.encode(text) == _whole(first, text)
    assert pieces.count(text) == len(_whole(first, text))

    always = _metaspace_tokenizer("always")  # every piece prefixed alike: pieces are exact
    pieces = PromptPieces(always)
    assert pieces.exact_pieces
    assert pieces.encode(text) == _whole(always, text)


def test_the_cache_keeps_to_its_token_budget_and_stays_exact() -> None:
    pieces = PromptPieces(BUNDLE.tokenizer, cache_tokens=200)
    for turn in range(60):
        text = _render([ChatMessage("user", f"Message {turn} with a few more words than a word.")])
        assert pieces.encode(text) == _whole(BUNDLE.tokenizer, text)
        assert pieces._cached <= 200
        assert pieces._cached == sum(max(len(ids), 1) for ids in pieces._pieces.values())
    assert len(pieces._pieces) < 60  # older pieces went out
    huge = "word " * 400  # longer than the whole budget: encoded, not kept
    assert pieces.encode(huge) == _whole(BUNDLE.tokenizer, huge)
    assert huge not in pieces._pieces


def test_threads_sharing_the_cache_get_exact_ids() -> None:
    pieces = PromptPieces(BUNDLE.tokenizer, cache_tokens=300)
    texts = [_render([ChatMessage("user", f"Thread text {i % 17}, repeated now and then.")]) for i in range(400)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(pieces.encode, texts))
    assert got == [_whole(BUNDLE.tokenizer, text) for text in texts]


def test_the_benchmark_compares_equal_ids(tmp_path: Path) -> None:
    """``bench.prompt_encoding`` checks on every sample that both ways give the same ids, and writes its figures."""
    from bench import prompt_encoding

    out = tmp_path / "prompt_encoding.json"
    assert prompt_encoding.main(["--samples", "2", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    for turns in prompt_encoding.SIZES:
        assert results[f"prompt_encoding_h{turns}_pieces_ms"] > 0
        assert results[f"prompt_encoding_h{turns}_whole_ms"] > 0
    assert (results["prompt_encoding_h10_prompt_tokens"] < results["prompt_encoding_h100_prompt_tokens"]
            < results["prompt_encoding_h1000_prompt_tokens"])


def test_pieces_that_encode_to_nothing_still_count_against_the_budget() -> None:
    def drop_hashes(spec: dict) -> None:  # a normalizer that removes '#': a piece of them encodes to no token
        spec["normalizer"] = {"type": "Replace", "pattern": {"String": "#"}, "content": ""}

    tokenizer = _variant(drop_hashes)
    pieces = PromptPieces(tokenizer, cache_tokens=5)
    assert pieces.exact_pieces
    for count in range(1, 30):
        text = f"<|im_start|>{'#' * count}<|im_end|>"
        assert pieces.encode(text) == _whole(tokenizer, text)
        assert len(pieces._pieces) <= 5
