"""OpenAI-shaped request and response bodies for the chat API.

Requests are validated with pydantic; responses are built as plain dicts (cheaper than model round-trips on the
hot path) by the helpers at the bottom, one place for each OpenAI object shape.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clawdbot.inference.openai_wire import usage_body as usage_dict  # one usage shape for the API and the container

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


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat completion request a text-only chat model can honour.

    Unknown fields are ignored (as many OpenAI-compatible servers do) so newer SDKs keep working.
    """

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, min_length=1, max_length=256)
    n: int | None = Field(default=None, ge=1, le=1)

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value == "":
            raise ValueError("stop must not be an empty string")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if not any(m.role in ("user", "assistant") for m in self.messages):
            raise ValueError("messages must contain at least one user message")
        return self

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
                    prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": finish_reason,
        }],
        "usage": usage_dict(prompt_tokens, completion_tokens, cached_tokens),
    }


def chunk_dict(*, completion_id: str, created: int, model: str, delta: dict[str, Any],
               finish_reason: str | None = None, usage: dict[str, Any] | None = None,
               with_choice: bool = True, include_usage_field: bool = False) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        if with_choice else [],
    }
    if include_usage_field:
        chunk["usage"] = usage
    return chunk


def model_dict(model_id: str, created: int | None = None) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created or int(time.time()), "owned_by": "clawdbot"}
