"""A JSON request body read straight into its pydantic model, with the errors FastAPI's own handler would raise.

FastAPI's generic request handler parses the content type with ``email.message``, decodes the body with the
``json`` module, then validates the decoded objects against the model while it solves the route's other
parameters. pydantic-core parses and validates the bytes in one pass instead. A hot route can use
:func:`read_model` from a route class of its own (``clawdbot.api.routes.chat``): the clients and the OpenAPI
document see no difference. A body that fails still raises FastAPI's exceptions, so ``clawdbot.api.errors``
answers it with the same OpenAI 400:

- no body: a ``missing`` error at ``body``;
- a content type other than JSON (``application/json``, ``application/*+json``): FastAPI hands the raw bytes to
  the model, which refuses them (``model_attributes_type``);
- bytes that are not JSON: ``json_invalid``;
- a body that cannot be read: a 400 ``HTTPException``. A body over the size limit is the exception: the
  ``RequestContextMiddleware`` has already answered it with a 413.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING, TypeVar

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from clawdbot.api.middleware import BodyTooLargeError

if TYPE_CHECKING:
    from starlette.requests import Request

M = TypeVar("M", bound=BaseModel)


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or a ``+json`` subtype, parameters (``; charset=utf-8``) ignored, as FastAPI decides."""
    media = content_type.partition(";")[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


async def read_model(request: Request, model: type[M]) -> M:
    """The request's body as ``model``, or the ``RequestValidationError`` (locations under ``body``) or 400 that
    FastAPI would raise for it."""
    try:
        raw = await request.body()
    except BodyTooLargeError:
        raise
    except Exception as exc:  # a client gone mid-body: what FastAPI answers for any failed read
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required",
                                       "input": None}])
    if not is_json_media_type(request.headers.get("content-type", "")):
        raise RequestValidationError([{"type": "model_attributes_type", "loc": ("body",),
                                       "msg": "Input should be a valid dictionary or object to extract fields from",
                                       "input": raw}])
    if raw.startswith(codecs.BOM_UTF8):  # json.loads skips it, as RFC 8259 allows; pydantic-core does not
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])}
                                      for error in exc.errors(include_url=False)]) from None
