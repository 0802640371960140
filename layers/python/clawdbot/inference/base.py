"""The contract every inference engine implements.

The API and the session layer talk only to :class:`InferenceBackend`; engines (in-process ONNX Runtime, a
SageMaker endpoint) override the few primitives below. ``generate`` is derived from ``stream`` so an engine
only has to implement streaming, but may override ``generate`` when a non-streaming path is cheaper.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from clawdbot.inference.types import Completion, StreamDelta

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from clawdbot.inference.logprobs import TokenLogprob
    from clawdbot.inference.token_ids import TokenIdStream
    from clawdbot.inference.types import ChatMessage, GenerationParams


class InferenceBackend(ABC):
    """A chat model. Implementations must be safe to call from several threads at once."""

    @property
    @abstractmethod
    def model_id(self) -> str:
        """The id shown in ``/v1/models`` and in responses."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Maximum prompt + completion tokens the model accepts."""

    @abstractmethod
    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens the rendered chat prompt for ``messages`` takes (chat template included).

        The session layer calls this to decide how much history fits; it must agree with what
        ``stream``/``generate`` report as ``prompt_tokens``.
        """

    @abstractmethod
    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[StreamDelta]:
        """Yield text pieces as they are decoded; the last delta carries finish reason and token counts.

        Raises ``ContextLengthExceededError`` before yielding anything if the prompt cannot fit.
        """

    def stream_ids(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenIdStream | None:
        """The completion as token ids, for a caller that makes the text on another thread
        (``clawdbot.inference.token_ids``); ``None`` where this backend (or these parameters) streams text only,
        and the caller uses :meth:`stream`. Validates eagerly, as :meth:`stream` does."""
        return None

    def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        """Whole completion at once (default: drain :meth:`stream`)."""
        pieces: list[str] = []
        logprobs: list[TokenLogprob] | None = [] if params.logprobs is not None else None
        last = StreamDelta(text="")
        for delta in self.stream(messages, params):
            pieces.append(delta.text)
            if logprobs is not None and delta.logprobs:
                logprobs.extend(delta.logprobs)
            last = delta
        return Completion(
            text="".join(pieces),
            finish_reason=last.finish_reason or "stop",
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            cached_tokens=last.cached_tokens,
            model_session=last.model_session,
            logprobs=tuple(logprobs) if logprobs is not None else None,
        )

    @property
    def generation_slots(self) -> int | None:
        """Generations this backend runs at once in this process, ``None`` where it does not run them here (a
        remote endpoint). The local server admits that many chat turns at a time (``clawdbot.traffic.install``)."""
        return None

    def prime(self) -> None:  # noqa: B027 - optional hook
        """Make now what the first call would make on demand (clients): a SnapStart init calls it, so the
        snapshot holds it and a restored environment's first request does not pay for it. A no-op by default."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (sessions, clients). Optional."""
