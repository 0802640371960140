"""The engine runs at most ``max_generations`` generations at once; the rest wait for a slot before their prefill."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from clawdbot.config.settings import Settings
from clawdbot.inference.onnx import OnnxBackend, RuntimeOptions, Sampler
from clawdbot.inference.onnx.runtime import MIN_GENERATIONS, available_cpus, default_generations

if TYPE_CHECKING:
    from pathlib import Path

#: Long enough for a thread that is not held back to have produced its token many times over.
BLOCKED_S = 0.5


def test_a_generation_waits_for_a_slot_and_gets_it_when_one_ends(shipped_dir: Path) -> None:
    engine = OnnxBackend(shipped_dir, options=RuntimeOptions(max_generations=1)).engine
    prompt = [1, 2, 3, 4]
    first = engine.generate(prompt, max_new_tokens=4, sampler=Sampler(0.0))
    next(first)  # GIVEN one generation under way, holding the only slot
    produced: list[int] = []

    def second() -> None:
        produced.extend(engine.generate(prompt, max_new_tokens=2, sampler=Sampler(0.0)))

    waiting = threading.Thread(target=second)
    waiting.start()
    waiting.join(BLOCKED_S)
    # THEN the second waits, before computing anything ...
    assert waiting.is_alive() and produced == []
    # ... until the first ends (a caller that stops iterating ends it too)
    first.close()
    waiting.join(30)
    assert not waiting.is_alive() and len(produced) == 2
    # ... and a slot is free again afterwards: each generation gave its slot back
    assert len(list(engine.generate(prompt, max_new_tokens=2, sampler=Sampler(0.0)))) == 2


def test_a_generation_that_fails_gives_its_slot_back(shipped_dir: Path) -> None:
    engine = OnnxBackend(shipped_dir, options=RuntimeOptions(max_generations=1)).engine

    def broken_sampler(logits: object) -> int:
        raise RuntimeError("sampling failed")

    for _ in range(2):  # the second would wait forever if the first had kept the slot
        try:
            list(engine.generate([1, 2, 3], max_new_tokens=3, sampler=broken_sampler))
        except RuntimeError as exc:
            assert str(exc) == "sampling failed"
    assert len(list(engine.generate([1, 2, 3], max_new_tokens=2, sampler=Sampler(0.0)))) == 2


def test_generations_default_to_the_cpus_and_follow_the_settings(shipped_dir: Path) -> None:
    assert default_generations(1) == MIN_GENERATIONS
    assert default_generations(8) == 8
    assert OnnxBackend(shipped_dir).engine.max_generations == max(MIN_GENERATIONS, available_cpus())
    configured = OnnxBackend.from_settings(Settings(model_dir=shipped_dir, generation_concurrency=3))
    assert configured.engine.max_generations == 3
