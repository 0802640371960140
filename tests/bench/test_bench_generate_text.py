"""``OnnxBackend.generate`` without stop strings decodes the text after the last token (a fix measured by
``bench.api_generation``): the completion must be exactly what the streamed path gives, token for token."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from clawdbot.config.settings import DEFAULT_MODEL_DIR
from clawdbot.inference.types import ChatMessage, GenerationParams

if TYPE_CHECKING:
    from clawdbot.inference.onnx import OnnxBackend


@pytest.fixture(scope="module")
def backend() -> OnnxBackend:
    from clawdbot.inference.onnx import OnnxBackend

    return OnnxBackend(DEFAULT_MODEL_DIR)


@pytest.mark.parametrize("seed", range(12))
def test_a_whole_completion_is_the_streamed_one_joined(backend: OnnxBackend, seed: int) -> None:
    messages = [ChatMessage("user", "Tell me about bread, café crème and 🦀 crabs.")]
    # Hot sampling, long enough that some seeds end on EOS and some on the length limit.
    params = GenerationParams(max_tokens=64, temperature=1.5, seed=seed)
    completion = backend.generate(messages, params)
    deltas = list(backend.stream(messages, params))
    assert completion.text == "".join(d.text for d in deltas)
    assert (completion.finish_reason, completion.prompt_tokens, completion.completion_tokens) == (
        deltas[-1].finish_reason, deltas[-1].prompt_tokens, deltas[-1].completion_tokens)


def test_the_finish_reasons_seen_include_both_ends(backend: OnnxBackend) -> None:
    # (so the comparison above covers a completion cut by EOS and one cut by the limit)
    reasons = {backend.generate([ChatMessage("user", "Hi")], GenerationParams(max_tokens=24, temperature=1.5,
                                                                               seed=s)).finish_reason
               for s in range(40)}
    assert reasons == {"stop", "length"}


@pytest.mark.parametrize("seed", range(6))
def test_grouped_detokenization_gives_the_text_of_token_by_token_in_fewer_deltas(
        backend: OnnxBackend, seed: int) -> None:
    # GIVEN the same turn streamed without stop strings (tokens detokenized in groups) and with a one-character
    # stop string that never comes (token by token, and a one-character stop holds nothing back)
    messages = [ChatMessage("user", "Tell me about bread, café crème and 🦀 crabs.")]
    grouped = list(backend.stream(messages, GenerationParams(max_tokens=96, temperature=1.5, seed=seed)))
    one_by_one = list(backend.stream(messages, GenerationParams(max_tokens=96, temperature=1.5, seed=seed,
                                                                stop=("\x00",))))
    # THEN the text is the same, and so is the final delta (finish reason, token counts); grouped, a group of the
    # tokens (the shipped model decodes several in the grouping time) is one delta, so there are fewer of them
    assert "".join(d.text for d in grouped) == "".join(d.text for d in one_by_one)
    assert grouped[-1] == one_by_one[-1]
    assert all(d.finish_reason is None for d in grouped[:-1])
    assert 2 < len(grouped) < len(one_by_one)
