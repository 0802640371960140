"""The API's answers as pydantic models, for the OpenAPI document only (``api.openapi``).

The routes build plain dicts (cheap on the hot path); these models describe them. Imported when the document is
first asked for, never at cold start.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Open):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Open):
    """OpenAI's error shape, for every 4xx and 5xx."""

    error: ErrorDetail


class PromptTokensDetails(_Open):
    #: Prompt tokens the engine took from its prefix cache (a session's last turn), not computed again.
    cached_tokens: int = Field(ge=0)


class Usage(_Open):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)
    prompt_tokens_details: PromptTokensDetails | None = None


class AssistantMessage(_Open):
    role: Literal["assistant"]
    content: str
    refusal: None = None


class Choice(_Open):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(_Open):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[Choice] = Field(min_length=1, max_length=1)
    usage: Usage


class ChunkChoice(_Open):
    index: int
    delta: dict[str, Any]
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class ChatCompletionChunk(_Open):
    """One server-sent event of a streamed completion (``data: [DONE]`` ends the stream)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice] = Field(max_length=1)
    usage: Usage | None = None


class Model(_Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Open):
    object: Literal["list"]
    data: list[Model]


class TranscriptEntry(_Open):
    seq: int = Field(ge=0)
    role: str
    content: str
    created_at: float
    turn_id: str | None
    metadata: dict[str, Any] | None = None


class TranscriptPage(_Open):
    object: Literal["list"]
    data: list[TranscriptEntry]
    has_more: bool
    next_after: int | None


class Session(_Open):
    id: str
    object: Literal["session"]
    created_at: int
    updated_at: int
    expires_at: int | None
    message_count: int = Field(ge=0)
    metadata: dict[str, Any]
    system_prompt: str | None
    messages: TranscriptPage | None = None


class SessionList(_Open):
    object: Literal["list"]
    data: list[Session]


class SessionDeleted(_Open):
    id: str
    object: Literal["session.deleted"]
    deleted: bool


class Turn(_Open):
    id: str
    object: Literal["session.turn"]
    session_id: str
    status: Literal["pending", "in_progress", "done", "failed"]


class Feedback(_Open):
    object: Literal["session.feedback"]
    session_id: str
    turn_id: str | None
    score: int = Field(ge=1, le=5)
    comment: str | None
    created_at: float
    completed: bool


class Health(_Open):
    status: Literal["ok"]
    model: str


#: (method, path) -> (status, model) of the success answer.
SUCCESS: dict[tuple[str, str], tuple[str, type[BaseModel]]] = {
    ("get", "/healthz"): ("200", Health),
    ("get", "/v1/models"): ("200", ModelList),
    ("get", "/v1/models/{model_id}"): ("200", Model),
    ("post", "/v1/chat/completions"): ("200", ChatCompletion),
    ("post", "/v1/sessions"): ("201", Session),
    ("get", "/v1/sessions"): ("200", SessionList),
    ("get", "/v1/sessions/{session_id}"): ("200", Session),
    ("delete", "/v1/sessions/{session_id}"): ("200", SessionDeleted),
    ("post", "/v1/sessions/{session_id}/turns"): ("202", Turn),
    ("get", "/v1/sessions/{session_id}/turns/{turn_id}"): ("200", Turn),
    ("post", "/v1/sessions/{session_id}/feedback"): ("201", Feedback),
}
