"""The status ``RequestMetricsMiddleware`` records for responses that do not end as they began: a response its
client abandoned is a 499 (as nginx logs it), an app that fails is not."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from clawdbot.metrics.recorder import MetricsRecorder, RequestMetricsMiddleware
from clawdbot.metrics.sink import MetricsSink


class ListSink(MetricsSink):
    def __init__(self) -> None:
        self.emitted: list[tuple[dict[str, str], dict[str, float]]] = []

    def emit(self, dimensions: dict[str, str], values: dict[str, float]) -> None:
        self.emitted.append((dimensions, values))


def recorded_status(app: Any, raises: type[BaseException] | None = None) -> str:
    sink = ListSink()
    middleware = RequestMetricsMiddleware(app, MetricsRecorder(sink))

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        return None

    scope = {"type": "http", "path": "/v1/chat/completions", "headers": []}
    with pytest.raises(raises) if raises is not None else contextlib.nullcontext():
        asyncio.run(middleware(scope, receive, send))
    (status,) = [dims["status"] for dims, values in sink.emitted if "Requests" in values]
    return status


async def _start(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})


async def whole(scope: Any, receive: Any, send: Any) -> None:
    await _start(send)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def abandoned(scope: Any, receive: Any, send: Any) -> None:
    await _start(send)  # ... and returns: the server told it the client left (Starlette's disconnect watch)


async def write_to_closed(scope: Any, receive: Any, send: Any) -> None:
    await _start(send)
    raise ConnectionResetError("the client closed the connection")


async def failed(scope: Any, receive: Any, send: Any) -> None:
    await _start(send)
    raise RuntimeError("the app broke mid-stream")


def test_a_whole_response_keeps_its_status() -> None:
    assert recorded_status(whole) == "200"


def test_a_response_its_client_abandoned_is_a_499() -> None:
    assert recorded_status(abandoned) == "499"
    assert recorded_status(write_to_closed, ConnectionResetError) == "499"


def test_a_response_the_app_broke_is_not_blamed_on_the_client() -> None:
    assert recorded_status(failed, RuntimeError) == "200"
