"""Logs and traces on Lambda: Powertools Logger (JSON, request id and session id on every line) and Tracer.

``instrument(handler)`` wraps a Lambda handler: the Logger injects the Lambda context, the Tracer (when the X-Ray
SDK is installed, see ``build_tracer``) captures the invocation, and a logging filter stamps every record — from
Powertools' logger and from the library's ``logging.getLogger(__name__)`` loggers alike — with the API request id
(``x-request-id``) and the session id of the request being served. Locally the same filter can be put on any handler.
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
    from aws_lambda_powertools import Logger

    logger = Logger(service=service, stream=stream)
    context_filter = RequestContextFilter()
    logger.addFilter(context_filter)
    for log_handler in logger.handlers:
        log_handler.addFilter(context_filter)
    def handle(event: Any, context: Any) -> Any:  # a plain function: the decorators need a __name__
        return handler(event, context)

    tracer = build_tracer(service)
    traced = tracer.capture_lambda_handler(handle) if tracer is not None else handle
    return logger.inject_lambda_context(traced, clear_state=True)


def build_tracer(service: str = SERVICE_NAME) -> Any:
    """Powertools' Tracer when the X-Ray SDK is installed and tracing is not switched off, else ``None``.

    The Tracer needs ``aws-xray-sdk`` (Powertools' ``tracer`` extra), which the Lambda layer does not carry:
    creating one there failed the import of the handler, and where the SDK is present its import alone costs
    ~250 ms of cold start (bench.coldstart). To trace, add ``aws-xray-sdk`` to ``layers/requirements.txt`` and
    turn on active tracing for the functions; ``POWERTOOLS_TRACE_DISABLED=true`` skips it either way.
    """
    import importlib.util
    import os

    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in ("1", "true", "yes", "on")
    if disabled or importlib.util.find_spec("aws_xray_sdk") is None:
        return None
    from aws_lambda_powertools import Tracer

    return Tracer(service=service)
