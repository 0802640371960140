"""Log probabilities of a completion's tokens, as OpenAI reports them (``logprobs: true``, ``top_logprobs``).

Apart from ``clawdbot.inference.types`` and imported only where a request asks for them: every cold start imports
the types, and these two classes would add ~0.5 ms to it for a feature few requests use.
"""

from __future__ import annotations

from typing import NamedTuple


class TopLogprob(NamedTuple):
    """A token and its log probability at one position (OpenAI's ``top_logprobs`` item)."""

    token: str
    logprob: float
    #: The token's bytes (UTF-8 of its text, except where a token holds part of a character).
    bytes: tuple[int, ...]


class TokenLogprob(NamedTuple):
    """A completion token with its log probability under the model, before temperature, penalties and biases,
    and the likeliest tokens at its position (OpenAI's ``logprobs.content`` item)."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top_logprobs: tuple[TopLogprob, ...] = ()
