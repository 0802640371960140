"""Pure-ASGI middleware (no BaseHTTPMiddleware: it buffers and costs a task per request).

``RequestContextMiddleware`` is the outermost layer of our app:
- echoes the client's ``x-request-id`` (if sane) or generates one, on every response;
- rejects bodies over the configured limit with 413 before reading them whole (Content-Length or streamed: a
  streamed one is answered the moment it crosses the limit);
- turns any unhandled exception into a 500 in OpenAI's shape that leaks nothing but the request id.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

request_id_var: ContextVar[str] = ContextVar("clawdbot_request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class BodyTooLargeError(Exception):
    pass


def _json_error(status: int, message: str, error_type: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}}).encode()


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _SANE_ID.match(candidate) else ""
                break
        request_id = request_id or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        id_header = (b"x-request-id", request_id.encode())
        started = False
        refused = False  # a 413 went out mid-body: whatever the app answers after it is dropped

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        async def plain(status: int, body: bytes) -> None:
            await send_with_id({"type": "http.response.start", "status": status,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
            await send_with_id({"type": "http.response.body", "body": body})

        limit = self.max_body_bytes
        too_large = _json_error(413, f"Request body too large: the limit is {limit} bytes.",
                                "invalid_request_error", "request_too_large")
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await plain(413, too_large)
                request_id_var.reset(token)
                return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now: FastAPI turns any error raised while it reads a body into a 400.
                    if not started:
                        await plain(413, too_large)
                        refused = True
                    raise BodyTooLargeError
            return message

        try:
            await self.app(scope, limited_receive, send_with_id)
        except BodyTooLargeError:
            if not started:
                await plain(413, too_large)
        except Exception:
            logger.exception("unhandled error (request id %s)", request_id)
            if not started:
                await plain(500, _json_error(
                    500, f"The server had an error while processing your request (request id {request_id}).",
                    "server_error", "internal_error"))
        finally:
            request_id_var.reset(token)
