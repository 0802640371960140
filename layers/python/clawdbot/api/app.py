"""The FastAPI application: the same app behind uvicorn (``clawdbot serve``) and Mangum (Lambda)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastapi import FastAPI

from clawdbot import __version__
from clawdbot.api.dependencies import Resources
from clawdbot.api.errors import install_error_handlers
from clawdbot.api.middleware import RequestContextMiddleware
from clawdbot.api.openapi import install as install_openapi
from clawdbot.api.routes import add_routes, chat, health, sessions, turns
from clawdbot.chat.service import ChatService
from clawdbot.config.settings import Settings, get_settings
from clawdbot.traffic.install import install as install_traffic
from clawdbot.web import routes as web

if TYPE_CHECKING:
    from clawdbot.inference.base import InferenceBackend
    from clawdbot.sessions.base import SessionStore


def create_app(settings: Settings | None = None, *, store: SessionStore | None = None,
               backend: InferenceBackend | None = None) -> FastAPI:
    """Build the app and its resources once (cold start). ``store``/``backend`` override the configured ones."""
    settings = settings or get_settings()
    if store is None:
        from clawdbot.sessions.factory import build_store

        store = build_store(settings)
    model_load_seconds = None
    if backend is None:
        from clawdbot.inference.factory import build_backend

        load_started = time.perf_counter()
        backend = build_backend(settings)
        model_load_seconds = time.perf_counter() - load_started

    app = FastAPI(title="clawdbot", version=__version__,
                  description="OpenAI-compatible chat completions with server-side sessions.")
    app.state.resources = Resources(settings=settings, store=store, backend=backend,
                                    chat=ChatService(store, backend, settings), loaded_at=int(time.time()))
    install_error_handlers(app)
    install_openapi(app)  # success schemas, error responses and id patterns in /openapi.json
    for module in (health, chat, sessions, turns):
        add_routes(app, module.router)
    install_traffic(app, settings, model_load_seconds=model_load_seconds)  # keys, limits, A/B, metrics
    web.install(app)  # the chat page /, the operations page /ops and their assets
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    return app
