"""The prefix cache: a prompt that starts with a finished run's ids computes only the rest, and gets the tokens a
run from an empty cache gets, on every cache layout (in place, alternating buffers, fp16)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from clawdbot.inference.onnx import OnnxBackend, RuntimeOptions, Sampler
from clawdbot.inference.onnx.prefix_cache import BLOCK, PrefixCache, block_keys
from clawdbot.inference.types import ChatMessage, GenerationParams
from tests.inference.conftest import TINY_MODELS

if TYPE_CHECKING:
    from pathlib import Path

SYSTEM = ChatMessage("system", "You are a helpful assistant.")
QUESTIONS = ["Hi!", "Sea?", "Bread?", "Cheese?", "Best?"]
NO_CACHE = RuntimeOptions(prefix_cache_bytes=0)


def _backends(path: Path, **options: object) -> tuple[OnnxBackend, OnnxBackend]:
    """(with a prefix cache, without one) on the same folder."""
    return OnnxBackend(path, options=RuntimeOptions(**options)), OnnxBackend(path, options=NO_CACHE)  # type: ignore[arg-type]


def _conversation(cached: OnnxBackend, plain: OnnxBackend, params: list[GenerationParams],
                  first: str = "") -> list[str]:
    """Turns of one conversation on both backends, asserting each reply is the same; the replies."""
    messages = [SYSTEM]
    replies = []
    for turn, question in enumerate(QUESTIONS):
        messages.append(ChatMessage("user", first + question if turn == 0 else question))
        got, expected = cached.generate(messages, params[turn]), plain.generate(messages, params[turn])
        # the same completion; only the count of prompt tokens taken from the cache differs
        assert dataclasses.replace(got, cached_tokens=0) == expected, f"turn {turn}"
        assert expected.cached_tokens == 0
        assert (got.cached_tokens > 0) is (turn > 0), f"turn {turn}"
        messages.append(ChatMessage("assistant", got.text))
        replies.append(got.text)
    return replies


@pytest.mark.parametrize("model", TINY_MODELS)
def test_a_conversation_reuses_each_turn_and_gets_the_same_replies(model: str, request: pytest.FixtureRequest) -> None:
    # GIVEN the same model with and without a prefix cache
    cached, plain = _backends(request.getfixturevalue(f"{model}_dir"))
    cache = cached.engine.prefix_cache
    assert cache is not None and plain.engine.prefix_cache is None
    # WHEN a conversation runs five turns, greedy and sampled
    params = [GenerationParams(max_tokens=5, temperature=0.0 if t % 2 else 0.9, seed=t) for t in range(5)]
    _conversation(cached, plain, params)
    # THEN every turn after the first started from the last one's cache: most of each prompt was not computed
    prompts = [cached.encode_prompt([SYSTEM, *(ChatMessage("user", q) for q in QUESTIONS[:t + 1])])
               for t in range(5)]
    assert cache.hits == 4 and cache.misses == 1
    assert cache.reused_tokens > sum(len(p) for p in prompts[:4]) // 2
    # and one run is kept, the conversation's last (each turn took the previous one over)
    assert len(cache) == 1


def test_the_shipped_model_reuses_a_session_and_matches(shipped_dir: Path) -> None:
    cached, plain = _backends(shipped_dir)
    params = [GenerationParams(max_tokens=24, temperature=1.0, seed=t) for t in range(5)]
    _conversation(cached, plain, params)
    assert cached.engine.prefix_cache is not None and cached.engine.prefix_cache.hits == 4


def test_another_conversation_shares_the_prefix_and_leaves_the_first_its_cache(genai_dir: Path) -> None:
    # GIVEN a conversation's first turn stored
    cached, plain = _backends(genai_dir)
    cache = cached.engine.prefix_cache
    assert cache is not None
    params = GenerationParams(max_tokens=8, temperature=0.0)
    first = [SYSTEM, ChatMessage("user", QUESTIONS[0])]
    reply = cached.generate(first, params)
    # WHEN a second conversation with the same system prompt begins
    other = [SYSTEM, ChatMessage("user", QUESTIONS[3])]
    assert cached.generate(other, params).text == plain.generate(other, params).text
    # THEN it reused the shared prefix by copy, and both conversations are stored
    assert cache.hits == 1 and len(cache) == 2
    # and the first conversation's next turn still continues its own run, well past the system prompt
    reused = cache.reused_tokens
    nxt = [*first, ChatMessage("assistant", reply.text), ChatMessage("user", QUESTIONS[1])]
    again = cached.generate(nxt, params)
    assert again.text == plain.generate(nxt, params).text
    assert again.cached_tokens == cache.reused_tokens - reused >= len(cached.encode_prompt(first))


@pytest.mark.parametrize("model", ["genai", "llama"])
def test_a_prompt_longer_than_the_stored_run_gets_a_bigger_run(model: str, request: pytest.FixtureRequest) -> None:
    # GIVEN a stored run with little room (no context limit known: no rounding up)
    cached, plain = _backends(request.getfixturevalue(f"{model}_dir"))
    engine = cached.engine
    engine.max_capacity = None
    ids = cached.encode_prompt([SYSTEM, ChatMessage("user", QUESTIONS[2])])
    list(engine.generate(ids, max_new_tokens=4, sampler=Sampler(0.0)))
    cache = engine.prefix_cache
    assert cache is not None and len(cache) == 1
    # WHEN a prompt continuing it asks for more room than it has
    longer = ids + list(range(40, 80))
    got = list(engine.generate(longer, max_new_tokens=30, sampler=Sampler(0.0)))
    # THEN it was copied into a bigger run, with the same tokens as from scratch
    assert got == list(plain.engine.generate(longer, max_new_tokens=30, sampler=Sampler(0.0)))
    assert cache.hits == 1 and len(cache) == 1
    assert cache.nbytes == next(iter(cache._entries.values())).value.nbytes


@pytest.mark.parametrize("model", TINY_MODELS)
def test_a_prompt_leaving_the_stored_run_near_its_end_takes_it_over_cut_back(model: str,
                                                                             request: pytest.FixtureRequest) -> None:
    # GIVEN a stored run (a reply tokenized again as text can differ from the ids generated in its last tokens)
    cached, plain = _backends(request.getfixturevalue(f"{model}_dir"))
    engine = cached.engine
    cache = engine.prefix_cache
    assert cache is not None
    ids = cached.encode_prompt([SYSTEM, ChatMessage("user", QUESTIONS[1])])
    list(engine.generate(ids, max_new_tokens=8, sampler=Sampler(0.0)))
    (stored,) = cache._entries.values()
    # WHEN the next prompt follows it but for its last few ids
    prompt = [*stored.ids[:-3], 5, 6, 7, 8]
    got = list(engine.generate(prompt, max_new_tokens=6, sampler=Sampler(0.0)))
    # THEN the stored run was taken over (one entry, no copy kept), cut back to the shared ids, and gives the
    # tokens of a run from scratch (the alternating-buffer graphs rewrite the kept positions for the shorter past)
    assert got == list(plain.engine.generate(prompt, max_new_tokens=6, sampler=Sampler(0.0)))
    assert cache.hits == 1 and len(cache) == 1
    (again,) = cache._entries.values()
    assert again.value is stored.value and again.ids[:len(prompt)] == prompt


def test_a_stream_stopped_early_is_kept_and_a_failed_one_is_not(genai_dir: Path) -> None:
    cached, _ = _backends(genai_dir)
    engine = cached.engine
    cache = engine.prefix_cache
    assert cache is not None
    ids = cached.encode_prompt([SYSTEM, ChatMessage("user", QUESTIONS[4])])
    # GIVEN a generation whose consumer stops after three tokens (a client gone, a stop string)
    tokens = engine.generate(ids, max_new_tokens=50, sampler=Sampler(0.0))
    taken = [next(tokens) for _ in range(3)]
    tokens.close()
    # THEN its run is stored holding the prompt and the two tokens fed back
    (entry,) = cache._entries.values()
    assert entry.ids == [*ids, *taken[:2]]

    # GIVEN a generation whose sampler fails after the prefill
    def failing(_logits: object) -> int:
        raise RuntimeError("sampler failed")

    with pytest.raises(RuntimeError):
        list(engine.generate(ids, max_new_tokens=5, sampler=failing))
    # THEN the run it took is dropped, not stored half written
    assert len(cache) == 0


def test_the_cache_keeps_to_its_bytes(genai_dir: Path) -> None:
    # GIVEN room for about two runs
    probe, _ = _backends(genai_dir)
    ids = probe.encode_prompt([SYSTEM, ChatMessage("user", QUESTIONS[0])])
    list(probe.engine.generate(ids, max_new_tokens=4, sampler=Sampler(0.0)))
    one_run = probe.engine.prefix_cache.nbytes  # type: ignore[union-attr]
    cached = OnnxBackend(genai_dir, options=RuntimeOptions(prefix_cache_bytes=one_run * 2 + one_run // 2))
    cache = cached.engine.prefix_cache
    assert cache is not None
    # WHEN five different conversations run
    for question in QUESTIONS:
        cached.generate([ChatMessage("user", question * 3)], GenerationParams(max_tokens=4, temperature=0.0))
    # THEN only the two most recent are kept
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    kept = [entry.ids for entry in cache._entries.values()]
    assert kept[-1][:len(ids) // 2] == cached.encode_prompt([ChatMessage("user", QUESTIONS[-1] * 3)])[:len(ids) // 2]


def test_lookup_finds_the_longest_prefix_and_never_the_whole_prompt() -> None:
    cache = PrefixCache(max_bytes=1000)
    a = list(range(100))
    b = list(range(40)) + [999] * 60
    cache.put(a, "a", 10)
    cache.put(b, "b", 10)
    # the prompt follows `a` for 70 ids: `a` wins over `b` (40), and its reusable part stops where they differ
    entry, common = cache.take([*range(70), 5, 6, 7], usable=72)
    assert entry is not None and entry.value == "a" and common == 70
    # taken means gone: the next lookup finds `b`, capped at what the caller may reuse
    entry, common = cache.take(list(range(100)), usable=45)
    assert entry is not None and entry.value == "b" and common == 40
    assert cache.take(list(range(100)), usable=99) == (None, 0)
    # prefixes shorter than a block are not stored, and neither is what exceeds the whole cache
    cache.put(list(range(BLOCK - 1)), "short", 1)
    cache.put(list(range(50)), "huge", 1001)
    assert len(cache) == 0 and cache.nbytes == 0


def test_block_keys_chain_the_whole_prefix() -> None:
    # a block's key stands for everything before it: equal last blocks after different starts differ
    x = [1] * BLOCK + [7] * BLOCK
    y = [2] * BLOCK + [7] * BLOCK
    assert len(block_keys(x)) == 2 and block_keys(x)[1] != block_keys(y)[1]
    assert block_keys(x, limit=2 * BLOCK - 1) == block_keys(x)[:1]


def test_the_setting_turns_it_off(tmp_path: Path) -> None:
    from clawdbot.config.settings import Settings

    off = OnnxBackend.from_settings(Settings(prefix_cache_mb=0, data_dir=tmp_path))
    on = OnnxBackend.from_settings(Settings(prefix_cache_mb=8, data_dir=tmp_path))
    assert off.engine.prefix_cache is None
    assert on.engine.prefix_cache is not None and on.engine.prefix_cache.max_bytes == 8 << 20


def test_the_container_refuses_a_negative_size(tmp_path: Path) -> None:
    from tests.sagemaker.conftest import SERVE

    done = subprocess.run([sys.executable, str(SERVE), "--prefix-cache-mb", "-1", "--model-dir", str(tmp_path),
                           "--port", "0"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--prefix-cache-mb must be 0 or more" in done.stderr
