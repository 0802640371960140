"""``iterate_in_thread`` (the streamed turn's token pump, a fix measured by ``bench.api_generation``): same items in
the same order as iterating in place, the iterator's errors raised to the consumer, and an abandoned stream
closed on the worker's thread."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import pytest

from clawdbot.api.streaming import MAX_AHEAD, iterate_in_thread

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
