"""The public entry: an API Gateway HTTP API whose every route goes to the ``chat_api`` Lambda.

The stage throttles at the quota's rate/burst, so a runaway client is answered 429 by API Gateway before it can
scale Lambda and SageMaker. The integration timeout is set on purpose just under HTTP APIs' 30 s ceiling, and the
function's own timeout one second above it: a generation that outlasts the integration is answered 503 to the
client and then cut, instead of running on — and billing — for minutes with nobody listening (docs/deploy.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jsii
from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_logs as logs
from aws_cdk.aws_apigatewayv2_integrations import HttpLambdaIntegration
from constructs import Construct

from cdk.nag import acknowledge

if TYPE_CHECKING:
    from aws_cdk import aws_kms as kms

    from cdk.config import ApiQuota
    from cdk.functions import PythonFunction

#: Fields of one access-log line (JSON): enough to trace a request through the Lambda's own logs.
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "path": "$context.path",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "integrationStatus": "$context.integrationStatus",
    "integrationError": "$context.integrationErrorMessage",
    "errorMessage": "$context.error.message",
}


def function_timeout(quota: ApiQuota) -> Duration:
    """One second past the integration timeout: enough to finish a response API Gateway still waits for."""
    return Duration.seconds(quota.integration_timeout_seconds + 1)


def function_environment(quota: ApiQuota) -> dict[str, str]:
    """The API function's own settings.

    * Give up on SageMaker *before* API Gateway gives up on the app: a slow generation then reaches the client as
      the app's OpenAI-shaped timeout error (which OpenAI SDKs retry with backoff) instead of API Gateway's bare
      503. One attempt: a retry cannot fit in the budget left.
    * Keys always required (``CLAWDBOT_AUTH``): a public endpoint never runs open, whatever the key store holds.
    * ``CLAWDBOT_MAX_CONCURRENCY`` states the cap the function's reserved concurrency enforces (the app keeps no
      in-process cap on Lambda, where each environment serves one request).
    """
    return {"CLAWDBOT_SAGEMAKER_READ_TIMEOUT": str(max(1, quota.integration_timeout_seconds - 3)),
            "CLAWDBOT_SAGEMAKER_MAX_ATTEMPTS": "1",
            "CLAWDBOT_AUTH": "required",
            "CLAWDBOT_MAX_CONCURRENCY": str(quota.max_concurrency)}


class ChatHttpApi(Construct):
    """``http_api`` + ``stage`` (throttled, access-logged) in front of ``function``."""

    def __init__(self, scope: Construct, construct_id: str, *, function: PythonFunction, quota: ApiQuota,
                 key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        integration = HttpLambdaIntegration(
            "ChatApi", function.invoke_target,  # the live alias under SnapStart, else the function
            timeout=Duration.seconds(quota.integration_timeout_seconds),
            payload_format_version=apigwv2.PayloadFormatVersion.VERSION_2_0,
        )
        self.http_api = apigwv2.HttpApi(
            self, "HttpApi",
            description="clawdbot: OpenAI-compatible chat API",
            default_integration=integration,
            create_default_stage=False,
        )
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.THREE_MONTHS,
                                         encryption_key=key, removal_policy=RemovalPolicy.DESTROY)
        self.stage = apigwv2.HttpStage(
            self, "DefaultStage",
            http_api=self.http_api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=quota.rate_limit, burst_limit=quota.burst_limit),
            access_log_settings=_AccessLogs(apigwv2.LogGroupLogDestination(self.access_logs),
                                            apigw.AccessLogFormat.custom(_json_format(ACCESS_LOG_FIELDS))),
        )
        acknowledge(self.http_api, "AwsSolutions-APIG4",
                    "Clients authenticate with the OpenAI-style 'Authorization: Bearer' API key, which the chat_api "
                    "function checks on every request against the key in Secrets Manager (constant-time compare); "
                    "an API Gateway authorizer would check the same key a second time at the cost of an extra "
                    "Lambda invocation per request.")
        for route in self.http_api.node.find_all():
            if isinstance(route, apigwv2.HttpRoute):
                acknowledge(route, "AwsSolutions-APIG4",
                            "The catch-all route forwards to chat_api, which rejects requests without the bearer "
                            "API key stored in Secrets Manager before any other work (see the API's note).")

    @property
    def url(self) -> str:
        return self.http_api.api_endpoint


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLogs:
    """``IAccessLogSettings`` is a jsii interface, not a struct: it needs an object, a dict will not do."""

    def __init__(self, destination: apigwv2.IAccessLogDestination, log_format: apigw.AccessLogFormat) -> None:
        self._destination = destination
        self._format = log_format

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigw.AccessLogFormat:
        return self._format


def _json_format(fields: dict[str, str]) -> str:
    """API Gateway's access-log format is a template, not JSON; numbers and nulls are left unquoted by it."""
    return "{" + ",".join(f'"{name}":"{value}"' for name, value in fields.items()) + "}"
