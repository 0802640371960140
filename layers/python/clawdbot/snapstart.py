"""Lambda SnapStart: what a handler must do so that one initialized environment can be resumed many times.

With SnapStart (the stack turns it on for ``chat_api``), Lambda runs the handler module's import and init when a
version is *published*, snapshots the microVM, and resumes every new execution environment from that snapshot:
the ~0.4 s of importing FastAPI, pydantic and botocore and building the app is paid once per deploy instead of on
every cold start (docs/performance.md). Two kinds of state in the snapshot would then be shared or stale:

* **Pseudo-random state.** Every environment resumed from one snapshot starts with the same ``random`` state, so
  the jittered retry back-offs (DynamoDB conditional-write retries, the rate limiter's) would be identical in
  all of them: the synchronized retries jitter exists to prevent. It is reseeded from the OS after restore.
  (``uuid4``, ``secrets`` and ``os.urandom`` read the kernel each call and are unaffected.)
* **What changed since the publish.** The deploy's API key lives in Secrets Manager, and a redeploy with a new
  ``--api-key`` changes the secret without publishing a new version: a hash of it read before the snapshot is
  dropped after each restore (:func:`on_restore`; ``clawdbot.traffic.deploy_key`` reads it when a key it does not
  know is first presented).
* **Open connections.** Init (priming) or the requests before the snapshot may leave sockets to DynamoDB or Redis
  in the clients' pools. Hours later, in another microVM, the peer has long forgotten them; a request sent on one
  can wait for a timeout instead of failing fast. Before the snapshot every pooled connection is closed; each
  client reconnects on its next call.

What the first request would otherwise do lazily (clients, FastAPI's per-route state) is done during a SnapStart
init by ``clawdbot.api.priming``, so that it is in the snapshot too.

Registration goes through ``snapshot_restore_py``, which Lambda's managed Python runtime ships (and ``awslambdaric``
depends on); where it is absent the hooks are simply not registered, as nothing will snapshot the process.
"""

from __future__ import annotations

import gc
import logging
import os
import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Work that must be redone in each restored environment, in registration order (see :func:`on_restore`).
_restore_callbacks: list[Callable[[], object]] = []


def snapshotting() -> bool:
    """True while a SnapStart version is being initialized: the process will be snapshotted and restored."""
    return os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start"


def on_restore(callback: Callable[[], object]) -> bool:
    """Run ``callback`` after each restore if this process is being initialized for SnapStart; True if kept.

    Outside a SnapStart init nothing is kept: the init that just ran is the one this environment serves with.
    """
    if not snapshotting():
        return False
    _restore_callbacks.append(callback)
    return True


def register_hooks() -> bool:
    """Register :func:`before_snapshot` and :func:`after_restore` with the runtime when this init is for a
    SnapStart version; False otherwise (an on-demand init, or a runtime without hooks)."""
    if not snapshotting():
        return False
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:  # not on Lambda's runtime (nor with awslambdaric installed): nothing will snapshot us
        return False
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
    return True


def before_snapshot() -> int:
    """Close every pooled network connection (boto3/botocore clients, redis pools); the number closed."""
    closed = drop_connections()
    logger.info("snapshot: %d pooled connection(s) closed; clients reconnect on their next call", closed)
    return closed


def after_restore() -> None:
    """Give this environment its own pseudo-random state (seeded from ``os.urandom``), then redo the work
    registered with :func:`on_restore`."""
    random.seed()
    for callback in _restore_callbacks:
        callback()
    logger.info("restored from a snapshot: random state reseeded, %d restore step(s) run", len(_restore_callbacks))


def drop_connections() -> int:
    """Close the pooled connections of every botocore client and redis connection pool alive in the process.

    The clients are built lazily in several modules (sessions, key store, rate limiter, SageMaker backend, queue),
    so they are found on the heap rather than through a registry each would have to remember to join. Both kinds
    stay usable: a closed botocore pool and a disconnected redis pool open new connections on demand.
    """
    closed = 0
    botocore_client = _class("botocore.client", "BaseClient")
    redis_pool = _class("redis.connection", "ConnectionPool")
    kinds = tuple(kind for kind in (botocore_client, redis_pool) if kind is not None)
    if not kinds:
        return 0
    for obj in gc.get_objects():
        kind = type(obj)  # not isinstance: that reads __class__, which some proxies on the heap compute noisily
        if not issubclass(kind, kinds):
            continue
        if botocore_client is not None and issubclass(kind, botocore_client):
            closed += _open_botocore_connections(obj)
            obj.close()
        else:
            connections = [*getattr(obj, "_in_use_connections", ()), *getattr(obj, "_available_connections", ())]
            closed += sum(1 for connection in connections if getattr(connection, "_sock", None) is not None)
            obj.disconnect()
    return closed


def _class(module: str, name: str) -> type | None:
    """``module.name`` if that module is already imported (nothing is imported just to look)."""
    import sys

    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


def _open_botocore_connections(client: Any) -> int:
    """Open connections in a botocore client's urllib3 pools (for the count logged; 0 if the layout differs)."""
    try:
        manager = client._endpoint.http_session._manager
        pools = [manager.pools[key] for key in manager.pools.keys()]  # noqa: SIM118 - it cannot be iterated
        return sum(1 for pool in pools for conn in list(pool.pool.queue)
                   if conn is not None and getattr(conn, "sock", None) is not None)
    except AttributeError:
        return 0
