"""Wire traffic control, A/B variants and metrics into an app built by ``clawdbot.api.create_app``.

One call keeps ``create_app`` a list of parts: it builds the key store and rate limiter that match the session
store, imports the deploy's key, sets the chat service's variants and turn observers, mounts ``/metrics`` and the
feedback route, and adds the middleware. Middleware order, outermost first (``RequestContextMiddleware``, added
after this, stays outermost): request metrics → keys and rate limits → concurrency cap → routes. So 401/429
never queue for a slot, and every answer, refusals included, is counted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from clawdbot.config.settings import Settings
    from clawdbot.traffic.auth import TrafficControl

logger = logging.getLogger(__name__)

BOOTSTRAP_KEY_NAME = "deploy"


def install(app: FastAPI, settings: Settings, *, model_load_seconds: float | None = None) -> TrafficControl:
    from clawdbot.traffic.ab import build_router
    from clawdbot.traffic.auth import AuthRateLimitMiddleware, TrafficControl
    from clawdbot.traffic.concurrency import ConcurrencyLimitMiddleware
    from clawdbot.traffic.factory import build_key_store, build_rate_limiter, keys_always_required, on_lambda

    resources = app.state.resources
    keys = build_key_store(settings)
    if settings.bootstrap_key_sha256:
        keys.import_hash(settings.bootstrap_key_sha256, name=BOOTSTRAP_KEY_NAME)
    if settings.api_key_secret_arn:
        from clawdbot.traffic.aws import read_secret
        from clawdbot.traffic.keys import hash_key

        keys.import_hash(hash_key(read_secret(settings.api_key_secret_arn).strip()), name=BOOTSTRAP_KEY_NAME)
    traffic = TrafficControl(keys, build_rate_limiter(settings), always_required=keys_always_required(settings),
                             cache_seconds=settings.key_cache_seconds)
    app.state.traffic = traffic
    chat = resources.chat
    chat.variants = build_router(settings, resources.backend)
    chat.observers.append(traffic.on_turn)

    if settings.max_concurrency > 0 and not on_lambda():
        app.add_middleware(ConcurrencyLimitMiddleware, max_concurrency=settings.max_concurrency,
                           max_queue=settings.max_queue, queue_timeout=settings.queue_timeout_seconds)
    app.add_middleware(AuthRateLimitMiddleware, traffic=traffic)
    return traffic
