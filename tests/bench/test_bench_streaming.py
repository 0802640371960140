"""``iterate_in_thread`` (the streamed turn's token pump, a fix measured by ``bench.api_generation``): same items in
the same order as iterating in place, the iterator's errors raised to the consumer, an abandoned stream closed on
the worker's thread; a fast producer taken in batches, the end never held back; content events from a template
byte for byte the JSON of the whole chunk."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from clawdbot.api.routes.chat import _ContentEvents, _event
from clawdbot.api.schemas import chunk_dict
from clawdbot.api.streaming import MAX_AHEAD, iterate_batches_in_thread, iterate_in_thread

if TYPE_CHECKING:
    from collections.abc import Iterator


def test_items_arrive_in_order_from_one_thread() -> None:
    threads: set[int] = set()

    def numbers() -> Iterator[int]:
        for i in range(500):
            threads.add(threading.get_ident())
            yield i

    async def consume() -> list[int]:
        return [i async for i in iterate_in_thread(numbers())]

    assert asyncio.run(consume()) == list(range(500))
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_an_error_in_the_iterator_reaches_the_consumer_after_the_items_before_it() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("the model failed")

    async def consume() -> list[int]:
        seen: list[int] = []
        with pytest.raises(ValueError, match="the model failed"):
            async for i in iterate_in_thread(failing()):
                seen.append(i)
        return seen

    assert asyncio.run(consume()) == [1, 2]


def test_a_consumer_that_stops_early_gets_the_iterator_closed_on_its_thread() -> None:
    # GIVEN an endless generator that records how it ends
    closed = threading.Event()
    produced: list[int] = []

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                produced.append(i)
                yield i
                i += 1
        finally:
            closed.set()

    # WHEN the consumer leaves after three items (as a client hanging up)
    async def consume() -> list[int]:
        got: list[int] = []
        stream = iterate_in_thread(endless())
        async for i in stream:
            got.append(i)
            if len(got) == 3:
                break
        await stream.aclose()
        await asyncio.to_thread(closed.wait, 10)
        return got

    # THEN the generator's clean-up ran and it stopped producing soon after
    assert asyncio.run(consume()) == [0, 1, 2]
    assert closed.is_set()
    # (three taken, at most MAX_AHEAD more made while they were in hand, plus the one the worker held when it saw
    # the consumer had gone)
    assert len(produced) <= 3 + MAX_AHEAD + 1


def test_a_producer_waits_while_max_ahead_items_are_untaken() -> None:
    # GIVEN a producer of four times MAX_AHEAD items (a streamed turn's token ids), counting what it made
    made: list[int] = []

    def many() -> Iterator[int]:
        for i in range(4 * MAX_AHEAD):
            made.append(i)
            yield i

    # WHEN the consumer takes one batch, then takes nothing for a while (a reader that does not read)
    async def consume() -> tuple[int, int, list[int]]:
        stream = iterate_batches_in_thread(many())
        got = await anext(stream)
        first = len(got)
        await asyncio.sleep(0.3)
        made_meanwhile = len(made)
        async for batch in stream:
            got += batch
        return first, made_meanwhile, got

    first, made_meanwhile, got = asyncio.run(consume())
    # THEN the producer stopped at MAX_AHEAD untaken items (plus the one in hand), and went on when they were taken
    assert made_meanwhile <= first + MAX_AHEAD + 1
    assert got == list(range(4 * MAX_AHEAD))


def test_a_fast_producer_is_taken_in_batches_of_what_it_made_meanwhile() -> None:
    # GIVEN a producer far faster than the coalescing time
    def numbers() -> Iterator[int]:
        yield from range(MAX_AHEAD)

    # WHEN a consumer takes batches with a long coalescing time
    async def consume() -> list[list[int]]:
        return [batch async for batch in iterate_batches_in_thread(numbers(), coalesce_s=0.5)]

    batches = asyncio.run(consume())
    # THEN every item comes once and in order, in fewer batches than items, none empty
    assert [i for batch in batches for i in batch] == list(range(MAX_AHEAD))
    assert len(batches) < MAX_AHEAD and all(batches)


def test_within_the_coalescing_time_the_worker_does_not_wake_the_event_loop() -> None:
    # GIVEN a producer of an item every millisecond for ~0.2 s, and a coalescing time of 40 ms
    def numbers() -> Iterator[int]:
        for i in range(200):
            time.sleep(0.001)
            yield i

    wakes: list[object] = []

    # WHEN a consumer takes batches, counting the worker thread's wake-ups of its loop
    async def consume() -> list[list[int]]:
        loop = asyncio.get_running_loop()
        wake = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            # the hand-off's wake-ups (anyio reports the worker's return the same way, once, at the end)
            if threading.current_thread() is not threading.main_thread() and \
                    getattr(args[0], "__module__", None) == "clawdbot.api.streaming":
                wakes.append(args[0])
            return wake(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        return [batch async for batch in iterate_batches_in_thread(numbers(), coalesce_s=0.04)]

    batches = asyncio.run(consume())
    # THEN the items come in several batches, and the worker woke the loop for the first item and the end only
    # (an item made while the batch before it is held back would wait anyway: a wake-up, a system call and the
    # loop taking the GIL from the decoding thread, for nothing), give or take one after a stall of the machine
    assert [i for batch in batches for i in batch] == list(range(200))
    assert len(batches) >= 3
    assert len(wakes) <= 3, f"{len(wakes)} wake-ups for {len(batches)} batches"


def test_the_end_of_the_iteration_is_not_held_back() -> None:
    # GIVEN a producer of two items and a coalescing time far longer than a test may take
    async def consume() -> list[list[int]]:
        return [batch async for batch in iterate_batches_in_thread(iter([1, 2]), coalesce_s=3600)]

    # THEN the second item comes with the end, not an hour later (the test would hang)
    batches = asyncio.run(consume())
    assert [i for batch in batches for i in batch] == [1, 2]


@pytest.mark.parametrize("text", ["plain", 'quote " and \\ backslash', "line\nbreak\ttab", "é ✓ 🦀", "\u2028\x00"])
def test_a_content_event_is_the_chunk_json_encoded_whole(text: str) -> None:
    common = {"completion_id": "chatcmpl-1", "created": 1700000000, "model": "m \"x\"", "include_usage_field": True}
    assert _ContentEvents(common)(text) == _event(chunk_dict(delta={"content": text}, **common))
