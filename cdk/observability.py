"""One dashboard in three rows, and the alarms that page someone through one SNS topic.

Rows, top to bottom, answer three questions: is the infrastructure healthy (endpoint GPU/CPU/memory, Lambda
duration/throttles/concurrency), is the service answering (requests, latency percentiles, 4xx/5xx, model latency,
invocations), and are users being served (turns, completed conversations, satisfaction per A/B variant).

The business metrics are the custom metrics the app emits through Powertools (namespace ``Clawdbot``, dimension
``variant``). They are graphed with ``SEARCH`` expressions (any metric of that name carrying a ``variant``
dimension) rather than fixed dimension sets, so the dashboard shows every variant the app reports — including one
added later, and whatever other dimensions Powertools adds such as ``service`` — without a redeploy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

if TYPE_CHECKING:
    from aws_cdk import aws_apigatewayv2 as apigwv2
    from aws_cdk import aws_kms as kms

    from cdk.functions import PythonFunction
    from cdk.inference import Inference

APP_NAMESPACE = "Clawdbot"
SERVICE_NAME = "clawdbot"
#: Custom metrics the app emits; the business row graphs the first three per variant.
BUSINESS_METRICS = ("Turns", "ConversationsCompleted", "SatisfactionScore")
QUALITY_METRICS = ("TimeToFirstToken", "TokensPerSecond", "LatencyBreach")
ROW_TITLES = ("Infrastructure", "Service", "Business")
WIDTH = 24


class AlarmTopic(Construct):
    """``topic``: KMS-encrypted, TLS-only SNS topic for every alarm; optional e-mail subscription."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey, email: str | None) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Topic", display_name="clawdbot alarms", master_key=key, enforce_ssl=True)
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))


def _search(metric: str, statistic: str, label: str) -> cloudwatch.IMetric:
    period = Duration.minutes(5)
    return cloudwatch.MathExpression(
        expression=f"SEARCH('Namespace=\"{APP_NAMESPACE}\" MetricName=\"{metric}\" variant', '{statistic}', "
                   f"{int(period.to_seconds())})",
        label=label, period=period, using_metrics={})


class Observability(Construct):
    """``dashboard`` and the service alarms (API 5xx, Lambda errors, endpoint 5xx), all to ``topic``."""

    def __init__(self, scope: Construct, construct_id: str, *, topic: sns.ITopic, http_api: apigwv2.HttpApi,
                 functions: dict[str, PythonFunction], inference: Inference) -> None:
        super().__init__(scope, construct_id)
        self.topic = topic
        self.alarms: list[cloudwatch.Alarm] = []
        units = inference.units
        endpoint = inference.endpoint.attr_endpoint_name

        def api_metric(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name=name, statistic=statistic,
                                     dimensions_map={"ApiId": http_api.api_id, "Stage": "$default"},
                                     period=Duration.minutes(1), label=f"{name} {statistic}")

        def instance_metric(name: str, variant: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="/aws/sagemaker/Endpoints", metric_name=name, statistic="Average",
                                     dimensions_map={"EndpointName": endpoint, "VariantName": variant},
                                     period=Duration.minutes(1), label=f"{name} {variant}")

        variants = [v.name for v in inference.quota.variants]
        infrastructure: list[cloudwatch.IWidget] = [
            cloudwatch.GraphWidget(
                title="Endpoint utilization (%)", width=8,
                left=[instance_metric(m, v) for v in variants
                      for m in ("GPUUtilization", "CPUUtilization", "MemoryUtilization")]),
            cloudwatch.GraphWidget(
                title="Lambda duration p90 (ms)", width=6,
                left=[f.function.metric_duration(statistic="p90", label=f"{n} p90") for n, f in functions.items()]),
            cloudwatch.GraphWidget(
                title="Lambda throttles", width=5,
                left=[f.function.metric_throttles(label=n) for n, f in functions.items()]),
            cloudwatch.GraphWidget(
                title="Lambda concurrency", width=5,
                left=[f.function.metric("ConcurrentExecutions", statistic="Maximum", label=n)
                      for n, f in functions.items()]),
        ]
        service: list[cloudwatch.IWidget] = [
            cloudwatch.GraphWidget(title="Requests", width=4, left=[api_metric("Count", "Sum")]),
            cloudwatch.GraphWidget(title="API latency (ms)", width=5,
                                   left=[api_metric("Latency", s) for s in ("p50", "p90", "p99")]),
            cloudwatch.GraphWidget(title="4xx / 5xx", width=4,
                                   left=[api_metric("4xx", "Sum"), api_metric("5xx", "Sum")]),
            cloudwatch.GraphWidget(title="Model latency p90 (us)", width=4,
                                   left=[u.metric("ModelLatency", "p90") for u in units]),
            cloudwatch.GraphWidget(title="Invocations", width=3,
                                   left=[u.metric("Invocations", "Sum") for u in units]),
            cloudwatch.GraphWidget(title="Time to first token / tokens per second", width=4,
                                   left=[_search("TimeToFirstToken", "p90", "TTFT p90")],
                                   right=[_search("TokensPerSecond", "Average", "tokens/s")]),
        ]
        business: list[cloudwatch.IWidget] = [
            cloudwatch.GraphWidget(title="Turns per variant", width=8, left=[_search("Turns", "Sum", "")]),
            cloudwatch.GraphWidget(title="Conversations completed per variant", width=8,
                                   left=[_search("ConversationsCompleted", "Sum", "")]),
            cloudwatch.GraphWidget(title="Satisfaction score per variant", width=8,
                                   left=[_search("SatisfactionScore", "Average", "")]),
        ]
        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard",
            dashboard_name=f"{Stack.of(self).stack_name}-overview",
            default_interval=Duration.hours(3),
        )
        for title, widgets in zip(ROW_TITLES, (infrastructure, service, business), strict=True):
            self.dashboard.add_widgets(cloudwatch.TextWidget(markdown=f"## {title}", width=WIDTH, height=1))
            self.dashboard.add_widgets(*widgets)

        self.alarm("Api5xx", "The chat API answered 5xx to more than 5 requests in each of 3 minutes",
                   api_metric("5xx", "Sum"), threshold=5, periods=3)
        for name, fn in functions.items():
            self.alarm(f"{name}Errors", f"The {name} Lambda failed invocations for 3 minutes",
                       fn.function.metric_errors(period=Duration.minutes(1)), threshold=0, periods=3)
        for unit in units:
            self.alarm(f"Model5xx{unit.label}", f"The SageMaker model ({unit.label}) returned 5xx for 3 minutes",
                       unit.metric("Invocation5XXErrors", "Sum"), threshold=0, periods=3)

    def alarm(self, construct_id: str, description: str, metric: cloudwatch.IMetric, *, threshold: float,
              periods: int) -> cloudwatch.Alarm:
        """An alarm above ``threshold`` for ``periods`` consecutive datapoints, notifying the topic."""
        alarm = cloudwatch.Alarm(
            self, construct_id, alarm_description=description, metric=metric, threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=periods, datapoints_to_alarm=periods,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        self.alarms.append(alarm)
        return alarm

    def notify(self, alarm: cloudwatch.Alarm) -> None:
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        self.alarms.append(alarm)
