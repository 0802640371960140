"""Consuming a blocking iterator (a model's token stream) from the event loop, one worker thread per stream.

Starlette's ``iterate_in_threadpool`` hops to the thread pool for every ``next()``: a round trip through the pool's
queue and the loop's wake-up per token. For a small CPU model decoding a token every half millisecond that hop
cost as much as the decoding (``bench.api_generation``: a streamed turn at 53% of the bare loop's tokens/s).
:func:`iterate_batches_in_thread` instead runs the whole iteration on one worker thread of the same pool (same
capacity limit), which hands items to the loop as they come, at most ``MAX_AHEAD`` of them ahead of the consumer:
a slow client holds back the producer instead of growing a queue, and one that hangs up wastes at most that much
work.

The loop is woken (a self-pipe write, a system call on each side) only when the consumer waits for an item it
could take now; it then takes every item that is ready in one batch, so the consumer can answer a batch with one
socket write. A producer faster than ``coalesce_s`` an item is taken in batches at that pace (``TOKEN_COALESCE_S``
for tokens), on the loop's own timer: while a batch is held back the worker does not wake the loop at all. (It did
for the first item after each batch, only for the loop to see it had to wait: the self-pipe write handed the GIL
to the loop mid-burst, and the decoding thread lost ~0.1 ms each time, ~2 ms of a 65 ms streamed turn.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: Items the worker may produce before the consumer has taken them: a slow reader holds the producer back at
#: this many. Items are token ids in a streamed turn (``clawdbot.inference.token_ids``): 1024 is ~0.5 s of a model
#: at 0.5 ms per token, and more than a model at 16 µs per token makes in one write window (``TOKEN_COALESCE_S``),
#: so only a reader that does not keep up ever holds the model back.
MAX_AHEAD = 1024
#: How long a streamed turn holds text that follows the previous write closely, to send it with what is decoded
#: meanwhile: a write (its wake-up, middleware and system calls, ~0.1 ms of CPU) per display frame (60 Hz) at most
#: instead of per token, for a model faster than that; a reader sees the text no later than the next frame would
#: show it. (5 ms means ~13 writes for a 128-token turn of the shipped model instead of ~4; in tokens/s the two are
#: within the noise of ``bench.api_generation`` since the loop stopped waking for held items.)
TOKEN_COALESCE_S = 1 / 60
#: How often a worker waiting for room checks whether its consumer left.
_WAIT_S = 0.1
#: Pumps still running after their consumer left (kept referenced until they finish).
_orphans: set[asyncio.Future[Any]] = set()
_END = object()


class _Handoff:
    """Items passed from the worker thread to the loop under one lock; the loop is woken only if it waits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.room = threading.Condition(self.lock)  # the producer waits here while MAX_AHEAD items are untaken
        self.items: list[Any] = []
        self.done: object | BaseException | None = None  # _END or the iterator's exception, after the items
        self.waiter: asyncio.Future[None] | None = None
        self.waiter_takes_items = True  # False while the consumer holds items back: only the end wakes it
        self.stop = threading.Event()

    def put(self, item: Any) -> bool:
        """Hand ``item`` over, waiting while ``MAX_AHEAD`` are untaken; False (item dropped) once the consumer
        has left. One lock per item: a streamed turn puts every token id."""
        with self.lock:
            while len(self.items) >= MAX_AHEAD:
                if self.stop.is_set():
                    return False
                self.room.wait(_WAIT_S)
            if self.stop.is_set():
                return False
            self.items.append(item)
            if not self.waiter_takes_items:
                return True
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            self._wake(waiter)
        return True

    def finish(self, done: object | BaseException) -> None:
        with self.lock:
            self.done = done
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            self._wake(waiter)

    def _wake(self, waiter: asyncio.Future[None]) -> None:
        try:
            self.loop.call_soon_threadsafe(_resolve, waiter)
        except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
            self.stop.set()

    async def take(self, not_before: float) -> tuple[list[Any], object | BaseException | None]:
        """Every item ready (waiting for one if none is), and the end marker if the iterator is done.

        An item that comes before the loop time ``not_before`` is held until then, with those that follow it,
        unless the iterator ends first: one wake-up and one batch for what a fast producer makes meanwhile.
        """
        loop = self.loop
        while True:
            with self.lock:
                if self.done is not None or (self.items and loop.time() >= not_before):
                    items, self.items = self.items, []
                    if len(items) >= MAX_AHEAD:
                        self.room.notify()
                    return items, self.done
                waiter = self.waiter = loop.create_future()
                # Until not_before an item would be held anyway: only the end wakes us sooner
                holding = bool(self.items) or loop.time() < not_before
                self.waiter_takes_items = not holding
            if not holding:
                await waiter
                continue
            timer = loop.call_at(not_before, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                with self.lock:
                    self.waiter_takes_items = True
                    if self.waiter is waiter:
                        self.waiter = None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def iterate_batches_in_thread(iterator: Iterator[T], coalesce_s: float = 0.0,
                                   on_done: Callable[[], None] | None = None) -> AsyncIterator[list[T]]:
    """Yield ``iterator``'s items in order, produced on one worker thread, as lists of the items ready when the
    consumer asks (never empty); the iterator's exceptions are raised here, after the items before them.

    With ``coalesce_s``, an item that comes less than that long after the previous batch was yielded waits for
    the rest of that time (the end of the iteration does not): a producer faster than that is taken in batches
    of what it made meanwhile, a slower one item by item as before, with no added delay.

    When the consumer stops early (a client hung up), the worker stops after the item in hand and closes the
    iterator on its own thread, so a generator's clean-up (``finally``, ``GeneratorExit``) runs as it would
    have with the iterator consumed in place.

    ``on_done`` is called on the loop once the worker is done with the iterator (exhausted, failed or stopped),
    whether or not the consumer has taken every item yet: a streamed turn's slot is the generation's, not the
    reader's.
    """
    handoff = _Handoff(asyncio.get_running_loop())
    stop = handoff.stop
    put = handoff.put

    def pump() -> None:
        try:
            for item in iterator:
                if not put(item):
                    break
        except BaseException as exc:  # handed to the consumer, which raises it
            handoff.finish(exc)
            return
        finally:
            close = getattr(iterator, "close", None)
            if stop.is_set() and close is not None:
                close()
        handoff.finish(_END)

    worker = asyncio.ensure_future(run_in_threadpool(pump))
    if on_done is not None:
        worker.add_done_callback(lambda _: on_done())
    finished = False
    loop = handoff.loop
    not_before = float("-inf")
    try:
        while True:
            items, done = await handoff.take(not_before)
            if items:
                yield items
                not_before = loop.time() + coalesce_s
            if done is not None:
                finished = True
                if done is not _END:
                    raise done  # type: ignore[misc]
                break
    finally:
        stop.set()
        if finished:
            await worker
        else:
            _orphans.add(worker)
            worker.add_done_callback(_orphans.discard)


async def iterate_in_thread(iterator: Iterator[T]) -> AsyncIterator[T]:
    """:func:`iterate_batches_in_thread`, one item at a time."""
    batches = iterate_batches_in_thread(iterator)
    try:
        async for batch in batches:
            for item in batch:
                yield item
    finally:
        await batches.aclose()
