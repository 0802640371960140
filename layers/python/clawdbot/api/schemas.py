"""OpenAI-shaped request and response bodies for the chat API.

Requests are validated with pydantic; responses are built as plain dicts (cheaper than model round-trips on the
hot path) by the helpers at the bottom, one place for each OpenAI object shape.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from clawdbot.exceptions import InvalidRequestError
from clawdbot.inference.openai_wire import (
    LOGIT_BIAS_BOUND,
    MAX_LOGIT_BIAS_ENTRIES,
    MAX_STOP_SEQUENCES,
    MAX_TOP_LOGPROBS,
    PENALTY_BOUND,
    check_supported,
    logprobs_body,
    parse_logit_bias,
    parse_logprobs_request,
)
from clawdbot.inference.openai_wire import usage_body as usage_dict  # one usage shape for the API and the container

if TYPE_CHECKING:
    from collections.abc import Sequence

    from clawdbot.inference.logprobs import TokenLogprob

#: The most choices (``n``) one request may ask for: each is a generation of its own, run one after another.
MAX_CHOICES = 8
#: Roles the API accepts. ``developer`` is OpenAI's newer name for ``system``.
Role = Literal["system", "developer", "user", "assistant"]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Role
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


#: A field of OpenAI's request that this server refuses unless it is absent or asks for nothing
#: (``openai_wire.check_supported``): read so that it can be refused, left out of the OpenAPI document.
_Refused = SkipJsonSchema[Any]
_REFUSED = frozenset({"response_format", "tools", "tool_choice", "functions", "function_call", "modalities",
                      "audio"})


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat completion request a text-only chat model can honour.

    Unknown fields are ignored (as many OpenAI-compatible servers do) so newer SDKs keep working. Known fields that
    ask for what the model cannot do (``_REFUSED``: JSON output, tool calls, audio) are refused
    with OpenAI's ``unsupported_parameter``/``unsupported_value`` 400s rather than ignored, as is ``n`` > 1.
    """

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, min_length=1, max_length=256)
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES, description=(
        "Choices to sample from the prompt, one generation each; more than 1 needs a stateless request that is not "
        "streamed."))
    presence_penalty: float | None = Field(default=None, ge=-PENALTY_BOUND, le=PENALTY_BOUND, description=(
        "Lowers the logit of every token already sampled in this completion, once."))
    frequency_penalty: float | None = Field(default=None, ge=-PENALTY_BOUND, le=PENALTY_BOUND, description=(
        "Lowers the logit of every token by this much per time it was sampled in this completion."))
    logit_bias: dict[str, Annotated[float, Field(ge=-LOGIT_BIAS_BOUND, le=LOGIT_BIAS_BOUND)]] | None = Field(
        default=None, max_length=MAX_LOGIT_BIAS_ENTRIES, description=(
            "Token id of the model's tokenizer (a decimal string) -> bias added to its logit."))
    logprobs: bool | None = Field(default=None, description=(
        "Return each reply token's log probability (the model's own, before temperature, penalties and biases)."))
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS, description=(
        "With logprobs: the likeliest tokens to return at each position."))
    response_format: _Refused = None
    tools: _Refused = None
    tool_choice: _Refused = None
    functions: _Refused = None
    function_call: _Refused = None
    modalities: _Refused = None
    audio: _Refused = None

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value == "":
            raise ValueError("stop must not be an empty string")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> ChatCompletionRequest:
        # These raise the API's own 400s, with the field as ``param`` (pydantic passes them through).
        if self.stream_options is not None and not self.stream:
            raise InvalidRequestError("stream_options is only allowed when stream is true.", param="stream_options",
                                      code="invalid_value")
        if not any(m.role in ("user", "assistant") for m in self.messages):
            raise InvalidRequestError("messages must contain at least one user or assistant message.",
                                      param="messages", code="invalid_value")
        if not _REFUSED.isdisjoint(self.model_fields_set):  # one set operation on the hot path
            check_supported(self.__dict__)
        if self.logit_bias:
            parse_logit_bias(self.logit_bias)  # its keys: token ids
        if self.n is not None and self.n > 1 and self.stream:
            raise InvalidRequestError("Unsupported value: 'n' greater than 1 is not supported with streaming. Ask "
                                      "for the choices without 'stream', or stream them one request each.",
                                      param="n", code="unsupported_value")
        if self.logprobs or self.top_logprobs is not None:
            parse_logprobs_request(self.__dict__)  # top_logprobs needs logprobs
        return self

    @property
    def logprobs_wanted(self) -> int | None:
        """``GenerationParams.logprobs``: ``None``, or how many alternatives to report per token."""
        return parse_logprobs_request(self.__dict__) if self.logprobs else None

    @property
    def logit_bias_pairs(self) -> tuple[tuple[int, float], ...]:
        """``logit_bias`` as ``(token id, bias)`` pairs (``GenerationParams.logit_bias``)."""
        return parse_logit_bias(self.logit_bias) if self.logit_bias else ()

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CreateSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, min_length=1, max_length=128)
    system_prompt: str | None = Field(default=None, max_length=100_000)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)


# ---------------------------------------------------------------------------- response shapes
def completion_dict(*, completion_id: str, created: int, model: str, text: str, finish_reason: str,
                    prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
                    logprobs: Sequence[TokenLogprob] | None = None) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [_choice_dict(0, text, finish_reason, logprobs)],
        "usage": usage_dict(prompt_tokens, completion_tokens, cached_tokens),
    }


def _choice_dict(index: int, text: str, finish_reason: str,
                 logprobs: Sequence[TokenLogprob] | None) -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "content": text, "refusal": None},
        "logprobs": logprobs_body(logprobs),
        "finish_reason": finish_reason,
    }


def add_choices(payload: dict[str, Any], choices: Sequence[tuple[str, str, int, Sequence[TokenLogprob] | None]]
                ) -> dict[str, Any]:
    """``payload`` (a :func:`completion_dict`) with more choices after its first, each ``(text, finish_reason,
    completion_tokens, logprobs)``: indexed in order, their tokens added to the usage (the prompt counted once, as
    OpenAI counts it for ``n``)."""
    usage = payload["usage"]
    for text, finish_reason, completion_tokens, logprobs in choices:
        payload["choices"].append(_choice_dict(len(payload["choices"]), text, finish_reason, logprobs))
        usage["completion_tokens"] += completion_tokens
        usage["total_tokens"] += completion_tokens
    return payload


def chunk_dict(*, completion_id: str, created: int, model: str, delta: dict[str, Any],
               finish_reason: str | None = None, usage: dict[str, Any] | None = None,
               with_choice: bool = True, include_usage_field: bool = False,
               logprobs: Sequence[TokenLogprob] | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs_body(logprobs), "finish_reason": finish_reason}]
        if with_choice else [],
    }
    if include_usage_field:
        chunk["usage"] = usage
    return chunk


def model_dict(model_id: str, created: int | None = None) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created or int(time.time()), "owned_by": "clawdbot"}
