"""Logs and traces on Lambda: Powertools Logger (JSON, request id and session id on every line) and Tracer.

``instrument(handler)`` wraps a Lambda handler: the Logger injects the Lambda context, the Tracer captures the
invocation (X-Ray), and a logging filter stamps every record — from Powertools' logger and from the library's
``logging.getLogger(__name__)`` loggers alike — with the API request id (``x-request-id``) and the session id of
the request being served. Locally the same filter can be put on any handler.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

SERVICE_NAME = "clawdbot"

#: The session a request works on (set by traffic control from the header/path, by the chat route once resolved).
session_id_var: ContextVar[str] = ContextVar("clawdbot_session_id", default="-")


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` and ``session_id`` to every record that passes through."""

    def filter(self, record: logging.LogRecord) -> bool:
        from clawdbot.api.middleware import request_id_var

        record.request_id = request_id_var.get()
        record.session_id = session_id_var.get()
        return True


def instrument(handler: Callable[..., Any], *, service: str = SERVICE_NAME,
               stream: IO[str] | None = None) -> Callable[..., Any]:
    """The handler with Powertools Logger context, Tracer capture and request/session ids on every log line."""
    from aws_lambda_powertools import Logger, Tracer

    logger = Logger(service=service, stream=stream)
    context_filter = RequestContextFilter()
    logger.addFilter(context_filter)
    for log_handler in logger.handlers:
        log_handler.addFilter(context_filter)
    tracer = Tracer(service=service)

    def handle(event: Any, context: Any) -> Any:  # a plain function: the decorators need a __name__
        return handler(event, context)

    return logger.inject_lambda_context(tracer.capture_lambda_handler(handle), clear_state=True)
