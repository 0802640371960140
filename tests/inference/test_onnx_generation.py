"""Generation behaviour through ``OnnxBackend``, on the shipped model and on every differently shaped tiny model."""

from __future__ import annotations

import inspect
import itertools
import threading
from typing import TYPE_CHECKING

import numpy as np
import pytest

from clawdbot.inference import ContextLengthExceededError
from clawdbot.inference.onnx import Sampler
from clawdbot.inference.types import ChatMessage, GenerationParams
from tests.inference.conftest import TINY_MODELS

if TYPE_CHECKING:
    from clawdbot.inference.onnx import OnnxBackend

PROMPT = [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "Hello! How are you today?")]
NON_ASCII = [ChatMessage("user", "Grüße aus München 🎉 日本語 Привет")]


def greedy(max_tokens: int, **kwargs: object) -> GenerationParams:
    return GenerationParams(max_tokens=max_tokens, temperature=0.0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("messages", [PROMPT, NON_ASCII], ids=["english", "non-ascii"])
def test_kv_cache_matches_recomputation(any_backend: OnnxBackend, messages: list[ChatMessage]) -> None:
    # The cached paths (in place for genai, alternating buffers otherwise) must give the tokens that recomputing
    # the whole sequence at every step gives.
    engine = any_backend.engine
    ids = any_backend.encode_prompt(messages)
    cached = list(engine.generate(ids, max_new_tokens=24, sampler=Sampler(0.0)))
    recomputed = list(engine.generate(ids, max_new_tokens=24, sampler=Sampler(0.0), use_cache=False))
    assert cached == recomputed
    assert len(cached) == 24


def test_cache_layout_follows_the_graph(llama_dir: object, gpt2_fp16_dir: object, genai_dir: object,
                                        tiny_backend: OnnxBackend) -> None:
    # GIVEN onnxruntime-genai's fused GroupQueryAttention graph, the engine writes the cache in place;
    # plain Optimum exports (Concat-based) cannot take that binding and get the alternating buffers.
    is_genai = (tiny_backend.folder.path / "genai_config.json").exists()
    assert tiny_backend.engine.in_place_cache is is_genai


def test_genai_build_gives_the_optimum_export_tokens(llama_dir: object, genai_dir: object) -> None:
    from tests.inference.conftest import _backend

    optimum, genai = _backend(llama_dir), _backend(genai_dir)  # type: ignore[arg-type]
    ids = optimum.encode_prompt(PROMPT)
    assert genai.encode_prompt(PROMPT) == ids
    a = list(optimum.engine.generate(ids, max_new_tokens=30, sampler=Sampler(0.0)))
    b = list(genai.engine.generate(ids, max_new_tokens=30, sampler=Sampler(0.0)))
    assert a == b


def test_seeded_sampling_is_reproducible(any_backend: OnnxBackend) -> None:
    params = GenerationParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=1234)
    first = any_backend.generate(PROMPT, params)
    second = any_backend.generate(PROMPT, params)
    assert first == second
    # and the seed matters: across a few other seeds at least one sample differs
    others = {any_backend.generate(PROMPT, GenerationParams(max_tokens=20, temperature=1.0, seed=s)).text
              for s in (1, 2, 3)}
    assert len(others | {first.text}) > 1


def test_max_tokens_gives_length(any_backend: OnnxBackend) -> None:
    ids = any_backend.encode_prompt(PROMPT)
    first = list(any_backend.engine.generate(ids, max_new_tokens=3, sampler=Sampler(0.0)))
    assert not set(first) & any_backend.eos_token_ids, "precondition: no EOS within the first 3 greedy tokens"
    completion = any_backend.generate(PROMPT, greedy(3))
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 3
    assert completion.prompt_tokens == len(ids) == any_backend.count_prompt_tokens(PROMPT)


def test_stop_string_spanning_two_tokens(any_backend: OnnxBackend) -> None:
    from clawdbot.inference.onnx.detokenizer import IncrementalDetokenizer

    # GIVEN the unconstrained greedy completion and the text each of its tokens added
    full = any_backend.generate(PROMPT, greedy(40))
    detok = IncrementalDetokenizer(any_backend.tokenizer)
    ids = any_backend.encode_prompt(PROMPT)
    pieces = [detok.step(t) for t in any_backend.engine.generate(ids, max_new_tokens=40, sampler=Sampler(0.0))]
    # a stop string made of the last character of one token's text and the first of the next one's
    boundary = next(i for i in range(2, len(pieces) - 1) if pieces[i] and pieces[i + 1]
                    and pieces[i][-1].strip() and pieces[i + 1][0].strip())
    stop = pieces[boundary][-1] + pieces[boundary + 1][0]
    expected = full.text[:full.text.index(stop)]
    # WHEN generating again with that stop string
    stopped = any_backend.generate(PROMPT, greedy(40, stop=("never-appears", stop)))
    # THEN the text ends right before it, and the reason is "stop"
    assert stopped.text == expected
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens <= boundary + 2


def test_stream_concatenates_to_generate(any_backend: OnnxBackend) -> None:
    for params in (greedy(30), GenerationParams(max_tokens=30, temperature=0.8, seed=7)):
        deltas = list(any_backend.stream(NON_ASCII, params))
        whole = any_backend.generate(NON_ASCII, params)
        assert "".join(d.text for d in deltas) == whole.text
        assert [d.finish_reason for d in deltas[:-1]] == [None] * (len(deltas) - 1)
        last = deltas[-1]
        assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == (
            whole.finish_reason, whole.prompt_tokens, whole.completion_tokens)


def test_token_ids_make_the_generated_text_however_they_are_grouped(any_backend: OnnxBackend) -> None:
    for params in (greedy(30), GenerationParams(max_tokens=30, temperature=0.8, seed=7)):
        # GIVEN a completion streamed as token ids, and the same completion generated whole
        stream = any_backend.stream_ids(NON_ASCII, params)
        assert stream is not None
        ids = list(stream)
        whole = any_backend.generate(NON_ASCII, params)
        # WHEN its ids are detokenized in groups, as the event loop takes them
        detokenizer = stream.new_detokenizer()
        bounds = sorted({0, len(ids), *(c for c in (1, 5, 6, 17) if c < len(ids))})
        text = "".join(detokenizer.extend(ids[a:b]) for a, b in itertools.pairwise(bounds))
        # THEN the text, the finish reason and the counts are the generated ones
        assert text == whole.text
        assert (stream.finish_reason, stream.prompt_tokens, stream.completion_tokens) == (
            whole.finish_reason, whole.prompt_tokens, whole.completion_tokens)


def test_token_ids_are_for_turns_without_stop_strings_and_end_with_their_consumer(
        any_backend: OnnxBackend) -> None:
    # A stop string is matched on text as each token comes: such a turn streams text (stream())
    assert any_backend.stream_ids(PROMPT, greedy(8, stop=("never",))) is None
    # A consumer that stops after two ids ends the model's loop there
    stream = any_backend.stream_ids(PROMPT, greedy(20))
    assert stream is not None
    ids = iter(stream)
    assert len([next(ids), next(ids)]) == 2
    ids.close()  # type: ignore[attr-defined]
    assert stream.completion_tokens == 2
    assert inspect.getgeneratorstate(stream._tokens) == inspect.GEN_CLOSED  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["llama", "gpt2_fp16"])
def test_eos_token_ends_generation_with_stop(model: str, request: pytest.FixtureRequest) -> None:
    from clawdbot.inference.onnx import OnnxBackend

    # GIVEN a backend whose EOS is declared to be the 4th greedy token (a fresh instance: the shared one keeps
    # the model's real EOS ids)
    backend = OnnxBackend(request.getfixturevalue(f"{model}_dir"))
    ids = backend.encode_prompt(PROMPT)
    tokens = list(backend.engine.generate(ids, max_new_tokens=12, sampler=Sampler(0.0)))
    backend.eos_token_ids = frozenset({tokens[3]})
    ends_at = tokens.index(tokens[3])
    # WHEN generating with room for more
    completion = backend.generate(PROMPT, greedy(12))
    # THEN it stops at EOS, counts it, and leaves its text out
    assert completion.finish_reason == "stop"
    assert completion.completion_tokens == ends_at + 1
    expected = backend.tokenizer.decode(tokens[:ends_at])
    assert completion.text == expected.rstrip("\ufffd")
    # AND streamed as token ids, the same: the ids before EOS, the same reason and count
    stream = backend.stream_ids(PROMPT, greedy(12))
    assert stream is not None
    assert list(stream) == tokens[:ends_at]
    assert (stream.finish_reason, stream.completion_tokens) == ("stop", ends_at + 1)


def test_prompt_that_cannot_fit_is_rejected_before_generation(any_backend: OnnxBackend) -> None:
    window = any_backend.context_length
    long = [ChatMessage("user", "hello " * (window + 10))]
    with pytest.raises(ContextLengthExceededError) as info:
        any_backend.stream(long, greedy(1))  # raised by the call, before any delta is produced
    assert info.value.code == "context_length_exceeded"
    assert info.value.status_code == 400
    assert str(window) in info.value.message
    # prompt fits but prompt + max_tokens does not: rejected too, never silently shortened
    n = any_backend.count_prompt_tokens(PROMPT)
    with pytest.raises(ContextLengthExceededError):
        any_backend.generate(PROMPT, greedy(window - n + 1))


def test_generation_can_fill_the_whole_context(any_backend: OnnxBackend) -> None:
    n = any_backend.count_prompt_tokens(PROMPT)
    room = any_backend.context_length - n
    ids = any_backend.encode_prompt(PROMPT)
    # positions up to the last one of the window are valid for every graph (genai's rotary cache included)
    tokens = list(any_backend.engine.generate(ids, max_new_tokens=min(room, 300), sampler=Sampler(0.0)))
    assert len(tokens) == min(room, 300)


def test_without_max_tokens_generation_stops_at_the_window(tiny_backend: OnnxBackend) -> None:
    # GIVEN a prompt that leaves room for only a few tokens
    words = 1
    while tiny_backend.count_prompt_tokens([ChatMessage("user", "hello " * (words + 1))]) \
            < tiny_backend.context_length - 6:
        words += 1
    long_prompt = [ChatMessage("user", "hello " * words)]
    n = tiny_backend.count_prompt_tokens(long_prompt)
    assert n < tiny_backend.context_length
    completion = tiny_backend.generate(long_prompt, GenerationParams(temperature=0.0))
    assert n + completion.completion_tokens <= tiny_backend.context_length
    if completion.finish_reason == "length":
        assert n + completion.completion_tokens == tiny_backend.context_length


def test_non_ascii_prompt_round_trips(any_backend: OnnxBackend) -> None:
    text = NON_ASCII[0].content
    ids = any_backend.tokenizer.encode(text, add_special_tokens=False).ids
    assert any_backend.tokenizer.decode(ids) == text
    assert any_backend.count_prompt_tokens(NON_ASCII) > len(ids)  # the template adds its markers


def test_concurrent_requests_match_sequential(any_backend: OnnxBackend) -> None:
    # One shared session, four threads with different seeds: each gets exactly what it gets alone.
    params = [GenerationParams(max_tokens=16, temperature=1.0, seed=s) for s in range(4)]
    alone = [any_backend.generate(PROMPT, p) for p in params]
    together: list[object] = [None] * 4
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        barrier.wait()
        together[i] = any_backend.generate(PROMPT, params[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


@pytest.mark.parametrize("model", TINY_MODELS)
def test_graph_rewrites_change_nothing_but_the_work(model: str, request: pytest.FixtureRequest) -> None:
    from clawdbot.inference.onnx import OnnxBackend, RuntimeOptions

    # GIVEN the same folder loaded with the load-time rewrites (last-position LM head; for the fused graph,
    # attention lengths fed directly instead of the mask subgraph) and as exported
    path = request.getfixturevalue(f"{model}_dir")
    rewritten = OnnxBackend(path)
    plain = OnnxBackend(path, options=RuntimeOptions(last_position_logits=False, direct_attention_lengths=False))
    assert rewritten.engine.spec.last_logits_only
    assert not plain.engine.spec.last_logits_only
    fused = model == "genai"
    assert (rewritten.engine.spec.seqlens_k is not None) is fused
    assert (rewritten.engine.spec.attention_mask is None) is fused
    assert plain.engine.spec.attention_mask == "attention_mask"
    # THEN prefill logits of the last position and the generated tokens are the same
    ids = plain.encode_prompt(PROMPT)
    full = plain.engine.forward(ids)
    last = rewritten.engine.forward(ids)
    assert last.shape == (1, full.shape[-1])
    np.testing.assert_allclose(last[0].astype(np.float32), full[-1].astype(np.float32), atol=2e-3, rtol=1e-3)
    for params in (greedy(20), GenerationParams(max_tokens=20, temperature=0.9, seed=5)):
        assert rewritten.generate(PROMPT, params) == plain.generate(PROMPT, params)
