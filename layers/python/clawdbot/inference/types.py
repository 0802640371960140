"""Plain data passed between the API, the session layer and inference engines (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from clawdbot.inference.logprobs import TokenLogprob

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling settings. ``max_tokens=None`` means "until EOS or the context window is full"."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    #: OpenAI's penalties, each in [-2, 2]: every time a token has been sampled in this completion its logit is
    #: lowered by ``frequency_penalty``, and once it has been by ``presence_penalty`` (``Sampler``).
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: OpenAI's ``logit_bias``: ``(token id, bias in [-100, 100])`` pairs added to those tokens' logits.
    logit_bias: tuple[tuple[int, float], ...] = ()
    #: OpenAI's ``logprobs``/``top_logprobs``: ``None``, none reported; ``k`` (0-20), each completion token's log
    #: probability with the ``k`` likeliest tokens at its position.
    logprobs: int | None = None
    #: Where the conversation's last turn ran (``clawdbot.inference.model_session``: ``<id>; Expires=...``), so a
    #: backend that routes by it sends this turn to the instance holding its prefix cache; others ignore it.
    #: ``"NEW_SESSION"`` (or an expired one): a conversation that has none yet, for which such a backend opens one;
    #: ``None``: a turn nothing will follow (stateless), which needs none.
    model_session: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    #: Prompt tokens not computed again: the engine reused a finished run's cache for them (OpenAI's
    #: ``usage.prompt_tokens_details.cached_tokens``).
    cached_tokens: int = 0
    #: The model session the turn ran in (continued or opened), for the conversation's next turn; ``None`` where
    #: the backend routes no sessions.
    model_session: str | None = None
    #: Each completion token's log probability, when asked for (``GenerationParams.logprobs``).
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """One streamed piece. The last delta has ``finish_reason`` set and carries the token counts."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: dict[str, object] = field(default_factory=dict)
    cached_tokens: int = 0
    #: On the last delta: the model session the turn ran in (see :attr:`Completion.model_session`).
    model_session: str | None = None
    #: The log probabilities of the tokens this delta's text came from, when asked for.
    logprobs: tuple[TokenLogprob, ...] | None = None
