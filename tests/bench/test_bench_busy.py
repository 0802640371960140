"""``bench.serving.busy``, the work of ``bench.api_generation``'s host probe: it keeps its thread's core busy for
the time asked, as a generation does, and like ONNX Runtime it leaves the GIL to the other threads meanwhile."""

from __future__ import annotations

import statistics
import sys
import threading
import time
from typing import TYPE_CHECKING

from bench.serving import busy

if TYPE_CHECKING:
    from collections.abc import Callable

NAP_S = 0.001


def _spin(seconds: float) -> None:
    """Pure Python for ``seconds``: it needs the GIL all along and lets it go only when the interpreter makes it."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _lateness_beside(competitor: Callable[[float], object], naps: int = 15) -> float:
    """Median seconds a 1 ms sleep of this thread overruns while ``competitor`` runs on another thread: a
    competitor that holds the GIL keeps this thread from resuming for up to the switch interval."""
    worker = threading.Thread(target=competitor, args=(naps * 0.01,))
    worker.start()
    time.sleep(0.002)
    late = []
    for _ in range(naps):
        started = time.perf_counter()
        time.sleep(NAP_S)
        late.append(time.perf_counter() - started - NAP_S)
    worker.join()
    return statistics.median(late)


def test_busy_takes_the_time_asked() -> None:
    for seconds in (0.0005, 0.02):
        took = busy(seconds)
        assert seconds <= took < seconds + 0.05


def test_busy_leaves_the_gil_to_other_threads() -> None:
    switch = sys.getswitchinterval()
    beside_busy = _lateness_beside(busy)
    beside_spin = _lateness_beside(_spin)
    assert beside_spin > switch / 4, (beside_busy, beside_spin)  # the check can see a held GIL
    assert beside_busy < switch / 5, (beside_busy, beside_spin)
