"""Every error leaves the API in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

One mapping for all: our ``ClawdbotError`` hierarchy carries status and codes; pydantic validation errors and
malformed JSON become 400 ``invalid_request_error``; unknown routes 404; anything unexpected a 500 that logs the
traceback server-side and tells the client only the request id.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from clawdbot.exceptions import ClawdbotError

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

logger = logging.getLogger(__name__)

_STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
                 429: "rate_limit_error"}


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(status: int, message: str, error_type: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    payload = json.dumps(error_body(message, error_type, param, code)).encode()
    return Response(payload, status_code=status, media_type="application/json", headers=headers)


#: Loc parts that name a member of a union (``str | list[TextPart]``), not a field: pydantic's tags for them.
_BUILTIN_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _is_union_tag(part: object) -> bool:
    """Whether ``part`` is pydantic's tag for a union member (``str``, ``list[TextPart]``, ``constrained-str``,
    a model's class name): the API's fields are all snake_case, so no field name looks like one."""
    return isinstance(part, str) and (part in _BUILTIN_TAGS or "[" in part or part[:1].isupper()
                                      or part.startswith(("constrained-", "function-")))


def _union_errors_merged(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The errors of a value that matched no member of its union, as the client's value calls for.

    pydantic reports each member's error: a list of five stop strings is "not a valid string" (the ``str``
    member) before it is "at most 4 items" (the ``list`` member). A member whose error is only that the value has
    another type says nothing about the value, so those are dropped where another member's error remains; where
    none does, they are merged into one ("a valid string or a valid array"). Union tags leave the locations.
    """
    def field_loc(error: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(part for part in error.get("loc", ()) if not _is_union_tag(part))

    def is_type_mismatch(error: dict[str, Any]) -> bool:
        loc = error.get("loc", ())
        return bool(loc) and _is_union_tag(loc[-1]) and str(error.get("type", "")).endswith("_type")

    if not any(_is_union_tag(part) for error in errors for part in error.get("loc", ())):
        return errors
    merged: list[dict[str, Any]] = []
    for error in errors:
        if is_type_mismatch(error):
            here = field_loc(error)
            if any(field_loc(other)[:len(here)] == here and not is_type_mismatch(other) for other in errors):
                continue
            same = next((m for m in merged if m["loc"] == here and m.get("_mismatch")), None)
            if same is not None:
                same["msg"] += " or " + str(error.get("msg", "")).removeprefix("Input should be ")
                continue
            merged.append({**error, "loc": here, "_mismatch": True})
            continue
        merged.append({**error, "loc": field_loc(error)})
    return merged


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None, str]:
    errors = _union_errors_merged(list(exc.errors()))
    if not errors:
        return "Invalid request body.", None, "invalid_request"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return "We could not parse the JSON body of your request. The body must be valid JSON.", None, "invalid_json"
    param = ".".join(loc) or None
    msg = first.get("msg", "Invalid value")
    if first.get("type") == "missing" and param is None:  # the body itself: none was sent
        return "The request has no body. The body must be a JSON object.", None, "invalid_json"
    if first.get("type") == "missing":
        return f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    where = f"'{param}'" if param else "the request body"
    extra = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"Invalid value for {where}: {msg}{extra}.", param, "invalid_value"


#: Statuses that ask the client to come back: each carries ``Retry-After`` (RFC 9110), the default unless the error
#: brought its own (SageMaker's throttling hint, a rate limit's refill time).
_RETRY_STATUSES = frozenset({429, 503})
DEFAULT_RETRY_AFTER_SECONDS = 1


async def _on_clawdbot_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClawdbotError)
    if exc.status_code >= 500:
        logger.warning("request failed: %s (%s)", exc.code, type(exc).__name__)
    headers = exc.headers
    if exc.status_code in _RETRY_STATUSES and not any(k.lower() == "retry-after" for k in headers):
        headers = {**headers, "Retry-After": str(DEFAULT_RETRY_AFTER_SECONDS)}
    return error_response(exc.status_code, exc.message, exc.error_type, exc.param, exc.code, headers)


async def _on_validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message, param, code = _validation_message(exc)
    return error_response(400, message, "invalid_request_error", param, code)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        message, code = "Unknown request URL. Please check the URL and method.", "unknown_url"
    elif status == 405:
        message, code = "Method not allowed for this URL.", "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    headers = dict(exc.headers or {})
    if status == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return error_response(status, message, _STATUS_TYPES.get(status, "invalid_request_error"), None, code, headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path: Starlette names only those of the first route it matched
    (``POST /v1/sessions`` hid ``GET /v1/sessions``)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        if getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
            methods.update(route.methods)
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClawdbotError, _on_clawdbot_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
