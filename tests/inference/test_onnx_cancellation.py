"""A generation whose caller has gone stops before its next step (``clawdbot.inference.cancellation``)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from clawdbot.inference.cancellation import caller_gone, cancellable, watching
from clawdbot.inference.exceptions import GenerationCancelledError
from clawdbot.inference.onnx import OnnxBackend, Sampler
from clawdbot.inference.types import ChatMessage, GenerationParams

if TYPE_CHECKING:
    from pathlib import Path

PROMPT = [ChatMessage("user", "Tell me about the sea.")]


def test_a_generation_stops_at_the_step_after_its_caller_goes(shipped_backend: OnnxBackend) -> None:
    engine = shipped_backend.engine
    ids = shipped_backend.encode_prompt(PROMPT)
    with cancellable() as gone:
        # GIVEN a generation that has made three tokens
        tokens = engine.generate(ids, max_new_tokens=40, sampler=Sampler(0.0))
        taken = [next(tokens) for _ in range(3)]
        # WHEN its caller goes
        gone.set()
        # THEN the next step is not run: the generation ends with the error that says so
        with pytest.raises(GenerationCancelledError, match="stopped after 3 tokens") as raised:
            next(tokens)
    assert raised.value.status_code == 499
    # and outside the block a generation runs to its end, with the same first tokens (the caller's event is gone)
    assert caller_gone() is None
    assert list(engine.generate(ids, max_new_tokens=40, sampler=Sampler(0.0)))[:3] == taken


def test_a_caller_gone_before_the_start_costs_no_prefill(shipped_backend: OnnxBackend) -> None:
    ids = shipped_backend.encode_prompt(PROMPT)
    with cancellable() as gone:
        gone.set()
        with pytest.raises(GenerationCancelledError, match="before the turn began"):
            next(shipped_backend.engine.generate(ids, max_new_tokens=5, sampler=Sampler(0.0)))


def test_a_whole_completion_stops_on_a_thread_that_copies_the_context(shipped_backend: OnnxBackend) -> None:
    # GIVEN a completion that would run to the model's context (no end-of-sequence token allowed), started on a
    # pool thread with the caller's context, as the chat API and the SageMaker container start one
    eos = shipped_backend.eos_token_ids
    params = GenerationParams(max_tokens=400, temperature=1.0, logit_bias=tuple((t, -100.0) for t in eos))
    started = threading.Event()

    def complete() -> Any:
        started.set()
        return shipped_backend.generate(PROMPT, params)

    with cancellable() as gone, ThreadPoolExecutor(1) as pool:
        future = pool.submit(contextvars.copy_context().run, complete)
        started.wait(30)
        # WHEN the caller goes while it runs
        gone.set()
        # THEN it ends with the error instead of a completion (unless it had already finished: never at 400 tokens)
        with pytest.raises(GenerationCancelledError):
            future.result(60)


def test_the_prefix_cache_keeps_a_stopped_run(genai_dir: Path) -> None:
    backend = OnnxBackend(genai_dir)
    cache = backend.engine.prefix_cache
    assert cache is not None
    ids = backend.encode_prompt(PROMPT)
    with cancellable() as gone:
        tokens = backend.engine.generate(ids, max_new_tokens=20, sampler=Sampler(0.0))
        taken = [next(tokens), next(tokens)]
        gone.set()
        with pytest.raises(GenerationCancelledError):
            next(tokens)
    # THEN the run is stored as a consumer that stops iterating leaves it: the prompt and the token fed back
    (entry,) = cache._entries.values()
    assert entry.ids == [*ids, taken[0]]


def test_watching_sets_the_event_on_a_disconnect_and_only_then() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        async with watching(messages.get) as gone:
            inside = caller_gone() is gone
            await asyncio.sleep(0.01)
            before = gone.is_set()
            await messages.put({"type": "http.disconnect"})
            for _ in range(100):
                if gone.is_set():
                    break
                await asyncio.sleep(0.001)
            after = gone.is_set()
        return inside and caller_gone() is None, before, after

    inside, before, after = asyncio.run(scenario())
    assert inside, "the event is the current one within the block, and none after it"
    assert not before, "nothing set it while the client was there"
    assert after, "the disconnect set it"


def test_watching_ends_its_watch_with_the_block() -> None:
    async def scenario() -> bool:
        cancelled = asyncio.Event()

        async def receive() -> dict[str, Any]:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return {"type": "http.disconnect"}

        async with watching(receive):
            await asyncio.sleep(0.01)
        await asyncio.wait_for(cancelled.wait(), 5)
        return cancelled.is_set()

    assert asyncio.run(scenario())
