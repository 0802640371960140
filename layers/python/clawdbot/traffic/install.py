"""Wire traffic control, A/B variants and metrics into an app built by ``clawdbot.api.create_app``.

One call keeps ``create_app`` a list of parts: it builds the key store and rate limiter that match the session
store and the deploy key (imported when first presented), gives the chat service its variants and turn observers,
mounts the feedback route and ``/metrics``, and adds the middleware. Middleware order, outermost first
(``RequestContextMiddleware``, added after this, stays outermost): request metrics → keys and rate limits →
concurrency cap → routes. So 401/429 never wait for a slot, and every answer, refusals included, is counted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from clawdbot.aws_clients import LazyClient
    from clawdbot.config.settings import Settings
    from clawdbot.metrics.recorder import MetricsRecorder
    from clawdbot.traffic.auth import TrafficControl

logger = logging.getLogger(__name__)


def install(app: FastAPI, settings: Settings, *, model_load_seconds: float | None = None) -> TrafficControl:
    from clawdbot.api.routes import add_routes, feedback
    from clawdbot.metrics.recorder import RequestMetricsMiddleware
    from clawdbot.traffic.ab import build_router
    from clawdbot.traffic.auth import AuthRateLimitMiddleware, TrafficControl
    from clawdbot.traffic.aws import traffic_dynamodb
    from clawdbot.traffic.concurrency import ConcurrencyLimit, ConcurrencyLimitMiddleware
    from clawdbot.traffic.factory import build_key_store, build_rate_limiter, keys_always_required, on_lambda

    resources = app.state.resources
    dynamodb = traffic_dynamodb(settings)  # one client for the key store, the limiter and the latency guard
    keys = build_key_store(settings, dynamodb)
    deploy_key = None
    if settings.bootstrap_key_sha256 or settings.api_key_secret_arn:
        from clawdbot.snapstart import on_restore
        from clawdbot.traffic.deploy_key import DeployKey

        # Imported when first presented, not here: a cold start makes no call for it (clawdbot.traffic.deploy_key).
        deploy_key = DeployKey(key_hash=settings.bootstrap_key_sha256, secret_arn=settings.api_key_secret_arn)
        # With SnapStart this init ran when the version was published; a redeploy with a new key changes only
        # the secret, so each restored environment reads it again.
        on_restore(deploy_key.forget)
    traffic = TrafficControl(keys, build_rate_limiter(settings, dynamodb),
                             always_required=keys_always_required(settings),
                             cache_seconds=settings.key_cache_seconds, deploy_key=deploy_key)
    app.state.traffic = traffic
    metrics = build_recorder(settings, dynamodb)
    app.state.metrics = metrics
    if model_load_seconds is not None:
        metrics.model_loaded(model_load_seconds)

    chat = resources.chat
    chat.variants = build_router(settings, resources.backend)
    chat.observers += [traffic.on_turn, metrics.on_turn]
    add_routes(app, feedback.router)

    turns = resources.backend.generation_slots
    if turns and not on_lambda():  # the model runs here: chat turns are admitted as it can run them
        resources.turns = turn_limit = ConcurrencyLimit(turns, settings.max_queue, settings.queue_timeout_seconds)
        metrics.sink.gauge_function("TurnsInFlight", lambda: float(turn_limit.in_flight))
        metrics.sink.gauge_function("TurnsQueued", lambda: float(turn_limit.waiting))
    if settings.max_concurrency > 0 and not on_lambda():
        limit = ConcurrencyLimit(settings.max_concurrency, settings.max_queue, settings.queue_timeout_seconds)
        metrics.sink.gauge_function("RequestsInFlight", lambda: float(limit.in_flight))
        metrics.sink.gauge_function("RequestsQueued", lambda: float(limit.waiting))
        app.add_middleware(ConcurrencyLimitMiddleware, limit=limit)
    app.add_middleware(AuthRateLimitMiddleware, traffic=traffic)
    app.add_middleware(RequestMetricsMiddleware, recorder=metrics)
    return traffic


def build_recorder(settings: Settings, dynamodb: LazyClient | None = None) -> MetricsRecorder:
    """Prometheus off Lambda, Powertools EMF on it (``CLAWDBOT_METRICS`` overrides), with the latency guard
    (whose DynamoDB counter uses ``dynamodb``, a client shared with the other traffic engines, when given)."""
    from clawdbot.metrics import infra
    from clawdbot.metrics.latency_guard import LatencyGuard, build_streak_counter
    from clawdbot.metrics.recorder import MetricsRecorder
    from clawdbot.metrics.sink import MetricsSink, NullSink
    from clawdbot.traffic.factory import on_lambda

    kind = settings.metrics
    if kind == "auto":
        kind = "emf" if on_lambda() else "prometheus"
    sink: MetricsSink
    if kind == "prometheus":
        from clawdbot.metrics.prometheus import PrometheusSink

        sink = PrometheusSink()
        sink.gauge_function("ProcessCpuTime", infra.process_cpu_seconds)
        sink.gauge_function("ProcessMemory", infra.process_memory_bytes)
        for index, read in infra.gpu_readers().items():
            sink.gauge_function("GpuUtilization", read, {"gpu": index})
    elif kind == "emf":
        from clawdbot.metrics.emf import EmfSink

        sink = EmfSink()
    else:
        sink = NullSink()
    guard = LatencyGuard(build_streak_counter(settings, dynamodb), settings.latency_threshold_ms,
                         settings.latency_breach_turns)
    return MetricsRecorder(sink, guard if kind != "off" else None, push_process=kind == "emf")
