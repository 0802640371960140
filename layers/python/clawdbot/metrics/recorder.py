"""App events → metric values: one request, one finished turn, one piece of feedback.

The recorder is what the app talks to; it knows the catalogue's names and dimensions and nothing of the sink
(Prometheus or EMF). Turn metrics are recorded by a chat-service observer, request metrics by a pure-ASGI
middleware that times each response to its last byte.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

from clawdbot.metrics import infra
from clawdbot.metrics.observability import session_id_var

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from clawdbot.chat.service import TurnResult
    from clawdbot.metrics.latency_guard import LatencyGuard
    from clawdbot.metrics.sink import MetricsSink

logger = logging.getLogger(__name__)

#: nginx's status for a request whose client closed the connection before the response was whole.
CLIENT_CLOSED_REQUEST = 499
#: Route label of requests answered before routing (401, 429, 503 from traffic control) or matching no route.
UNROUTED = "-"
_SESSION_PATH = re.compile(r"^/v1/sessions/([^/]+)")


class MetricsRecorder:
    def __init__(self, sink: MetricsSink, guard: LatencyGuard | None = None, *, push_process: bool = False) -> None:
        self.sink = sink
        self.guard = guard
        #: Push sinks (EMF) get process readings with every turn; pull sinks read them at scrape time.
        self.push_process = push_process

    def model_loaded(self, seconds: float) -> None:
        self.sink.emit({}, {"ModelLoadTime": seconds * 1000})

    def on_request(self, route: str, status: int, latency_ms: float) -> None:
        self.sink.emit({"route": route, "status": str(status)}, {"Requests": 1, "RequestLatency": latency_ms})
        if status >= 400:
            self.sink.emit({"status": str(status)}, {"Errors": 1})

    def on_turn(self, result: TurnResult) -> None:
        """A chat-service observer: the turn's service and business metrics, and the latency guard."""
        variant = result.turn.variant
        values: dict[str, float] = {"Turns": 1, "TurnLatency": result.latency_ms,
                                    "Tokens": result.prompt_tokens + result.completion_tokens,
                                    "CachedPromptTokens": result.cached_tokens}
        if result.first_token_ms is not None:
            values["TimeToFirstToken"] = result.first_token_ms
        if result.latency_ms > 0 and result.completion_tokens:
            values["TokensPerSecond"] = result.completion_tokens / (result.latency_ms / 1000)
        if self.guard is not None and self.guard.observe(variant, result.latency_ms):
            logger.warning("latency breach: %d consecutive turns of variant %s over %.0f ms", self.guard.turns,
                           variant, self.guard.threshold_ms)
            values["LatencyBreach"] = 1
        self.sink.emit({"variant": variant}, values)
        if self.push_process:
            self.sink.emit({}, {"ProcessCpuTime": infra.process_cpu_seconds(),
                                "ProcessMemory": infra.process_memory_bytes()})

    def on_feedback(self, variant: str, score: int, completed: bool) -> None:
        values: dict[str, float] = {"SatisfactionScore": score}
        if completed:
            values["ConversationsCompleted"] = 1
        self.sink.emit({"variant": variant}, values)


class RequestMetricsMiddleware:
    """Counts and times every response (refusals included), labelled by route template, never raw path.

    It also sets the session id that log lines carry, from ``x-session-id`` or the ``/v1/sessions/{id}`` path.
    """

    def __init__(self, app: ASGIApp, recorder: MetricsRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        session = _SESSION_PATH.match(scope["path"])
        if session is not None:
            session_id_var.set(session.group(1))
        else:
            for name, value in scope.get("headers", ()):
                if name == b"x-session-id":
                    session_id_var.set(value.decode("latin-1")[:128])
                    break

        started_response = ended_response = False

        async def send_and_watch(message: Message) -> None:
            nonlocal status, started_response, ended_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                ended_response = True
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, send_and_watch)
        except Exception as exc:
            from starlette.requests import ClientDisconnect

            # The app raised: a 500, unless it was the client's disconnect surfacing (a write to a closed socket)
            failed = not isinstance(exc, (OSError, ClientDisconnect))
            raise
        finally:
            if started_response and not ended_response and not failed:
                # A response begun and never finished, the app not at fault: its client hung up (a stream
                # abandoned). Counted as nginx logs it, so one status counts the abandoned turns of both kinds.
                status = CLIENT_CLOSED_REQUEST
            route = scope.get("route")
            template = getattr(route, "path", None) or UNROUTED
            try:
                self.recorder.on_request(template, status, (time.perf_counter() - started) * 1000)
            except Exception:  # metrics must never turn an answer into an error
                logger.warning("recording request metrics failed", exc_info=True)
