"""Stopping a generation whose caller has gone.

A non-streamed turn runs on a worker thread until its last token. A client that hangs up before then (its timeout,
a closed tab) reads nothing, yet the model would go on for the whole completion and hold one of the engine's
generation slots. Under load that compounds: clients time out and retry (the openai SDK retries twice), and each
retry queues behind the turn it abandoned. A streamed turn already stops at its next token (its stream is closed);
this gives a non-streamed one the same.

The server watches the connection while the turn runs (:func:`watching`) and, on ``http.disconnect``, sets the
turn's event; the ONNX engine reads that event between tokens (:func:`caller_gone`) and raises
:class:`~clawdbot.inference.exceptions.GenerationCancelledError`. The turn is then not recorded, as a streamed
turn that stops early is not. The event travels in a context variable, not a parameter: it crosses every layer
between the route and the engine (the chat service, the A/B router, the backend contract) and only the engine can
act on it. anyio copies the context into its worker threads; an executor call needs ``contextvars.copy_context()``.
A backend that cannot stop (a remote endpoint) ignores it.

Under Mangum (Lambda) the disconnect comes only after the response, so a watch there never fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

_caller_gone: ContextVar[threading.Event | None] = ContextVar("clawdbot_caller_gone", default=None)


def caller_gone() -> threading.Event | None:
    """The current turn's "caller has gone" event; ``None`` outside :func:`watching` (nothing to stop for)."""
    return _caller_gone.get()


@contextlib.contextmanager
def cancellable() -> Iterator[threading.Event]:
    """Within the block, a generation started on this thread, or on one that copies its context, stops before
    its next step once the yielded event is set."""
    gone = threading.Event()
    token = _caller_gone.set(gone)
    try:
        yield gone
    finally:
        _caller_gone.reset(token)


@contextlib.asynccontextmanager
async def watching(receive: Callable[[], Awaitable[dict[str, Any]]]) -> AsyncIterator[threading.Event]:
    """:func:`cancellable`, with the event set when the client disconnects: the ASGI ``receive`` channel (the
    request's body already read) is watched for ``http.disconnect`` within the block."""
    with cancellable() as gone:
        watcher = asyncio.get_running_loop().create_task(_watch(receive, gone))
        try:
            yield gone
        finally:
            watcher.cancel()


async def _watch(receive: Callable[[], Awaitable[dict[str, Any]]], gone: threading.Event) -> None:
    """Wait for the next ASGI message. With the body read, a server sends nothing more until the client hangs up
    (``http.disconnect``); whatever else comes ends the watch rather than spin on it."""
    try:
        message = await receive()
    except Exception:  # a server that cannot tell us: nothing to watch
        return
    if message.get("type") == "http.disconnect":
        gone.set()
