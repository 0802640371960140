"""The Prometheus sink behind the local server's ``/metrics`` (prometheus-client, extra ``local``).

Each app gets its own registry (no process-global state, so tests and several apps in one process never
collide). Gauges whose value is a reading — process CPU and memory, GPU busy, in-flight requests — are read at
scrape time, so the hot path pays nothing for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clawdbot.metrics.catalogue import CATALOGUE
from clawdbot.metrics.sink import MetricsSink

if TYPE_CHECKING:
    from collections.abc import Callable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PrometheusSink(MetricsSink):
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Any] = {}
        self._readers: dict[str, list[tuple[dict[str, str], Callable[[], float | None]]]] = {}
        for m in CATALOGUE.values():
            description = f"{m.name}: {m.help}"
            name = m.prometheus_name
            if m.kind == "counter":
                self._metrics[m.name] = Counter(name, description, m.labels, registry=self.registry)
            elif m.kind == "histogram":
                buckets = [b * 1.0 for b in m.buckets] if m.buckets else Histogram.DEFAULT_BUCKETS
                self._metrics[m.name] = Histogram(name, description, m.labels, buckets=buckets,
                                                  registry=self.registry)
        self.registry.register(_GaugeCollector(self))

    def emit(self, dimensions: dict[str, str], values: dict[str, float]) -> None:
        for name, value in values.items():
            definition = CATALOGUE[name]
            metric = self._metrics.get(name)
            if metric is None:  # a gauge pushed as a value: keep it as a constant reading
                self.gauge_function(name, lambda v=value: v, dimensions)
                continue
            labelled = metric.labels(**{k: dimensions.get(k, "") for k in definition.labels}) \
                if definition.labels else metric
            scaled = value * definition.prometheus_scale
            if definition.kind == "counter":
                labelled.inc(scaled)
            else:
                labelled.observe(scaled)

    def gauge_function(self, name: str, read: Callable[[], float | None],
                       dimensions: dict[str, str] | None = None) -> None:
        readers = self._readers.setdefault(name, [])
        labels = dimensions or {}
        readers[:] = [(d, r) for d, r in readers if d != labels]
        readers.append((labels, read))

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _GaugeCollector:
    """Yields the scrape-time gauges."""

    def __init__(self, sink: PrometheusSink) -> None:
        self.sink = sink

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        for name, readers in self.sink._readers.items():
            definition = CATALOGUE[name]
            family = GaugeMetricFamily(definition.prometheus_name, f"{definition.name}: {definition.help}",
                                       labels=definition.labels)
            for labels, read in readers:
                value = read()
                if value is not None:
                    family.add_metric([labels.get(k, "") for k in definition.labels],
                                      value * definition.prometheus_scale)
            yield family
