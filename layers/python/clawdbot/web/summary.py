"""``GET /v1/ops/summary``'s body: the metric catalogue's current values, the latency guard, the A/B report.

The operations page polls this instead of parsing Prometheus text in the browser: values come back in the
catalogue's own units (milliseconds, not Prometheus' seconds), keyed by the CloudWatch names the docs and the
AWS dashboard use, with the level (infrastructure / service / business) each belongs to. Counters and histograms
are cumulative since the process started; the page turns successive readings into rates and per-interval
percentiles itself.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

from clawdbot.metrics.catalogue import CATALOGUE

if TYPE_CHECKING:
    from clawdbot.api.dependencies import Resources
    from clawdbot.metrics.catalogue import MetricDef
    from clawdbot.metrics.recorder import MetricsRecorder

logger = logging.getLogger(__name__)

#: The A/B report reads every session of the local store: recomputed at most this often, however many pages poll.
AB_REPORT_MAX_AGE_SECONDS = 10.0
_SAMPLE_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def _definition(family_name: str, by_prometheus: dict[str, MetricDef]) -> MetricDef | None:
    return by_prometheus.get(family_name) or by_prometheus.get(family_name + "_total")


def metric_values(recorder: MetricsRecorder | None) -> dict[str, Any] | None:
    """Every catalogue metric the Prometheus registry holds, or ``None`` where metrics go elsewhere (EMF, off).

    Shape per metric: ``level``, ``kind``, ``unit``, ``help`` and ``series``, one per label set:
    ``{"labels": {...}, "value": x}`` for counters and gauges, ``{"labels": {...}, "count": n, "sum": s,
    "buckets": [[upper bound or null for +Inf, cumulative count], ...]}`` for histograms.
    """
    registry = getattr(getattr(recorder, "sink", None), "registry", None)
    if registry is None:
        return None
    by_prometheus = {m.prometheus_name: m for m in CATALOGUE.values()}
    out: dict[str, Any] = {}
    for family in registry.collect():
        definition = _definition(family.name, by_prometheus)
        if definition is None:
            continue
        scale = definition.prometheus_scale
        series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        for sample in family.samples:
            suffix = next((s for s in _SAMPLE_SUFFIXES if sample.name.endswith(s)), "")
            if suffix == "_created":
                continue
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            entry = series.setdefault(tuple(sorted(labels.items())), {"labels": labels})
            if definition.kind != "histogram":
                entry["value"] = sample.value / scale
            elif suffix == "_bucket":
                bound = float(sample.labels["le"])
                entry.setdefault("buckets", []).append([None if math.isinf(bound) else bound / scale,
                                                        sample.value])
            elif suffix == "_count":
                entry["count"] = sample.value
            elif suffix == "_sum":
                entry["sum"] = sample.value / scale
        out[definition.name] = {"level": definition.level, "kind": definition.kind, "unit": definition.unit,
                                "help": definition.help, "series": list(series.values())}
    return out


def latency_guard(recorder: MetricsRecorder | None, variants: list[str]) -> dict[str, Any] | None:
    """Threshold, streak length that breaches, and each variant's current streak (shared across instances)."""
    guard = getattr(recorder, "guard", None)
    if guard is None:
        return None
    streaks: dict[str, int | None] = {}
    for variant in variants:
        try:
            streaks[variant] = guard.counter.value(variant)
        except Exception:  # the shared counter's store is unreachable: show the rest of the page anyway
            logger.debug("latency streak of %s unreadable", variant, exc_info=True)
            streaks[variant] = None
    return {"threshold_ms": guard.threshold_ms, "turns": guard.turns, "streaks": streaks}


class AbReportCache:
    """The A/B report of the local SQLite store, rebuilt at most every ``max_age`` seconds.

    Other stores (DynamoDB, Redis) have no cheap way to read every session; their report comes from
    ``clawdbot ab report --input`` on exported sessions, and the page says so.
    """

    def __init__(self, max_age: float = AB_REPORT_MAX_AGE_SECONDS) -> None:
        self.max_age = max_age
        self._lock = threading.Lock()
        self._built_at = -math.inf
        self._report: dict[str, Any] | None = None

    def get(self, res: Resources) -> tuple[dict[str, Any] | None, str | None]:
        """(report, reason it is missing)."""
        from clawdbot.sessions.sqlite import SQLiteSessionStore

        store = res.store
        if not isinstance(store, SQLiteSessionStore):
            return None, ("The A/B report reads every session; for this store run `clawdbot ab report --input` "
                          "on exported sessions.")
        with self._lock:
            if time.monotonic() - self._built_at >= self.max_age:
                from clawdbot.traffic.report import build_report, load_sqlite

                settings = res.settings
                records = load_sqlite(store.data_dir, store.path.name)
                self._report = build_report(records, variants=[v.name for v in settings.ab_variants],
                                            idle_seconds=settings.conversation_idle_seconds).to_dict()
                self._built_at = time.monotonic()
            return self._report, None


def known_variants(res: Resources, metrics: dict[str, Any] | None) -> list[str]:
    """Configured variants first, then any other variant a metric has seen."""
    from clawdbot.traffic.ab import DEFAULT_VARIANT

    names = [v.name for v in res.settings.ab_variants] or [DEFAULT_VARIANT]
    for metric in (metrics or {}).values():
        for series in metric["series"]:
            variant = series["labels"].get("variant")
            if variant and variant not in names:
                names.append(variant)
    return names


def build_summary(res: Resources, recorder: MetricsRecorder | None, ab_cache: AbReportCache) -> dict[str, Any]:
    metrics = metric_values(recorder)
    report, ab_reason = ab_cache.get(res)
    return {
        "object": "ops.summary",
        "time": time.time(),
        "model": res.backend.model_id,
        "metrics": metrics,
        "metrics_unavailable": None if metrics is not None else (
            "Metrics go to CloudWatch here (CLAWDBOT_METRICS is not prometheus): see the stack's dashboard."),
        "latency_guard": latency_guard(recorder, known_variants(res, metrics)),
        "ab": report,
        "ab_unavailable": ab_reason,
    }
