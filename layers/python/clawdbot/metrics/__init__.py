"""Three levels of metrics from one catalogue: Prometheus ``/metrics`` locally, CloudWatch EMF on Lambda.

``catalogue`` names every metric once (CloudWatch name, unit, labels); ``prometheus`` and ``emf`` are the two
sinks (imported explicitly: a Lambda never imports prometheus-client); ``recorder`` turns app events (a request,
a turn, feedback) into metric values; ``latency_guard`` keeps the slow-turn streak that raises ``LatencyBreach``.
"""

from clawdbot.metrics.catalogue import CATALOGUE, NAMESPACE, MetricDef

__all__ = ["CATALOGUE", "NAMESPACE", "MetricDef"]
