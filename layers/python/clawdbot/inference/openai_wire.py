"""OpenAI chat-completion JSON <-> the inference contract's plain types (stdlib only).

The SageMaker container speaks OpenAI's chat shape on ``/invocations`` and the Lambda-side
:class:`~clawdbot.inference.sagemaker.SageMakerBackend` speaks it to the container, so both ends encode and
decode through this one module: a field renamed on one side cannot silently drift from the other. Streaming uses
OpenAI's server-sent events (``data: {chunk}\\n\\n`` ... ``data: [DONE]\\n\\n``); :class:`SSEDecoder` reassembles
them from byte pieces cut anywhere (SageMaker's ``PayloadPart`` events do not respect event or UTF-8 boundaries).
"""

from __future__ import annotations

import codecs
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clawdbot.exceptions import ClawdbotError, InvalidRequestError, ServiceUnavailableError
from clawdbot.inference.exceptions import (
    ContextLengthExceededError,
    UpstreamError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
)
from clawdbot.inference.types import ChatMessage, Completion, GenerationParams

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from clawdbot.inference.logprobs import TokenLogprob
    from clawdbot.inference.types import FinishReason

#: The terminating server-sent event of an OpenAI stream.
SSE_DONE = b"data: [DONE]\n\n"
#: OpenAI accepts at most this many stop sequences.
MAX_STOP_SEQUENCES = 4
#: OpenAI's bounds of ``presence_penalty``/``frequency_penalty`` and of a ``logit_bias`` value.
PENALTY_BOUND = 2.0
LOGIT_BIAS_BOUND = 100.0
#: OpenAI's bound of ``top_logprobs``.
MAX_TOP_LOGPROBS = 20
#: At most this many ``logit_bias`` entries (OpenAI documents none; a bound keeps one request's offset row cheap).
MAX_LOGIT_BIAS_ENTRIES = 1024
_FINISH_REASONS: frozenset[str] = frozenset({"stop", "length"})


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat-completion request, reduced to what an :class:`InferenceBackend` needs."""

    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    stream: bool = False
    #: ``stream_options.include_usage``: send a last chunk with ``usage`` and empty ``choices``.
    include_usage: bool = False
    model: str | None = None


# --------------------------------------------------------------------------------------------- requests
def parse_chat_request(body: object) -> ChatRequest:
    """Validate an OpenAI chat request body; raise :class:`InvalidRequestError` naming the bad field.

    Unknown fields are ignored (OpenAI clients send many); fields that ask for what we do not implement (``n`` > 1,
    :func:`check_supported`) are refused rather than ignored.
    """
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    messages = _parse_messages(body.get("messages"))
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequestError("Only n=1 is supported.", param="n")
    check_supported(body)
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise InvalidRequestError("max_tokens must be a positive integer.", param="max_tokens")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise InvalidRequestError("seed must be an integer.", param="seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream must be a boolean.", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidRequestError("stream_options must be an object.", param="stream_options", code="invalid_value")
    model = body.get("model")
    return ChatRequest(
        messages=messages,
        params=GenerationParams(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=_parse_stop(body),
            presence_penalty=_number(body, "presence_penalty", 0.0, -PENALTY_BOUND, PENALTY_BOUND),
            frequency_penalty=_number(body, "frequency_penalty", 0.0, -PENALTY_BOUND, PENALTY_BOUND),
            logit_bias=parse_logit_bias(body.get("logit_bias")),
            logprobs=parse_logprobs_request(body),
        ),
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        model=model if isinstance(model, str) else None,
    )


def chat_request_body(
    messages: Sequence[ChatMessage], params: GenerationParams, *, model: str, stream: bool
) -> dict[str, Any]:
    """The OpenAI request body for ``messages``/``params`` (the inverse of :func:`parse_chat_request`).

    Streaming requests ask for the usage chunk: the contract's last delta must carry the token counts.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stream": stream,
    }
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
    if params.presence_penalty:
        body["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        body["frequency_penalty"] = params.frequency_penalty
    if params.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
    if params.logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = params.logprobs
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def check_supported(body: Mapping[str, Any]) -> None:
    """Refuse what a text-only model without tools cannot honour, as OpenAI refuses what a model does not support
    (400, ``unsupported_parameter`` or ``unsupported_value``): ignored, each would hand the client an answer it
    did not ask for and cannot tell apart from one it did (prose for a JSON schema, no tool call where one is
    required, text for audio). Absent, null, false and the defaults (``response_format`` of type ``text``,
    ``tool_choice``/``function_call`` of ``none``, text ``modalities``) are accepted. Tools offered with
    ``tool_choice: none`` are accepted too: the model is not to call them, and it does not.
    """
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else response_format
        if kind != "text":
            raise InvalidRequestError(
                f"Unsupported value: 'response_format' does not support {json.dumps(kind)} with this model. Only "
                "the type 'text' is supported.", param="response_format", code="unsupported_value")
    for tools, choice in (("tools", "tool_choice"), ("functions", "function_call")):
        chosen = body.get(choice)
        if chosen not in (None, "none"):
            raise InvalidRequestError(
                f"Unsupported value: '{choice}' does not support {json.dumps(chosen)} with this model: it cannot "
                f"call tools. Only 'none' is supported.", param=choice, code="unsupported_value")
        if body.get(tools) and chosen is None:
            raise InvalidRequestError(
                f"Unsupported parameter: '{tools}' is not supported with this model: it cannot call tools. Send "
                f"none, or '{choice}': 'none'.", param=tools, code="unsupported_parameter")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise InvalidRequestError(
            f"Unsupported value: 'modalities' does not support {json.dumps(modalities)} with this model. Only "
            "[\"text\"] is supported.", param="modalities", code="unsupported_value")
    if body.get("audio") is not None:
        raise InvalidRequestError("Unsupported parameter: 'audio' is not supported with this model.", param="audio",
                                  code="unsupported_parameter")


def parse_logprobs_request(body: Mapping[str, Any]) -> int | None:
    """``logprobs``/``top_logprobs`` as ``GenerationParams.logprobs``: ``None`` when not asked for, else how many
    alternatives to report per token (0-20; ``top_logprobs`` needs ``logprobs: true``, as at OpenAI)."""
    wanted = body.get("logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise InvalidRequestError("logprobs must be a boolean.", param="logprobs", code="invalid_value")
    top = body.get("top_logprobs")
    if top is None:
        return 0 if wanted else None
    if not _is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS:
        raise InvalidRequestError(f"top_logprobs must be an integer between 0 and {MAX_TOP_LOGPROBS}.",
                                  param="top_logprobs", code="invalid_value")
    if not wanted:
        raise InvalidRequestError("top_logprobs requires logprobs to be true.", param="top_logprobs",
                                  code="invalid_value")
    return int(top)


def parse_logit_bias(raw: object) -> tuple[tuple[int, float], ...]:
    """OpenAI's ``logit_bias`` (``{"token id": bias}``, bias in [-100, 100]) as ``(id, bias)`` pairs, ids in
    ascending order; whether each id is in the model's vocabulary is the backend's to check."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise InvalidRequestError("logit_bias must be an object mapping token ids to biases.", param="logit_bias",
                                  code="invalid_value")
    if len(raw) > MAX_LOGIT_BIAS_ENTRIES:
        raise InvalidRequestError(f"logit_bias may have at most {MAX_LOGIT_BIAS_ENTRIES} entries.",
                                  param="logit_bias", code="invalid_value")
    pairs: list[tuple[int, float]] = []
    for key, value in raw.items():
        if not isinstance(key, str) or not key.isdecimal() or not key.isascii():
            raise InvalidRequestError(f"logit_bias keys must be token ids (non-negative integers), got {key!r}.",
                                      param="logit_bias", code="invalid_value")
        if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                or not -LOGIT_BIAS_BOUND <= value <= LOGIT_BIAS_BOUND):
            raise InvalidRequestError(
                f"logit_bias values must be numbers between -{LOGIT_BIAS_BOUND:g} and {LOGIT_BIAS_BOUND:g}, got "
                f"{value!r} for token {key}.", param="logit_bias", code="invalid_value")
        pairs.append((int(key), float(value)))
    return tuple(sorted(pairs))


def _parse_messages(raw: object) -> tuple[ChatMessage, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError("messages must be a non-empty array.", param="messages")
    messages: list[ChatMessage] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("role"), str) or not item["role"]:
            raise InvalidRequestError(f"messages[{i}] must be an object with a role.", param=f"messages[{i}]")
        messages.append(ChatMessage(role=item["role"], content=_content_text(item.get("content"), i)))
    return tuple(messages)


def _content_text(content: object, index: int) -> str:
    """OpenAI content is a string or a list of parts; only text parts make sense for a text model."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequestError(
                    f"messages[{index}].content: only text parts are supported.",
                    param=f"messages[{index}].content",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRequestError(
        f"messages[{index}].content must be a string or an array of text parts.",
        param=f"messages[{index}].content",
    )


def _parse_stop(body: Mapping[str, object]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise InvalidRequestError(
            f"stop must be a non-empty string or up to {MAX_STOP_SEQUENCES} non-empty strings.", param="stop"
        )
    return tuple(stop)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: Mapping[str, object], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be a number.", param=name)
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be between {low:g} and {high:g}.", param=name)
    return float(value)


# --------------------------------------------------------------------------------------------- responses
def usage_body(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """OpenAI's usage object; ``cached_tokens``: prompt tokens served from the engine's prefix cache."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def cached_tokens_of(usage: Mapping[str, Any]) -> int:
    """``usage.prompt_tokens_details.cached_tokens``, 0 where an endpoint does not report it."""
    return int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


def completion_body(completion: Completion, *, completion_id: str, model: str, created: int) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text, "refusal": None},
                "logprobs": logprobs_body(completion.logprobs),
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": usage_body(completion.prompt_tokens, completion.completion_tokens, completion.cached_tokens),
    }


def chunk_body(
    *,
    completion_id: str,
    model: str,
    created: int,
    delta: Mapping[str, str] | None = None,
    finish_reason: FinishReason | None = None,
    usage: Mapping[str, Any] | None = None,
    include_usage: bool = False,
    logprobs: Sequence[TokenLogprob] | None = None,
) -> dict[str, Any]:
    """An OpenAI ``chat.completion.chunk``; with ``usage`` it is the final usage-only chunk (no choices)."""
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": []
        if usage is not None
        else [{"index": 0, "delta": dict(delta or {}), "logprobs": logprobs_body(logprobs),
               "finish_reason": finish_reason}],
    }
    if usage is not None or include_usage:
        chunk["usage"] = dict(usage) if usage is not None else None
    return chunk


def parse_completion_body(body: object) -> Completion:
    """Read an OpenAI ``chat.completion`` object; a malformed one is the upstream's fault (502)."""
    try:
        choice = body["choices"][0]  # type: ignore[index]
        usage = body["usage"]  # type: ignore[index]
        return Completion(
            text=choice["message"]["content"] or "",
            finish_reason=_finish_reason(choice.get("finish_reason")) or "stop",
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
            cached_tokens=cached_tokens_of(usage),
            logprobs=parse_logprobs(choice.get("logprobs")),
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UpstreamError(f"The model endpoint returned a malformed chat completion ({exc!r}).") from exc


def logprobs_body(entries: Sequence[TokenLogprob] | None) -> dict[str, Any] | None:
    """OpenAI's ``choices[0].logprobs`` for ``entries`` (``None`` where none were asked for)."""
    if entries is None:
        return None
    return {"content": [
        {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.bytes),
         "top_logprobs": [{"token": top.token, "logprob": top.logprob, "bytes": list(top.bytes)}
                          for top in entry.top_logprobs]}
        for entry in entries], "refusal": None}


def parse_logprobs(body: Any) -> tuple[TokenLogprob, ...] | None:
    """The inverse of :func:`logprobs_body` (``None`` for ``null``)."""
    if body is None:
        return None
    from clawdbot.inference.logprobs import TokenLogprob, TopLogprob

    return tuple(
        TokenLogprob(str(item["token"]), float(item["logprob"]), tuple(int(b) for b in item.get("bytes") or ()),
                     tuple(TopLogprob(str(top["token"]), float(top["logprob"]),
                                      tuple(int(b) for b in top.get("bytes") or ()))
                           for top in item.get("top_logprobs") or ()))
        for item in body.get("content") or ())


def _finish_reason(value: object) -> FinishReason | None:
    if value is None:
        return None
    if value not in _FINISH_REASONS:
        raise ValueError(f"unknown finish_reason {value!r}")
    return value  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------- streaming
def sse_event(payload: Mapping[str, Any]) -> bytes:
    """One server-sent event line as OpenAI writes it (compact JSON, non-ASCII kept as UTF-8)."""
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """What one decoded ``chat.completion.chunk`` contributes to the contract's :class:`StreamDelta`."""

    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] | None = None


def parse_chunk(payload: str) -> StreamChunk | None:
    """Decode one SSE ``data:`` payload; ``None`` for ``[DONE]``. An ``{"error": ...}`` event is raised."""
    if payload == "[DONE]":
        return None
    try:
        chunk = json.loads(payload)
        if "error" in chunk:
            raise error_from_body(502, chunk)
        text, finish, logprobs = "", None, None
        if chunk.get("choices"):
            choice = chunk["choices"][0]
            text = (choice.get("delta") or {}).get("content") or ""
            finish = _finish_reason(choice.get("finish_reason"))
            logprobs = parse_logprobs(choice.get("logprobs"))
        usage = chunk.get("usage")
        if usage:
            return StreamChunk(text, finish, int(usage["prompt_tokens"]), int(usage["completion_tokens"]),
                               cached_tokens_of(usage), logprobs)
        return StreamChunk(text, finish, logprobs=logprobs)
    except ClawdbotError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise UpstreamError(f"The model endpoint streamed a malformed chunk ({exc!r}).") from exc


class SSEDecoder:
    """Incremental server-sent-events decoder: feed bytes cut anywhere, get whole ``data`` payloads back.

    Only ``data:`` fields matter here (OpenAI sends no ``event:``/``id:``); multi-line data is joined with
    newlines as the SSE spec says, and CRLF line endings are accepted.
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""
        self._data: list[str] = []

    def feed(self, piece: bytes) -> Iterator[str]:
        self._buffer += self._utf8.decode(piece)
        while True:
            newline = self._buffer.find("\n")
            if newline < 0:
                return
            line, self._buffer = self._buffer[:newline].rstrip("\r"), self._buffer[newline + 1 :]
            if line == "":
                if self._data:
                    yield "\n".join(self._data)
                    self._data = []
            elif line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))

    def close(self) -> Iterator[str]:
        """Flush an event the stream ended without a blank line after (lenient, like browsers)."""
        tail = self._buffer + self._utf8.decode(b"", final=True)
        self._buffer = ""
        if tail.startswith("data:"):
            self._data.append(tail[5:].removeprefix(" "))
        if self._data:
            yield "\n".join(self._data)
            self._data = []


# --------------------------------------------------------------------------------------------- errors
def error_body(exc: ClawdbotError) -> dict[str, Any]:
    """OpenAI's error object for one of our errors."""
    return {"error": {"message": exc.message, "type": exc.error_type, "param": exc.param, "code": exc.code}}


_ERRORS_BY_CODE: dict[str, type[ClawdbotError]] = {
    ContextLengthExceededError.code or "": ContextLengthExceededError,
    UpstreamThrottledError.code or "": UpstreamThrottledError,
    UpstreamTimeoutError.code or "": UpstreamTimeoutError,
}


def error_from_body(status: int, body: object) -> ClawdbotError:
    """Rebuild our error from an OpenAI error object a model container sent with HTTP ``status``.

    Client mistakes (4xx) keep their meaning so the API can answer 400 with the container's message; anything
    else the container reports is an upstream failure (502) from the API's point of view.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    message = str(error.get("message") or f"The model endpoint answered HTTP {status}.")
    code = error.get("code") if isinstance(error.get("code"), str) else None
    param = error.get("param") if isinstance(error.get("param"), str) else None
    known = _ERRORS_BY_CODE.get(code or "")
    if known is not None:
        return known(message, param=param)
    if 400 <= status < 500 and status != 429:
        return InvalidRequestError(message, param=param, code=code)
    if status == 429:
        return UpstreamThrottledError(message)
    if status == 503:
        return ServiceUnavailableError(message)
    return UpstreamError(message)


__all__ = [
    "SSE_DONE",
    "ChatRequest",
    "SSEDecoder",
    "StreamChunk",
    "cached_tokens_of",
    "chat_request_body",
    "chunk_body",
    "completion_body",
    "error_body",
    "error_from_body",
    "parse_chat_request",
    "parse_chunk",
    "parse_completion_body",
    "sse_event",
    "usage_body",
]
