"""Per-app resources (store, backend, chat service) and how routes reach them.

Built once per process — at Lambda cold start or server start — and kept on ``app.state``; routes get them
through FastAPI dependencies, so tests can build an app around any store/backend without patching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from clawdbot.chat.service import ChatService
    from clawdbot.config.settings import Settings
    from clawdbot.inference.base import InferenceBackend
    from clawdbot.sessions.base import SessionStore
    from clawdbot.traffic.concurrency import ConcurrencyLimit


@dataclass
class Resources:
    settings: Settings
    store: SessionStore
    backend: InferenceBackend
    chat: ChatService
    #: Unix time the model was loaded (the ``created`` of ``/v1/models``).
    loaded_at: int = 0
    #: Chat turns admitted at once where the model runs in this process (set by traffic control; ``None``: none
    #: held back here, as on Lambda or with a remote model).
    turns: ConcurrencyLimit | None = None


async def get_resources(request: Request) -> Resources:
    """``async`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, a thread hop per request
    for an attribute read (bench.overhead: about 0.3 ms of a turn)."""
    return request.app.state.resources


def caller_id(request: Request) -> str | None:
    """The authenticated caller (API key id) — ``None`` while the server is open (set by traffic control)."""
    return getattr(request.state, "caller_id", None)
