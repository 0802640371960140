"""``Sampler``: greedy, temperature and nucleus (top-p) sampling, seeded; OpenAI's logit adjustments; log
probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawdbot.exceptions import InvalidRequestError
from clawdbot.inference.onnx import Sampler


def nucleus(probs: np.ndarray, top_p: float) -> set[int]:
    """Reference: the most likely tokens, in order, until their mass reaches top_p."""
    order = np.argsort(-probs, kind="stable")
    mass = np.cumsum(probs[order] / probs.sum())
    return {int(i) for i in order[: int(np.searchsorted(mass, top_p - 1e-9)) + 1]}


def test_greedy_is_argmax() -> None:
    logits = np.array([0.1, 3.0, -2.0, 2.9], dtype=np.float16)
    assert Sampler(temperature=0.0)(logits) == 1


def test_sampling_follows_the_distribution_within_the_nucleus() -> None:
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    sampler = Sampler(temperature=1.0, top_p=0.7, seed=0)
    draws = np.bincount([sampler(np.log(probs)) for _ in range(4000)], minlength=4)
    assert draws[2] == draws[3] == 0  # outside the 0.7 nucleus {0, 1}
    assert draws[0] / 4000 == pytest.approx(0.5 / 0.8, abs=0.03)


@pytest.mark.parametrize("shape", ["peaked", "flat"])  # nucleus inside the partial sort, or needing a full sort
def test_large_vocabulary_nucleus(shape: str) -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=5000).astype(np.float32) * (4.0 if shape == "peaked" else 0.5)
    probs = np.exp(logits - logits.max())
    allowed = nucleus(probs, 0.9)
    assert (len(allowed) < 64) is (shape == "peaked")
    sampler = Sampler(temperature=1.0, top_p=0.9, seed=11)
    picks = {sampler(logits) for _ in range(500)}
    assert picks <= allowed
    assert len(picks) > 1


def test_seed_reproduces_and_low_temperature_sharpens() -> None:
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
    sampler_a, sampler_b = Sampler(1.0, 1.0, seed=42), Sampler(1.0, 1.0, seed=42)
    a = [sampler_a(logits) for _ in range(50)]
    assert a == [sampler_b(logits) for _ in range(50)]
    cold = Sampler(0.05, 1.0, seed=1)
    assert [cold(logits) for _ in range(50)] == [0] * 50


@pytest.mark.parametrize(("temperature", "top_p", "param"), [(-0.1, 1.0, "temperature"), (float("nan"), 1.0,
                         "temperature"), (1.0, 0.0, "top_p"), (1.0, 1.5, "top_p")])
def test_invalid_parameters_are_client_errors(temperature: float, top_p: float, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        Sampler(temperature, top_p)
    assert info.value.param == param


def _reference(probs: np.ndarray, u: float) -> int:
    """One running total over the whole vocabulary (what ``draw`` computes in blocks)."""
    cumulative = np.cumsum(probs.astype(np.float64))
    return min(int(np.searchsorted(cumulative, u * cumulative[-1], side="right")), len(probs) - 1)


@pytest.mark.parametrize("size", [3, 128, 129, 1000, 4096, 4097, 32000])
def test_draw_in_blocks_is_inverse_cdf_sampling(size: int) -> None:
    from clawdbot.inference.onnx.sampling import draw

    rng = np.random.default_rng(size)
    logits = rng.normal(size=size).astype(np.float32) * 3
    probs = np.exp(logits - logits.max())
    probs[rng.integers(0, size, size // 3)] = 0.0  # tokens with no mass are never drawn
    probs[int(np.argmax(probs))] = 1.0
    draws = [float(u) for u in rng.random(3000)] + [0.0, 0.5, 0.999999]
    picks = [draw(probs, u) for u in draws]
    # THEN each draw lands on the token the single running total gives (up to rounding at a boundary)
    agree = sum(a == _reference(probs, u) for a, u in zip(picks, draws, strict=True))
    assert agree >= len(draws) - 2
    assert all(probs[i] > 0 for i in picks)
    # AND a draw in the middle of a token's share picks that token (shares wider than float32's rounding)
    cumulative = np.cumsum(probs.astype(np.float64)) / probs.sum(dtype=np.float64)
    for token in rng.choice(np.flatnonzero(probs / probs.sum() > 1e-4), size=min(200, size), replace=True):
        low = cumulative[token - 1] if token else 0.0
        u = low + (cumulative[token] - low) / 2
        assert draw(probs, float(u)) == token


def test_draw_follows_the_distribution() -> None:
    from clawdbot.inference.onnx.sampling import draw

    rng = np.random.default_rng(5)
    probs = np.zeros(1000)
    probs[[3, 500, 999]] = [0.2, 0.3, 0.5]
    counts = np.bincount([draw(probs, float(u)) for u in rng.random(20000)], minlength=1000)
    assert set(np.flatnonzero(counts)) == {3, 500, 999}
    assert counts[[3, 500, 999]] / 20000 == pytest.approx([0.2, 0.3, 0.5], abs=0.015)


# ------------------------------------------------------------------ OpenAI's logit adjustments
def picks(sampler: Sampler, logits: np.ndarray, count: int) -> list[int]:
    return [sampler(logits) for _ in range(count)]


def test_frequency_penalty_lowers_a_token_each_time_it_is_picked() -> None:
    logits = np.array([1.0, 0.9, 0.0], dtype=np.float16)
    assert picks(Sampler(0.0), logits, 4) == [0, 0, 0, 0]
    # 0 is picked (1.0 -> 0.8), then 1 (0.9 -> 0.7), then 0 again (0.8 -> 0.6), and so on
    assert picks(Sampler(0.0, frequency_penalty=0.2), logits, 4) == [0, 1, 0, 1]


def test_presence_penalty_lowers_a_token_once() -> None:
    logits = np.array([3.0, 2.0, 0.0])
    # 0 (3 -> 1), then 1 (2 -> 0); after that 0 leads again and is never lowered a second time
    assert picks(Sampler(0.0, presence_penalty=2.0), logits, 5) == [0, 1, 0, 0, 0]


def test_logit_bias_forces_and_bans_tokens() -> None:
    logits = np.log(np.array([0.7, 0.2, 0.05, 0.05]))
    assert set(picks(Sampler(1.0, seed=0, logit_bias=[(3, 100.0)]), logits, 200)) == {3}
    banned = picks(Sampler(1.0, seed=0, logit_bias=[(0, -100.0)]), logits, 400)
    assert 0 not in banned and {1, 2, 3} <= set(banned)
    assert Sampler(0.0, logit_bias=[(0, -100.0)])(logits) == 1  # greedy takes the best token left


def test_adjustments_of_zero_sample_as_the_plain_path() -> None:
    # GIVEN the same seed, with and without a bias of zero effect on the outcome (+0 on one token)
    logits = np.random.default_rng(5).normal(size=300).astype(np.float32)
    plain = picks(Sampler(0.8, 0.95, seed=9), logits, 100)
    assert Sampler(0.8, 0.95, seed=9).greedy is False and Sampler(0.0).greedy is True
    assert Sampler(0.0, presence_penalty=0.5).greedy is False  # the engine must not argmax on its own
    # THEN the picks are the same: the adjusted path scales and samples as the plain one does
    assert picks(Sampler(0.8, 0.95, seed=9, logit_bias=[(0, 0.0)]), logits, 100) == plain


def test_adjustments_out_of_range_are_client_errors() -> None:
    with pytest.raises(InvalidRequestError) as info:
        Sampler(1.0, presence_penalty=2.5)
    assert info.value.param == "presence_penalty"
    with pytest.raises(InvalidRequestError) as info:
        Sampler(1.0, logit_bias=[(1, 101.0)])
    assert info.value.param == "logit_bias"
    sampler = Sampler(1.0, logit_bias=[(7, 1.0)])
    with pytest.raises(InvalidRequestError) as info:  # token 7 of a 4-token vocabulary
        sampler(np.zeros(4))
    assert info.value.param == "logit_bias"


def test_log_probabilities_are_the_models_own_and_their_alternatives_the_likeliest() -> None:
    logits = np.array([2.0, 0.5, 1.0, -1.0], dtype=np.float16)
    log_softmax = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum())
    # GIVEN a hot, biased sampler: what it picks is adjusted, what it reports is not
    sampler = Sampler(2.0, seed=3, logit_bias=[(3, 5.0)], logprobs=4)
    assert sampler.greedy is False
    picked = picks(sampler, logits, 50)
    assert [record[0] for record in sampler.records] == picked
    for token, logprob, top in sampler.records:
        assert logprob == pytest.approx(log_softmax[token])
        assert [alternative for alternative, _ in top] == [0, 2, 1, 3]  # most likely first
        assert sum(np.exp(value) for _, value in top) == pytest.approx(1.0)
    greedy = Sampler(0.0, logprobs=0)
    assert (greedy.greedy, greedy(logits), greedy.records) == (False, 0, [(0, pytest.approx(log_softmax[0]), ())])
    with pytest.raises(InvalidRequestError) as info:
        Sampler(1.0, logprobs=21)
    assert info.value.param == "top_logprobs"


@given(st.lists(st.floats(-5, 5), min_size=2, max_size=12), st.floats(-2, 2), st.floats(-2, 2),
       st.dictionaries(st.integers(0, 11), st.floats(-100, 100), max_size=3))
@settings(max_examples=200, deadline=None)
def test_greedy_adjusted_picks_follow_openais_formula(row: list[float], presence: float, frequency: float,
                                                      bias: dict[int, float]) -> None:
    logits = np.array(row, dtype=np.float32)
    bias = {token: value for token, value in bias.items() if token < len(row)}
    sampler = Sampler(0.0, presence_penalty=presence, frequency_penalty=frequency, logit_bias=sorted(bias.items()))
    counts = np.zeros(len(row))
    for _ in range(8):
        # OpenAI's definition, written out: mu[j] - c[j] * frequency - (c[j] > 0) * presence + bias[j]
        reference = logits.astype(np.float64) - counts * frequency - (counts > 0) * presence
        for token, value in bias.items():
            reference[token] += value
        got = sampler(logits)
        assert reference[got] >= reference.max() - 1e-3  # the best token, up to float32 rounding between ties
        counts[got] += 1
