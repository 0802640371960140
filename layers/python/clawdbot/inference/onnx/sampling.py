"""Choosing the next token from a logits row: greedy, or temperature + nucleus (top-p) sampling.

Each request gets its own :class:`Sampler` (its own random generator), so a ``seed`` reproduces the same tokens
regardless of what other requests run at the same time. ``temperature == 0`` is greedy, as in OpenAI's API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clawdbot.exceptions import InvalidRequestError

if TYPE_CHECKING:
    import numpy as np

#: Candidates sorted first when looking for the top-p nucleus (see ``Sampler.__call__``).
_PARTIAL_SORT = 64


class Sampler:
    """Picks token ids from logits; not shared between requests."""

    __slots__ = ("_rng", "greedy", "temperature", "top_p")

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None) -> None:
        import numpy as np

        if not temperature >= 0:  # also rejects NaN
            raise InvalidRequestError(f"temperature must be >= 0, got {temperature}", param="temperature")
        if not 0 < top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {top_p}", param="top_p")
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.greedy = self.temperature == 0
        self._rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> int:
        """The next token for a 1-D logits row (any float dtype)."""
        if self.greedy:  # the hot path of a greedy decode loop: nothing else
            return int(logits.argmax())
        import numpy as np

        scaled = logits.astype(np.float32) * np.float32(1.0 / self.temperature)
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
        cumulative = np.cumsum(probs)
        pick = int(np.searchsorted(cumulative, self._rng.random() * cumulative[-1], side="right"))
        return min(pick, len(probs) - 1)
