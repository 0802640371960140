"""The OpenAPI document says what the API really answers, so clients and fuzzers can hold it to that.

FastAPI's generated document describes requests well but answers poorly here: routes return plain dicts (cheap on
the hot path), so success bodies had no schema; every operation claimed a 422 for invalid input that the API never
sends (it answers OpenAI's 400) and none of the errors it does send; session ids had no pattern, so a schema-valid
id could be refused. This module completes the generated document, once, when it is first asked for:

* success bodies get their schemas (the OpenAI shapes built in ``api.schemas`` and the routes);
* every operation documents its errors as ``4XX``/``5XX`` in OpenAI's error shape, the chat route its 422 for a
  reused ``Idempotency-Key``;
* ``session_id`` (path and ``x-session-id`` header) and a created session's ``id`` carry the pattern the store
  enforces;
* a chat request's ``model`` names the one model this server serves (any other is a 404 ``model_not_found``), its
  ``messages`` their most (``CLAWDBOT_MAX_MESSAGES``; more is a 400 ``too_many_messages``), its completion limits
  the model's context length, and its ``Idempotency-Key`` the characters the API accepts.

Schemathesis (``tests/reliability``) checks every answer against this document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clawdbot.sessions.base import MAX_SESSION_ID_LENGTH

if TYPE_CHECKING:
    from fastapi import FastAPI

#: What ``sessions.base.validate_session_id`` accepts.
SESSION_ID_PATTERN = rf"^[A-Za-z0-9\-_.:@]{{1,{MAX_SESSION_ID_LENGTH}}}$"
#: What ``api.idempotency`` accepts as an ``Idempotency-Key``: 1-255 visible ASCII characters.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"
_REF = "#/components/schemas/{model}"


#: One server-sent event of a streamed completion, as OpenAPI describes an event (its ``data``, ``event``, ``id``
#: fields; OpenAPI 3.2 calls it ``itemSchema``): ``data`` is a chunk, an in-band error (a stream that fails midway
#: says so) or ``[DONE]``.
_SSE_EVENT: dict[str, Any] = {
    "type": "object", "required": ["data"],
    "properties": {"data": {"anyOf": [
        {"type": "string", "const": "[DONE]"},
        {"type": "string", "contentMediaType": "application/json", "contentSchema": {"anyOf": [
            {"$ref": _REF.format(model="ChatCompletionChunk")}, {"$ref": _REF.format(model="ErrorResponse")}]}},
    ]}},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorResponse")}}}}


def complete(document: dict[str, Any], model_id: str | None = None, max_messages: int | None = None,
             context_length: int | None = None) -> dict[str, Any]:
    """Add success schemas, error responses, id patterns and the served model's limits (``model_id``,
    ``max_messages``, ``context_length``) to FastAPI's generated ``document`` (in place)."""
    from pydantic.json_schema import models_json_schema

    from clawdbot.api.openapi_models import SUCCESS, ChatCompletionChunk, ErrorResponse

    models = [ErrorResponse, ChatCompletionChunk, *{model for _, model in SUCCESS.values()}]
    _, definitions = models_json_schema([(m, "serialization") for m in models], ref_template=_REF)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(definitions.get("$defs", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    id_schema = {"type": "string", "pattern": SESSION_ID_PATTERN, "maxLength": MAX_SESSION_ID_LENGTH}
    if "CreateSessionRequest" in schemas:
        schemas["CreateSessionRequest"]["properties"]["id"] = {"anyOf": [id_schema, {"type": "null"}]}
    chat_request = schemas.get("ChatCompletionRequest", {}).get("properties", {})
    if model_id is not None and chat_request:
        chat_request["model"] = {"type": "string", "enum": [model_id]}
    if max_messages is not None and chat_request:
        chat_request["messages"]["maxItems"] = max_messages
    if context_length is not None and chat_request:
        for name in ("max_tokens", "max_completion_tokens"):
            chat_request[name] = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": context_length},
                                            {"type": "null"}]}
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.pop("422", None)
            success = SUCCESS.get((method, path))
            if success is not None:
                status, model = success
                content: dict[str, Any] = {"application/json": {"schema": {"$ref": _REF.format(
                    model=model.__name__)}}}
                if (method, path) == ("post", "/v1/chat/completions"):
                    content["text/event-stream"] = {"schema": _SSE_EVENT}
                    responses["422"] = _error("The Idempotency-Key was used with a different request.")
                responses[status] = {**responses.get(status, {}), "description": "Success", "content": content}
            responses["4XX"] = _error("The request cannot be served (OpenAI's error shape).")
            responses["5XX"] = _error("The server or a dependency failed; 429/503 carry Retry-After.")
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "idempotency-key":
                    parameter["schema"] = {"anyOf": [{"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
                                                     {"type": "null"}]}
                if parameter.get("name") in ("session_id", "x-session-id"):
                    parameter["schema"] = {**id_schema} if parameter.get("required") else {
                        "anyOf": [id_schema, {"type": "null"}]}
    return document


def install(app: FastAPI) -> None:
    """Serve the completed document at ``/openapi.json`` (built once, on first request: the models it needs are
    imported then, not at cold start)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            resources = app.state.resources
            app.openapi_schema = complete(generate(), resources.backend.model_id, resources.settings.max_messages,
                                          resources.backend.context_length)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
