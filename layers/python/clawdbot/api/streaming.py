"""Consuming a blocking iterator (a model's token stream) from the event loop, one worker thread per stream.

Starlette's ``iterate_in_threadpool`` hops to the thread pool for every ``next()``: a round trip through the pool's
queue and the loop's wake-up per token. For a small CPU model decoding a token every half millisecond that hop
cost as much as the decoding (``bench.api_generation``: a streamed turn at 53% of the bare loop's tokens/s).
:func:`iterate_in_thread` instead runs the whole iteration on one worker thread of the same pool (same capacity
limit), which hands items to the loop as they come, at most ``MAX_AHEAD`` of them ahead of the consumer: a slow
client holds back the producer instead of growing a queue, and one that hangs up wastes at most that much work.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

logger = logging.getLogger(__name__)

T = TypeVar("T")
_ITEM, _ERROR, _END = 0, 1, 2
#: Items the worker may produce before the consumer has taken them (tokens: a few ms of decoding).
MAX_AHEAD = 64
#: How often a worker waiting for room checks whether its consumer left.
_WAIT_S = 0.1
#: Pumps still running after their consumer left (kept referenced until they finish).
_orphans: set[asyncio.Future[Any]] = set()


async def iterate_in_thread(iterator: Iterator[T]) -> AsyncIterator[T]:
    """Yield ``iterator``'s items, produced on one worker thread; its exceptions are raised here.

    When the consumer stops early (a client hung up), the worker stops after the item in hand and closes the
    iterator on its own thread, so a generator's clean-up (``finally``, ``GeneratorExit``) runs as it would
    have with the iterator consumed in place.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    stop = threading.Event()
    room = threading.Semaphore(MAX_AHEAD)

    def put(kind: int, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
            stop.set()

    def pump() -> None:
        try:
            for item in iterator:
                while not room.acquire(timeout=_WAIT_S):
                    if stop.is_set():
                        break
                if stop.is_set():
                    break
                put(_ITEM, item)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_ERROR, exc)
            return
        finally:
            close = getattr(iterator, "close", None)
            if stop.is_set() and close is not None:
                close()
        put(_END, None)

    worker = asyncio.ensure_future(run_in_threadpool(pump))
    finished = False
    try:
        while True:
            kind, value = await queue.get()
            if kind == _END:
                finished = True
                break
            if kind == _ERROR:
                finished = True
                raise value
            room.release()
            yield value
    finally:
        stop.set()
        if finished:
            await worker
        else:
            _orphans.add(worker)
            worker.add_done_callback(_orphans.discard)
