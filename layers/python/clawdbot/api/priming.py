"""Priming the app for a SnapStart snapshot: what its first request would do on demand, done during init.

Lambda SnapStart snapshots the environment after init, so whatever init leaves warm is warm in every environment
restored from it, while whatever the first request does lazily is paid again by each one (AWS calls doing it at
init "priming"). A restored ``chat_api`` environment's first request used to make the session store's, the rate
limiter's and the model endpoint's botocore clients (service models parsed from JSON), import anyio's asyncio
backend and start its worker thread, and have FastAPI build each included router's routes again on its first
match: about 20 ms of a 55 ms first invocation (``bench.coldstart``: an authenticated session read through AWS's
runtime client against DynamoDB Local). The routes are now the app's own (``clawdbot.api.routes.add_routes``),
built once when declared; :func:`prime` does the rest at init, without a network call and without touching any
key, limit or session: a request to the public ``/healthz`` through the whole middleware stack.

Only a SnapStart init primes (the handler calls this when :func:`clawdbot.snapstart.register_hooks` registered
its hooks): without a snapshot the same work would simply move from the first request to init. An on-demand init
makes only the clients every keyed request uses (:func:`prime_clients`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

def prime_clients(app: FastAPI) -> None:
    """Make the clients every keyed request uses (the session store's, the key store's and the rate limiter's),
    without a network call. An on-demand init calls this alone: the first request needs them all the same
    (``bench.coldstart``: init + first request is the same sum either way), and made at init they are made
    outside any request, as AWS advises for SDK clients; the model's client waits for the first turn."""
    app.state.resources.store.prime()
    traffic = getattr(app.state, "traffic", None)
    if traffic is not None:
        traffic.prime()


def prime(app: FastAPI) -> list[int]:
    """Make the app's lazy clients and run the warm-up request on the thread's event loop (the one Mangum runs
    every invocation on); returns its HTTP status in a list (``[200]``)."""
    prime_clients(app)
    app.state.resources.backend.prime()
    statuses = asyncio.get_event_loop().run_until_complete(_warm_up(app))
    logger.info("primed for the snapshot: clients made, warm-up request answered %s", statuses)
    return statuses


async def _warm_up(app: FastAPI) -> list[int]:
    await run_in_threadpool(int)  # anyio's asyncio backend and a worker thread, kept for the loop's life
    return [await _get(app, "/healthz")]


async def _get(target: Any, path: str) -> int:
    """The status of ``GET path`` answered by the ASGI callable ``target``."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "GET", "scheme": "https", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [(b"host", b"prime.invalid")], "client": ("127.0.0.1", 0),
             "server": ("prime.invalid", 443)}
    await target(scope, receive, send)
    return next(int(m["status"]) for m in sent if m["type"] == "http.response.start")
