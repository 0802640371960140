"""The CloudWatch sink on Lambda: Powertools Metrics, one EMF document per call, printed to stdout.

Powertools' CloudWatch EMF provider serializes and validates each document (namespace, units, at most 100
metrics, at most 29 dimensions); the Lambda log pipeline turns the line into metrics. Dimensions are exactly the
catalogue's labels — the provider's implicit ``service`` dimension is switched off, because a metric's identity
in CloudWatch is its full dimension set and the stack's alarms name ``{variant}`` alone. Documents are flushed
at once rather than at the end of the invocation: each call carries its own dimension set, and a crashed
invocation still reports what it did.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TextIO

from clawdbot.metrics.catalogue import CATALOGUE, NAMESPACE
from clawdbot.metrics.sink import MetricsSink

if TYPE_CHECKING:
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

logger = logging.getLogger(__name__)


class EmfSink(MetricsSink):
    def __init__(self, namespace: str = NAMESPACE, stream: TextIO | None = None) -> None:
        self.namespace = namespace
        #: Where documents go (stdout, which Lambda ships to CloudWatch Logs); tests pass a buffer.
        self.stream = stream

    def _provider(self) -> AmazonCloudWatchEMFProvider:
        from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

        provider = AmazonCloudWatchEMFProvider(namespace=self.namespace)
        provider.service = None  # no implicit "service" dimension (see the module docstring)
        return provider

    def document(self, dimensions: dict[str, str], values: dict[str, float]) -> dict:
        """The EMF document for one call (Powertools builds and validates it)."""
        provider = self._provider()
        for name, value in dimensions.items():
            provider.add_dimension(name=name, value=value or "-")
        for name, value in values.items():
            definition = CATALOGUE[name]
            provider.add_metric(name=name, unit=definition.unit, value=value,
                                resolution=1 if definition.high_resolution else 60)
        return provider.serialize_metric_set()

    def emit(self, dimensions: dict[str, str], values: dict[str, float]) -> None:
        import json
        import sys

        if not values:
            return
        line = json.dumps(self.document(dimensions, values), separators=(",", ":"))
        print(line, file=self.stream or sys.stdout, flush=True)
