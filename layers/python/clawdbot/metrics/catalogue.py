"""Every metric the service emits, named once for both sinks.

The CloudWatch name (``Turns``) is the metric's identity: EMF emits it verbatim in namespace ``Clawdbot`` with the
labels as dimensions (the CDK stack's dashboard and alarms use these names). Prometheus cannot take CloudWatch's
units or CamelCase by convention, so its name is derived mechanically — ``clawdbot_`` + snake_case + the base-unit
suffix, durations in seconds rather than milliseconds — and its help text starts with the CloudWatch name, so
either name finds the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

NAMESPACE = "Clawdbot"
PROMETHEUS_PREFIX = "clawdbot_"

Kind = Literal["counter", "histogram", "gauge"]

#: Latency buckets in seconds (Prometheus) — from a fast cached answer to a long generation.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
TOKENS_PER_SECOND_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
SCORE_BUCKETS = (1, 2, 3, 4, 5)

_UNIT_SUFFIX = {"Milliseconds": "_seconds", "Seconds": "_seconds", "Bytes": "_bytes", "Percent": "_percent",
                "Count/Second": "_per_second", "Count": "", "None": ""}


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str
    kind: Kind
    #: CloudWatch unit of the values the app records (Prometheus converts Milliseconds to seconds).
    unit: str
    help: str
    labels: tuple[str, ...] = ()
    #: CloudWatch storage resolution 1 s (alarms can evaluate every 10 s).
    high_resolution: bool = False
    buckets: tuple[float, ...] | None = None
    level: Literal["infrastructure", "service", "business"] = "service"

    @property
    def prometheus_name(self) -> str:
        snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", self.name).lower()
        suffix = _UNIT_SUFFIX.get(self.unit, "")
        for unit_word in ("_seconds", "_bytes", "_percent", "_per_second", "_time"):
            if suffix and snake.endswith(unit_word):
                snake = snake[: -len(unit_word)]
        return PROMETHEUS_PREFIX + snake + suffix

    @property
    def prometheus_scale(self) -> float:
        """Factor from the recorded value to Prometheus' base unit."""
        return 0.001 if self.unit == "Milliseconds" else 1.0


_METRICS = (
    # --- infrastructure
    MetricDef("ProcessCpuTime", "gauge", "Seconds", "CPU time (user + system) this process has used.",
              level="infrastructure"),
    MetricDef("ProcessMemory", "gauge", "Bytes", "Resident memory of this process.", level="infrastructure"),
    MetricDef("ModelLoadTime", "gauge", "Milliseconds", "Time the model (or endpoint client) took to load.",
              level="infrastructure"),
    MetricDef("GpuUtilization", "gauge", "Percent", "GPU busy percentage (only when a GPU is present).",
              labels=("gpu",), level="infrastructure"),
    # --- service
    MetricDef("Requests", "counter", "Count", "HTTP requests answered, by route template and status.",
              labels=("route", "status")),
    MetricDef("RequestLatency", "histogram", "Milliseconds", "Time to the end of the HTTP response.",
              labels=("route", "status"), buckets=LATENCY_BUCKETS),
    MetricDef("Errors", "counter", "Count", "Responses with status >= 400, by status.", labels=("status",)),
    MetricDef("RequestsInFlight", "gauge", "Count", "Requests holding a concurrency slot (local server)."),
    MetricDef("RequestsQueued", "gauge", "Count", "Requests waiting for a concurrency slot (local server)."),
    MetricDef("TurnsInFlight", "gauge", "Count", "Chat turns admitted to the in-process model (local server)."),
    MetricDef("TurnsQueued", "gauge", "Count", "Chat turns waiting for the in-process model (local server)."),
    MetricDef("TimeToFirstToken", "histogram", "Milliseconds", "Turn start to the first streamed token.",
              labels=("variant",), buckets=LATENCY_BUCKETS),
    MetricDef("TokensPerSecond", "histogram", "Count/Second", "Completion tokens per second of turn latency.",
              labels=("variant",), buckets=TOKENS_PER_SECOND_BUCKETS),
    MetricDef("TurnLatency", "histogram", "Milliseconds", "Turn start to the last token.", labels=("variant",),
              buckets=LATENCY_BUCKETS),
    MetricDef("Tokens", "counter", "Count", "Prompt plus completion tokens of finished turns.",
              labels=("variant",)),
    MetricDef("CachedPromptTokens", "counter", "Count",
              "Prompt tokens of finished turns taken from the engine's prefix cache, not computed again.",
              labels=("variant",)),
    MetricDef("LatencyBreach", "counter", "Count",
              "A turn that made N consecutive turns slower than the latency threshold.",
              labels=("variant",), high_resolution=True),
    # --- business
    MetricDef("Turns", "counter", "Count", "Finished chat turns.", labels=("variant",), level="business"),
    MetricDef("ConversationsCompleted", "counter", "Count",
              "Conversations ended by the user (session feedback) with at least one reply.", labels=("variant",),
              level="business"),
    MetricDef("SatisfactionScore", "histogram", "None", "User feedback scores (1-5).", labels=("variant",),
              buckets=SCORE_BUCKETS, level="business"),
)

CATALOGUE: dict[str, MetricDef] = {m.name: m for m in _METRICS}
