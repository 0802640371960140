"""Choosing the next token from a logits row: greedy, or temperature + nucleus (top-p) sampling, after OpenAI's
logit adjustments (``presence_penalty``, ``frequency_penalty``, ``logit_bias``).

Each request gets its own :class:`Sampler` (its own random generator, its own counts of the tokens it picked), so
a ``seed`` reproduces the same tokens regardless of what other requests run at the same time. ``temperature == 0``
is greedy, as in OpenAI's API.

The adjustments follow OpenAI's definition: ``logit[j] -= c[j] * frequency_penalty + (c[j] > 0) *
presence_penalty + ...`` with ``c[j]`` the times token ``j`` was sampled so far in this completion (the prompt's
tokens are not counted), and ``logit_bias`` added as given. They are kept as one offset row, changed only at the
token just picked, so a step costs one addition over the vocabulary; a sampler without them runs as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clawdbot.exceptions import InvalidRequestError
from clawdbot.inference.openai_wire import LOGIT_BIAS_BOUND, MAX_TOP_LOGPROBS, PENALTY_BOUND

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np

    from clawdbot.inference.types import GenerationParams

#: One recorded pick (``Sampler.records``): the token, its log probability, and the likeliest tokens with theirs.
LogprobRecord = tuple[int, float, tuple[tuple[int, float], ...]]
#: Candidates sorted first when looking for the top-p nucleus (see ``Sampler.__call__``).
_PARTIAL_SORT = 64
#: Tokens per block when drawing from the whole vocabulary (see :func:`draw`).
_BLOCK = 64


class Sampler:
    """Picks token ids from logits; not shared between requests."""

    __slots__ = ("_bias", "_frequency", "_offsets", "_presence", "_record", "_rng", "_seen", "adjusts", "greedy",
                 "records", "temperature", "top_p")

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None, *,
                 presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                 logit_bias: Iterable[tuple[int, float]] = (), logprobs: int | None = None) -> None:
        import numpy as np

        if not temperature >= 0:  # also rejects NaN
            raise InvalidRequestError(f"temperature must be >= 0, got {temperature}", param="temperature")
        if not 0 < top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {top_p}", param="top_p")
        for name, value in (("presence_penalty", presence_penalty), ("frequency_penalty", frequency_penalty)):
            if not -PENALTY_BOUND <= value <= PENALTY_BOUND:
                raise InvalidRequestError(f"{name} must be between {-PENALTY_BOUND:g} and {PENALTY_BOUND:g}, got "
                                          f"{value}", param=name)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self._presence = float(presence_penalty)
        self._frequency = float(frequency_penalty)
        self._bias = tuple((int(token), float(bias)) for token, bias in logit_bias)
        for token, bias in self._bias:
            if token < 0 or not -LOGIT_BIAS_BOUND <= bias <= LOGIT_BIAS_BOUND:
                raise InvalidRequestError(f"logit_bias: token {token} with bias {bias} is out of range",
                                          param="logit_bias")
        if logprobs is not None and not 0 <= logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidRequestError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {logprobs}",
                                      param="top_logprobs")
        self._record = logprobs
        #: With ``logprobs``: ``(token, log probability, ((alternative, log probability), ...))`` per pick, the
        #: alternatives the ``logprobs`` likeliest tokens, most likely first; from the model's own logits (before
        #: temperature, penalties and biases), as vLLM reports them by default.
        self.records: list[LogprobRecord] = []
        #: Whether logits are adjusted before the pick (penalties or biases).
        self.adjusts = bool(self._presence or self._frequency or self._bias)
        #: A pure argmax: what the engine may do itself on the logits row (``DecoderRun.decode``).
        self.greedy = self.temperature == 0 and not self.adjusts and logprobs is None
        self._offsets: np.ndarray | None = None  # made at the first pick, when the vocabulary's size is known
        self._seen: set[int] = set()
        self._rng = np.random.default_rng(seed)

    @classmethod
    def for_params(cls, params: GenerationParams) -> Sampler:
        """The sampler a request's :class:`~clawdbot.inference.types.GenerationParams` ask for."""
        return cls(params.temperature, params.top_p, params.seed, presence_penalty=params.presence_penalty,
                   frequency_penalty=params.frequency_penalty, logit_bias=params.logit_bias, logprobs=params.logprobs)

    def __call__(self, logits: np.ndarray) -> int:
        """The next token for a 1-D logits row (any float dtype)."""
        if self.greedy:  # the hot path of a greedy decode loop: nothing else
            return int(logits.argmax())
        import numpy as np

        if self.adjusts:
            adjusted = logits.astype(np.float32) + self._offset_row(len(logits))
            token = int(adjusted.argmax()) if self.temperature == 0 else self._sample(adjusted)
            self._picked(token)
        elif self.temperature == 0:  # greedy, recording log probabilities
            token = int(logits.argmax())
        else:
            token = self._sample(logits.astype(np.float32))
        if self._record is not None:
            self._log(logits, token)
        return token

    def _log(self, logits: np.ndarray, token: int) -> None:
        """Record ``token``'s log probability, and the likeliest tokens', under the softmax of ``logits``."""
        import numpy as np

        row = logits.astype(np.float64)
        peak = row.max()
        row -= peak + np.log(np.exp(row - peak).sum())
        top: tuple[tuple[int, float], ...] = ()
        if self._record:
            best = np.argpartition(row, -self._record)[-self._record:] if self._record < len(row) else np.arange(
                len(row))
            best = best[np.argsort(-row[best], kind="stable")]
            top = tuple((int(i), float(row[i])) for i in best)
        self.records.append((token, float(row[token]), top))

    def _offset_row(self, vocab: int) -> np.ndarray:
        offsets = self._offsets
        if offsets is None:
            import numpy as np

            offsets = self._offsets = np.zeros(vocab, dtype=np.float32)
            for token, bias in self._bias:
                if token >= vocab:
                    raise InvalidRequestError(
                        f"logit_bias: token {token} is not in the model's vocabulary of {vocab} tokens",
                        param="logit_bias")
                offsets[token] += bias
        return offsets

    def _picked(self, token: int) -> None:
        """Count ``token`` as sampled: its next logits are penalized once more (and by the presence penalty once)."""
        assert self._offsets is not None
        penalty = self._frequency
        if token not in self._seen:
            self._seen.add(token)
            penalty += self._presence
        if penalty:
            self._offsets[token] -= penalty

    def _sample(self, scaled: np.ndarray) -> int:
        """Temperature + nucleus sampling over a float32 logits row of its own (changed in place)."""
        import numpy as np

        scaled *= np.float32(1.0 / self.temperature)
        scaled -= scaled.max()
        probs = np.exp(scaled, out=scaled)
        if self.top_p < 1.0:
            # Smallest set of most likely tokens whose mass reaches top_p (the token crossing it included).
            # Sorting the whole vocabulary per token is the slow part; the nucleus is usually among the few
            # most likely tokens, so sort those first and fall back to a full sort only when it is not.
            target = self.top_p * float(probs.sum())
            order = None
            if len(probs) > _PARTIAL_SORT:
                head = np.argpartition(probs, -_PARTIAL_SORT)[-_PARTIAL_SORT:]
                if float(probs[head].sum()) >= target:
                    order = head[np.argsort(probs[head])[::-1]]
            if order is None:
                order = np.argsort(probs)[::-1]
            cumulative = np.cumsum(probs[order])
            keep = min(int(np.searchsorted(cumulative, target)) + 1, len(order))
            order = order[:keep]
            cumulative = cumulative[:keep]
            pick = int(np.searchsorted(cumulative, self._rng.random() * cumulative[-1], side="right"))
            return int(order[min(pick, keep - 1)])
        return draw(probs, self._rng.random())


def draw(probs: np.ndarray, u: float) -> int:
    """The token whose share of the cumulative mass holds ``u`` (in [0, 1)) of it: inverse-CDF sampling over
    unnormalized ``probs``, as ``searchsorted(cumsum(probs), u * total, side="right")`` finds it.

    Why in blocks: numpy's ``cumsum`` runs one element at a time (~15 us over the shipped model's 4,096 tokens
    here, three quarters of a sampled token's Python cost, when a decode step is ~180 us), while a sum runs
    vectorized. So the mass of each block of :data:`_BLOCK` tokens is summed at once, the block holding ``u`` is
    found among the blocks' running totals, and only that block is accumulated token by token (~6 us in all).
    The sums are added in another order than one running total adds them, so a ``u`` within rounding of a
    boundary between two tokens may pick the other one; the distribution is the same.
    """
    import numpy as np

    n = len(probs)
    if n <= 2 * _BLOCK:
        return _draw_in_one_total(probs, u)
    starts = _block_starts(n)
    totals = np.cumsum(np.add.reduceat(probs, starts))
    target = u * float(totals[-1])
    block = min(int(totals.searchsorted(target, side="right")), len(starts) - 1)
    start = int(starts[block])
    inside = np.cumsum(probs[start:start + _BLOCK])
    index = int(inside.searchsorted(target - (float(totals[block - 1]) if block else 0.0), side="right"))
    if index < len(inside):
        return start + index
    # Rounding put the target past the block's own running total: one running total over all decides.
    return _draw_in_one_total(probs, u)


def _draw_in_one_total(probs: np.ndarray, u: float) -> int:
    """:func:`draw` with one running total over the whole vocabulary (a small one, or a block missed by rounding)."""
    import numpy as np

    cumulative = np.cumsum(probs)
    return min(int(cumulative.searchsorted(u * cumulative[-1], side="right")), len(probs) - 1)


_starts_cache: dict[int, np.ndarray] = {}


def _block_starts(n: int) -> np.ndarray:
    """The first index of each block of a vocabulary of ``n`` tokens (made once per size)."""
    starts = _starts_cache.get(n)
    if starts is None:
        import numpy as np

        starts = _starts_cache[n] = np.arange(0, n, _BLOCK)
    return starts
