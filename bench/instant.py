"""An inference backend that answers at once: what the gateway costs, with the model taken out.

It counts prompt tokens with the real tokenizer bundle of the model (chat template + tokenizer), exactly as the
SageMaker backend does on Lambda, because fitting history into the context window is part of the gateway's work;
only generation is replaced by a canned reply with a fixed token count.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from clawdbot.inference.base import InferenceBackend
from clawdbot.inference.types import Completion, StreamDelta

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from clawdbot.inference.types import ChatMessage, GenerationParams

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "models" / "clawdbot-tiny-chat"
#: A typical short chat reply (about 40 tokens of the shipped tokenizer).
REPLY = "Sure! Pack layers, a warm jacket, good boots, water, snacks and a map. Check the weather before you go."
REPLY_TOKENS = 40


class InstantBackend(InferenceBackend):
    """Real prompt-token counting, instant canned generation; thread-safe like the bundle it wraps."""

    def __init__(self, model_dir: Path = MODEL_DIR, *, reply: str = REPLY, reply_tokens: int = REPLY_TOKENS,
                 stream_pieces: int = 8) -> None:
        from clawdbot.inference.tokenizer_bundle import TokenizerBundle

        self.bundle = TokenizerBundle(model_dir)
        self.reply = reply
        self.reply_tokens = reply_tokens
        words = reply.split(" ")
        step = max(1, len(words) // stream_pieces)
        self.pieces = [" ".join(words[i:i + step]) + (" " if i + step < len(words) else "")
                       for i in range(0, len(words), step)]

    @property
    def model_id(self) -> str:
        return self.bundle.model_id

    @property
    def context_length(self) -> int:
        return self.bundle.context_length

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self.bundle.count_prompt_tokens(messages)

    def _completion_tokens(self, params: GenerationParams) -> int:
        return self.reply_tokens if params.max_tokens is None else min(self.reply_tokens, params.max_tokens)

    def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        """No prompt encoding here: a remote model encodes on its side, and the gateway already counted."""
        return Completion(text=self.reply, finish_reason="stop", prompt_tokens=0,
                          completion_tokens=self._completion_tokens(params))

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[StreamDelta]:
        for piece in self.pieces[:-1]:
            yield StreamDelta(text=piece)
        yield StreamDelta(text=self.pieces[-1], finish_reason="stop",
                          completion_tokens=self._completion_tokens(params))
