"""Where metric values go: the contract both sinks implement, and the no-op one (``CLAWDBOT_METRICS=off``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


class MetricsSink(ABC):
    @abstractmethod
    def emit(self, dimensions: dict[str, str], values: dict[str, float]) -> None:
        """Record ``values`` (catalogue name → value, in the catalogue's unit) that share ``dimensions``:
        a counter adds the value, a histogram observes it, a gauge takes it."""

    def gauge_function(self, name: str, read: Callable[[], float | None],  # noqa: B027 - optional
                       dimensions: dict[str, str] | None = None) -> None:
        """Read a gauge when scraped (Prometheus); push sinks ignore it."""


class NullSink(MetricsSink):
    def emit(self, dimensions: dict[str, str], values: dict[str, float]) -> None:
        return None
