"""``OnnxBackend``: the :class:`InferenceBackend` that runs a model folder in-process with ONNX Runtime.

It turns chat messages into prompt ids (chat template + tokenizer), enforces the context window, and turns the
engine's token stream into text deltas: incremental detokenization, stop strings, EOS, ``finish_reason`` and
token counts. The token loop itself is :class:`~clawdbot.inference.onnx.engine.DecoderEngine`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from clawdbot.exceptions import InvalidRequestError
from clawdbot.inference.base import InferenceBackend
from clawdbot.inference.exceptions import ContextLengthExceededError
from clawdbot.inference.onnx.model_folder import ModelFolder
from clawdbot.inference.onnx.token_text import TokenTexts
from clawdbot.inference.types import Completion, StreamDelta

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from tokenizers import Tokenizer

    from clawdbot.config.settings import Settings
    from clawdbot.inference.onnx.detokenizer import IncrementalDetokenizer
    from clawdbot.inference.onnx.engine import DecoderEngine
    from clawdbot.inference.onnx.runtime import RuntimeOptions
    from clawdbot.inference.onnx.sampling import LogprobRecord
    from clawdbot.inference.token_ids import TokenIdStream
    from clawdbot.inference.tokenizer_bundle import TokenizerBundle
    from clawdbot.inference.types import ChatMessage, FinishReason, GenerationParams

logger = logging.getLogger(__name__)

#: Without stop strings, tokens that come faster than this apart are detokenized in groups (``_stream``) ...
_FAST_TOKEN_S = 0.001
#: ... of at most this long: a frame of a 60 Hz display, the pace at which an HTTP stream writes
#: (``clawdbot.api.streaming.TOKEN_COALESCE_S``), so a write carries one group rather than three. A group costs
#: the decode loop 0.07-0.14 ms here (its text, delta, event and hand-off run cache-cold after ONNX Runtime):
#: a streamed 128-token turn of the shipped model made 5-6 groups instead of 14, and its time over the
#: non-streamed turn's went from 2.1 to 1.8 ms (``bench.api_generation``, three runs of each, alternating). The
#: text reaches the reader no later than the write that carries it would have gone out anyway. (The chat API's
#: own stream now takes token ids instead, ``stream_ids``; text streams serve the SageMaker container and
#: whoever else iterates ``stream``.)
_GROUP_S = 1 / 60


@dataclass(frozen=True, slots=True)
class _Prepared:
    prompt_ids: list[int]
    max_new_tokens: int
    params: GenerationParams


class OnnxBackend(InferenceBackend):
    """A model folder served in-process. Load once per process; safe to call from many threads."""

    def __init__(self, model_dir: str | Path, *, model_id: str | None = None,
                 options: RuntimeOptions | None = None) -> None:
        from clawdbot.inference.onnx.engine import DecoderEngine
        from clawdbot.inference.tokenizer_bundle import TokenizerBundle  # it imports this package

        self.folder = ModelFolder.load(model_dir)
        #: The prompt side (template, tokenizer, cached pieces): the same as a Lambda's tokenizer bundle.
        self.prompts: TokenizerBundle = TokenizerBundle(self.folder)
        self.tokenizer: Tokenizer = self.prompts.tokenizer
        self.engine: DecoderEngine = DecoderEngine.from_folder(self.folder, options)
        self._token_texts = TokenTexts(self.tokenizer)  # for log probabilities
        self.eos_token_ids = frozenset(self._eos_ids())
        self._model_id = model_id or self.folder.path.resolve().name
        self._context_length = self.folder.context_length
        logger.debug("loaded %s: context %d, eos %s", self._model_id, self._context_length,
                     sorted(self.eos_token_ids))

    @classmethod
    def from_folder(cls, model_dir: str | Path, **kwargs: object) -> OnnxBackend:
        return cls(model_dir, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: Settings) -> OnnxBackend:
        from clawdbot.inference.onnx.runtime import RuntimeOptions

        return cls(settings.model_dir, model_id=settings.model_name,
                   options=RuntimeOptions(prefix_cache_bytes=settings.prefix_cache_mb << 20,
                                          max_generations=settings.generation_concurrency))

    def _eos_ids(self) -> list[int]:
        ids = list(self.folder.eos_token_ids())
        eos_text = self.folder.special_token("eos_token")
        if eos_text is not None:
            token_id = self.tokenizer.token_to_id(eos_text)
            if token_id is not None and token_id not in ids:
                ids.append(token_id)
        return ids

    # ------------------------------------------------------------------ contract
    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def generation_slots(self) -> int:
        return self.engine.max_generations

    def encode_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        return self.prompts.encode_prompt(messages)

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self.prompts.count_prompt_tokens(messages)

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[StreamDelta]:
        # Validate eagerly (context window, parameters): the caller sees the error before any delta.
        prepared = self._prepare(self.encode_prompt(messages), params)
        return self._stream(prepared)

    def stream_ids(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenIdStream | None:
        """The ids of the completion, with this model's detokenizer; ``None`` with stop strings, which are matched
        on text as each token comes, and with log probabilities, which travel with the text (:meth:`stream`)."""
        if params.stop or params.logprobs is not None:
            return None
        from clawdbot.inference.onnx.detokenizer import IncrementalDetokenizer
        from clawdbot.inference.onnx.engine import RunReport
        from clawdbot.inference.onnx.sampling import Sampler
        from clawdbot.inference.token_ids import TokenIdStream

        prepared = self._prepare(self.encode_prompt(messages), params)
        tokenizer = self.tokenizer
        report = RunReport()
        tokens = self.engine.generate(prepared.prompt_ids, max_new_tokens=prepared.max_new_tokens,
                                      sampler=Sampler.for_params(params), report=report)
        return TokenIdStream(tokens, eos_ids=self.eos_token_ids, prompt_tokens=len(prepared.prompt_ids),
                             new_detokenizer=lambda: IncrementalDetokenizer(tokenizer), report=report)

    def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        """Whole completion at once. Without stop strings, the text is decoded after the last token rather than
        between tokens: the same detokenizer over the same ids, so the same text, but the decode loop runs
        uninterrupted (interleaving the tokenizer's work with ONNX Runtime's cost ~9 us per token here, 1.4 us
        apart: caches)."""
        stream = self.stream_ids(messages, params)
        if stream is None:  # stop strings (matched on text as each token comes), log probabilities
            return super().generate(messages, params)
        ids = list(stream)
        return Completion(text=stream.new_detokenizer().extend(ids), finish_reason=stream.finish_reason,
                          prompt_tokens=stream.prompt_tokens, completion_tokens=stream.completion_tokens,
                          cached_tokens=stream.cached_tokens)

    # ------------------------------------------------------------------ generation
    def _prepare(self, prompt_ids: list[int], params: GenerationParams) -> _Prepared:
        n = len(prompt_ids)
        if params.max_tokens is not None and params.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be at least 1, got {params.max_tokens}",
                                      param="max_tokens")
        room = self._context_length - n
        wanted = params.max_tokens if params.max_tokens is not None else max(room, 1)
        if wanted > room:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {self._context_length} tokens. However, you requested "
                f"{n + wanted} tokens ({n} in the messages, {wanted} in the completion). Please reduce the "
                "length of the messages or completion.",
                param="messages",
            )
        vocab = self.engine.vocab_size
        for token, _ in params.logit_bias:
            if not 0 <= token < vocab:
                raise InvalidRequestError(
                    f"Invalid value for 'logit_bias': token {token} is not in the model's vocabulary of {vocab} "
                    "tokens.", param="logit_bias", code="invalid_value")
        return _Prepared(prompt_ids, wanted, params)

    def _stream(self, prepared: _Prepared) -> Iterator[StreamDelta]:
        """One delta per token that completes text, or per group of tokens. Without stop strings, the tokens of a
        model faster than ``_FAST_TOKEN_S`` are detokenized in groups, at most ``_GROUP_S`` after the first of
        them, and a group is one delta with their text: the same text a little later, but the decode loop runs
        uninterrupted (the tokenizer's work interleaved with ONNX Runtime's cost ~9 us per token here, 1.4 us in
        a row: caches), and what a delta costs downstream (the turn's bookkeeping, its SSE event, the hand-off to
        the event loop: ~25 us here) is paid per group, not per token. The first token and the tokens of a
        slower model come one by one; a stop string must be seen at its token, so with one they always do."""
        from clawdbot.inference.onnx.detokenizer import IncrementalDetokenizer
        from clawdbot.inference.onnx.engine import RunReport
        from clawdbot.inference.onnx.sampling import Sampler
        from clawdbot.inference.onnx.stopping import StopMatcher

        params = prepared.params
        sampler = Sampler.for_params(params)
        detokenizer = IncrementalDetokenizer(self.tokenizer)
        stopper = StopMatcher(params.stop)
        grouped = not params.stop
        eos = self.eos_token_ids
        finish: FinishReason = "length"
        produced = 0
        content = 0  # tokens of the text (the end-of-sequence token is not)
        pending: list[int] = []  # grouped tokens not yet detokenized
        flushed = previous = float("-inf")
        report = RunReport()
        # With log probabilities, each delta carries those of the tokens taken since the previous delta.
        logged = 0 if params.logprobs is not None else None
        sent = 0  # bytes of the text yielded so far (with log probabilities)

        def carrying(delta: StreamDelta) -> StreamDelta:
            nonlocal logged, sent
            if logged is None:
                return delta
            sent += len(delta.text.encode())
            upto = content
            if stopper.stopped:  # the tokens wholly inside the stop string made no text of the reply
                upto = self._tokens_starting_before(sampler.records, logged, content, sent)
            records, logged = sampler.records[logged:upto], content
            return replace(delta, logprobs=self._token_texts.logprobs(records))

        tokens = self.engine.generate(prepared.prompt_ids, max_new_tokens=prepared.max_new_tokens,
                                      sampler=sampler, report=report)
        try:
            for token in tokens:
                produced += 1
                if token in eos:
                    finish = "stop"
                    break
                content += 1
                if grouped:
                    pending.append(token)
                    now = time.perf_counter()
                    hold = now - previous < _FAST_TOKEN_S and now - flushed < _GROUP_S
                    previous = now
                    if not hold:
                        flushed = now
                        for delta in _deltas(detokenizer, pending):
                            yield carrying(delta)
                    continue
                piece = detokenizer.step(token)
                if piece:
                    text = stopper.feed(piece)
                    if text:
                        yield carrying(StreamDelta(text=text))
                    if stopper.stopped:
                        finish = "stop"
                        break
        finally:
            tokens.close()
        for delta in _deltas(detokenizer, pending):
            yield carrying(delta)
        tail = "" if stopper.stopped else stopper.flush()
        yield carrying(StreamDelta(text=tail, finish_reason=finish, prompt_tokens=len(prepared.prompt_ids),
                                   completion_tokens=produced, cached_tokens=report.cached_tokens))

    def _tokens_starting_before(self, records: list[LogprobRecord], start: int, end: int, sent: int) -> int:
        """The end of the tokens ``records[start:end]`` that begin within the first ``sent`` bytes of the reply
        (a token that straddles the stop string's start is one of them): their bytes laid end to end, as the
        reply's text is for a byte-level vocabulary."""
        offset = sum(len(self._token_texts.of(record[0])[1]) for record in records[:start])
        index = start
        while index < end and offset < sent:
            offset += len(self._token_texts.of(records[index][0])[1])
            index += 1
        return index

    def close(self) -> None:
        """Drop the session; the backend is unusable afterwards."""
        self.engine = None  # type: ignore[assignment]


def _deltas(detokenizer: IncrementalDetokenizer, pending: list[int]) -> Iterator[StreamDelta]:
    """The text of ``pending`` tokens (which it empties) as one delta, none if they complete no text yet."""
    text = detokenizer.extend(pending)
    pending.clear()
    if text:
        yield StreamDelta(text=text)
