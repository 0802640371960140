"""A completion streamed as token ids, its text made by whoever needs it, on their own thread.

A streamed turn of a fast model on a CPU spends a noticeable share of its decoding thread on text: detokenizing,
wrapping and handing over each group of tokens costs ~0.1 ms here, and more in the model steps that follow, since
it evicts the model's weights from the core's cache. A :class:`TokenIdStream` leaves the decoding thread only the
model's loop and the end-of-sequence check; the HTTP stream turns the ids into text on the event loop's thread,
when it writes, which is another core's work (``clawdbot.api.routes.chat``). Measured on the shipped model, the
two kinds of stream alternating in one server (``bench.api_generation``'s turns, 50 of each, three runs): a
128-token turn 1.0-2.1 ms shorter on average (the text stream has more slow turns; medians within the noise,
-1.1 to +0.6 ms), its decoding steps between writes as fast as a non-streamed turn's (0.63 ms here, against
0.64-0.65 with text made between them), the streamed turn ~1 ms over the non-streamed one against ~2.3. The
text is the same: a
:class:`Detokenizer` gives the same text for any cut of the ids into groups (``tests/inference/test_onnx_text.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from clawdbot.inference.types import FinishReason


class Detokenizer(Protocol):
    """Incremental detokenization: ``extend`` returns the text its ids complete (never half a character)."""

    def extend(self, token_ids: list[int]) -> str: ...


class _CachedTokens(Protocol):
    cached_tokens: int


class TokenIdStream:
    """The ids of one completion, end-of-sequence excluded, made as it is iterated (once).

    After the iteration, ``finish_reason`` and ``completion_tokens`` (the end-of-sequence token included, as the
    text stream counts them) say how it ended; stopping early closes the model's loop, as a text stream does.
    """

    __slots__ = ("_report", "_tokens", "completion_tokens", "eos_ids", "finish_reason", "new_detokenizer",
                 "prompt_tokens")

    def __init__(self, tokens: Iterator[int], *, eos_ids: frozenset[int], prompt_tokens: int,
                 new_detokenizer: Callable[[], Detokenizer], report: _CachedTokens | None = None) -> None:
        self._tokens = tokens
        self._report = report
        self.eos_ids = eos_ids
        self.prompt_tokens = prompt_tokens
        #: A fresh detokenizer for these ids: one per consumer (each keeps its own window).
        self.new_detokenizer = new_detokenizer
        self.finish_reason: FinishReason = "length"
        self.completion_tokens = 0

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens the engine did not compute again (known once the first id is made)."""
        return 0 if self._report is None else self._report.cached_tokens

    def __iter__(self) -> Iterator[int]:
        tokens, eos = self._tokens, self.eos_ids
        produced = 0
        try:
            for token in tokens:
                produced += 1
                if token in eos:
                    self.finish_reason = "stop"
                    break
                yield token
        finally:
            self.completion_tokens = produced
            tokens.close()  # type: ignore[attr-defined]  # a generator: the model's loop ends here
