"""Infrastructure readings: this process's CPU time and memory, and GPU utilization when a GPU is present.

Plain standard library for the process (``/proc/self/statm`` on Linux, else peak RSS from ``resource``); the GPU
through NVML (``nvidia-ml-py``) when that package is installed and a device answers — the model container
installs it, the Lambda layer does not, and a machine without a GPU simply has no ``GpuUtilization``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)


def process_cpu_seconds() -> float:
    return time.process_time()


def process_memory_bytes() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return float(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(peak if sys.platform == "darwin" else peak * 1024)


def gpu_readers() -> dict[str, Callable[[], float | None]]:
    """One utilization reader per GPU (by index), or none without NVML or a GPU."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception:  # no driver, no device: no GPU metric
        logger.debug("NVML unavailable", exc_info=True)
        return {}

    def reader(index: int) -> Callable[[], float | None]:
        def read() -> float | None:
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:
                return None

        return read

    return {str(i): reader(i) for i in range(count)}
