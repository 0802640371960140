"""API keys and rate limits in front of the app: one pure-ASGI middleware and the state it shares.

Per request (every path but ``/healthz``): read ``Authorization: Bearer <key>``, find the key (through a short
in-process cache, so the hot path touches no store), set ``request.state.caller_id`` to the key's id (session
ownership hangs off it), take one request from the key's buckets and add OpenAI's ``x-ratelimit-*`` headers to
the response. A missing or unknown key is a 401 and an empty bucket a 429 with ``Retry-After``, both in OpenAI's
error shape. Tokens are charged when a turn finishes, by :meth:`TrafficControl.on_turn` (a chat-service
observer), because only then are they known.

A local server bound to loopback with no key at all stays open (``make serve`` just works); from the first key
on — or from the start when bound beyond loopback or given a deploy key (as the AWS stack always is) — every
request needs one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from clawdbot.exceptions import ClawdbotError, ServiceUnavailableError
from clawdbot.traffic.exceptions import AuthenticationError, QuotaExceededError, RateLimitExceededError
from clawdbot.traffic.keys import hash_key

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from clawdbot.chat.service import TurnResult
    from clawdbot.traffic.deploy_key import DeployKey
    from clawdbot.traffic.keys import ApiKey
    from clawdbot.traffic.keystore.base import KeyStore
    from clawdbot.traffic.ratelimit.base import Decision, RateLimiter

logger = logging.getLogger(__name__)

#: Paths that never need a key: liveness, and the browser pages with their assets (``clawdbot.web``), which hold
#: no data — the pages call the API with the key the user types.
PUBLIC_PATHS = frozenset({"/healthz", "/", "/ops", "/favicon.ico"})
PUBLIC_PREFIXES = ("/web/",)
#: Bound on cached lookups (valid and invalid keys alike), so a flood of random keys cannot grow memory.
CACHE_LIMIT = 10_000

_OPEN = object()
_MISSING = ("You didn't provide an API key. You need to provide your API key in an Authorization header using "
            "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")


class TrafficControl:
    """Keys (cached), the rate limiter, and the open/closed decision, shared by the middleware and the turn hook.

    ``cache_seconds`` bounds how stale a lookup may be: a revoked key works for at most that long, a new key
    opens a formerly open server within that long. ``deploy_key``: the deploy's key, imported when it is first
    presented and not found (``clawdbot.traffic.deploy_key``).
    """

    def __init__(self, keys: KeyStore, limiter: RateLimiter, *, always_required: bool,
                 cache_seconds: float = 10.0, deploy_key: DeployKey | None = None) -> None:
        self.keys = keys
        self.deploy_key = deploy_key
        self.limiter = limiter
        self.always_required = always_required
        self.cache_seconds = cache_seconds
        self._by_hash: dict[str, tuple[float, ApiKey | None]] = {}
        self._by_id: dict[str, ApiKey] = {}
        self._has_keys: tuple[float, bool] = (-math.inf, False)

    # ----------------------------------------------------------------- keys
    def cached(self, plaintext: str) -> tuple[bool, ApiKey | None]:
        """(hit, key) from the cache alone: no I/O, safe on the event loop."""
        entry = self._by_hash.get(hash_key(plaintext))
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def lookup(self, plaintext: str) -> ApiKey | None:
        """The active key (store read on a cache miss; may block)."""
        hit, key = self.cached(plaintext)
        if hit:
            return key
        key = self.keys.authenticate(plaintext)
        if key is None and self.deploy_key is not None:
            key = self.deploy_key.admit(self.keys, plaintext)
        if self.cache_seconds > 0:
            if len(self._by_hash) >= CACHE_LIMIT:
                self._by_hash.clear()
            self._by_hash[hash_key(plaintext)] = (time.monotonic() + self.cache_seconds, key)
        if key is not None:
            if len(self._by_id) >= CACHE_LIMIT:
                self._by_id.clear()
            self._by_id[key.key_id] = key
        return key

    def open_now(self) -> bool:
        """True while requests need no key: never if always required, else until the first key exists."""
        if self.always_required:
            return False
        expires, has = self._has_keys
        if expires < time.monotonic():
            has = self.keys.has_keys()
            self._has_keys = (time.monotonic() + self.cache_seconds, has)
        return not has

    def open_now_cached(self) -> bool | None:
        if self.always_required:
            return False
        expires, has = self._has_keys
        return None if expires < time.monotonic() else not has

    # ----------------------------------------------------------------- limits
    def on_turn(self, result: TurnResult) -> None:
        """Charge a finished turn's tokens to its caller's buckets (a chat-service observer; runs off-loop)."""
        owner = result.turn.owner
        key = self._by_id.get(owner) if owner else None
        if key is None:
            return
        self.limiter.charge(key.key_id, key.limits, result.prompt_tokens + result.completion_tokens)

    def prime(self) -> None:
        """The key store's and the limiter's clients, made now (a SnapStart init: see ``clawdbot.api.priming``)."""
        self.keys.prime()
        self.limiter.prime()

    def close(self) -> None:
        self.keys.close()
        self.limiter.close()


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else ""
    return None


async def send_error(send: Send, exc: ClawdbotError) -> None:
    """Answer with ``exc`` in OpenAI's error shape, straight from ASGI (the app never sees the request)."""
    body = json.dumps({"error": {"message": exc.message, "type": exc.error_type, "param": exc.param,
                                 "code": exc.code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *((k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _redacted(token: str) -> str:
    return token[:3] + "*" * 4 + token[-4:] if len(token) > 10 else "****"


class AuthRateLimitMiddleware:
    """Authenticates, admits (rate limits) and decorates responses with ``x-ratelimit-*`` headers."""

    def __init__(self, app: ASGIApp, traffic: TrafficControl) -> None:
        self.app = app
        self.traffic = traffic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["path"].startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            admitted = await self._admit(scope, send)
        except ClawdbotError as exc:  # e.g. contention on a DynamoDB bucket: already an HTTP error
            await send_error(send, exc)
            return
        except Exception:  # the key store or limiter cannot be reached: refuse rather than run unmetered
            logger.warning("traffic control unavailable", exc_info=True)
            await send_error(send, ServiceUnavailableError(
                "API key and rate limit checks are unavailable; please retry shortly.",
                code="traffic_control_unavailable", headers={"retry-after": "1"}))
            return
        if admitted is None:
            return
        if admitted is _OPEN:
            await self.app(scope, receive, send)
            return
        headers = admitted

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start" and headers:
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_limits)

    async def _admit(self, scope: Scope, send: Send) -> list[tuple[bytes, bytes]] | object | None:
        """The rate-limit headers of an admitted keyed request, ``_OPEN`` for an open server, or ``None``
        when a refusal has been sent."""
        traffic = self.traffic
        token = _bearer(scope)
        key: ApiKey | None = None
        if token:
            hit, key = traffic.cached(token)
            if not hit:
                key = await run_in_threadpool(traffic.lookup, token)
        if key is None:
            is_open = traffic.open_now_cached()
            if is_open is None:
                is_open = await run_in_threadpool(traffic.open_now)
            if is_open:
                return _OPEN
            message = _MISSING if not token else f"Incorrect API key provided: {_redacted(token)}."
            await send_error(send, AuthenticationError(
                message, code="invalid_api_key" if token else "missing_api_key",
                headers={"www-authenticate": 'Bearer realm="clawdbot"'}))
            return None

        scope.setdefault("state", {})["caller_id"] = key.key_id
        limiter = traffic.limiter
        if key.limits.unlimited:
            decision: Decision = limiter.admit(key.key_id, key.limits)
        elif limiter.blocking:
            decision = await run_in_threadpool(limiter.admit, key.key_id, key.limits)
        else:
            decision = limiter.admit(key.key_id, key.limits)
        headers = decision.headers()
        if not decision.allowed:
            await self._refuse(send, decision, headers)
            return None
        return headers

    @staticmethod
    async def _refuse(send: Send, decision: Decision, limit_headers: list[tuple[bytes, bytes]]) -> None:
        retry = max(1, math.ceil(decision.retry_after))
        headers = {"retry-after": str(retry), **{k.decode(): v.decode() for k, v in limit_headers}}
        exc: RateLimitExceededError
        if decision.reason == "daily_tokens":
            exc = QuotaExceededError("You exceeded your daily token quota; it renews at 00:00 UTC. "
                                     f"Please retry after {retry} seconds.", headers=headers)
        else:
            per = "requests" if decision.reason == "requests" else "tokens"
            exc = RateLimitExceededError(f"Rate limit reached for {per} per minute. Please try again in {retry}s.",
                                         headers=headers)
        await send_error(send, exc)
