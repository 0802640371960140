"""The one clawdbot stack: composes the constructs and wires who may touch what.

Every grant here names a resource — the table, the queue, the secret, the one endpoint — so reading this file
is reading the stack's permission model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam

from cdk import api, chat_queue, functions, inference, observability, security, sessions
from cdk.config import REPO_ROOT
from cdk.nag import acknowledge

if TYPE_CHECKING:
    from pathlib import Path

    from constructs import Construct

    from cdk.config import StackInputs

FUNCTIONS_DIR = REPO_ROOT / "functions"
POWERTOOLS_ENV = {
    "POWERTOOLS_SERVICE_NAME": observability.SERVICE_NAME,
    "POWERTOOLS_METRICS_NAMESPACE": observability.APP_NAMESPACE,
    "POWERTOOLS_LOG_LEVEL": "INFO",
}


class ClawdbotStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, inputs: StackInputs, build_dir: Path,
                 **kwargs: object) -> None:
        super().__init__(scope, construct_id, description="clawdbot: OpenAI-compatible chat API on Lambda + "
                         f"SageMaker (quota {inputs.quota_name})", **kwargs)  # type: ignore[arg-type]
        quota = inputs.quota
        sec = security.Security(self, "Security")
        key = sec.data_key
        alarms = observability.AlarmTopic(self, "Alarms", key=key, email=inputs.alarm_email)

        vpc_args: dict[str, object] = {}
        store: sessions.SessionTable | sessions.RedisSessions
        if inputs.session_store == "redis":
            network = sessions.PrivateNetwork(self, "Network", key=key)
            store = sessions.RedisSessions(self, "Sessions", key=key, network=network, mode=inputs.redis_mode)
            vpc_args = {"vpc": network.vpc, "security_groups": [network.lambda_security_group]}
        else:
            store = sessions.SessionTable(self, "Sessions", key=key)

        model = inference.Inference(self, "Inference", model=inputs.model, quota=quota.inference, key=key,
                                    alarm_topic=alarms.topic, cache_dir=build_dir / "models")
        queue = chat_queue.ChatQueue(self, "Queue", key=key, worker_timeout_seconds=quota.worker.timeout_seconds)
        queue.dlq_alarm.add_alarm_action(cw_actions.SnsAction(alarms.topic))

        environment = {
            **POWERTOOLS_ENV,
            **store.environment(),
            **model.environment(),
            **queue.environment(),
            "CLAWDBOT_API_KEY_SECRET_ARN": sec.api_key_secret.secret_arn,
        }
        if inputs.reply_topic_arns:  # the API refuses other targets, the worker skips them
            environment["CLAWDBOT_REPLY_TOPIC_ARNS"] = ",".join(inputs.reply_topic_arns)
        layer = functions.shared_layer(self)
        chat_api = functions.PythonFunction(
            self, "ChatApi", source=FUNCTIONS_DIR / "chat_api", tokenizer_dir=inputs.tokenizer_dir, layer=layer,
            key=key, description="clawdbot chat API (FastAPI via Mangum)", memory_mb=quota.api.memory_mb,
            timeout=api.function_timeout(quota.api), reserved_concurrency=quota.api.max_concurrency,
            environment={**environment, **api.function_environment(quota.api)}, snapstart=quota.api.snapstart,
            **vpc_args)  # type: ignore[arg-type]
        worker = functions.PythonFunction(
            self, "ChatWorker", source=FUNCTIONS_DIR / "chat_worker", tokenizer_dir=inputs.tokenizer_dir,
            layer=layer, key=key, description="clawdbot chat-turn worker (SQS FIFO batches)",
            memory_mb=quota.worker.memory_mb, timeout=Duration.seconds(quota.worker.timeout_seconds),
            environment={**environment, **queue.worker_environment()}, snapstart=quota.worker.snapstart,
            **vpc_args)  # type: ignore[arg-type]
        queue.attach(worker, quota.worker)
        if inputs.reply_topic_arns:  # the worker publishes turn outcomes to exactly the configured topics
            worker.role.add_to_policy(iam.PolicyStatement(actions=["sns:Publish"],
                                                          resources=list(inputs.reply_topic_arns)))

        queue.queue.grant_send_messages(chat_api.role)  # POST .../turns enqueues; the worker only receives
        for fn in (chat_api, worker):
            model.grant_invoke(fn.role)
            sec.api_key_secret.grant_read(fn.role)
            if isinstance(store, sessions.SessionTable):
                store.grant(fn.role)
            if vpc_args:
                _acknowledge_vpc_access(fn)
            _acknowledge_kms_variants(fn)

        http = api.ChatHttpApi(self, "Api", function=chat_api, quota=quota.api, key=key)
        observability.Observability(
            self, "Observability", topic=alarms.topic, http_api=http.http_api,
            functions={"ChatApi": chat_api, "ChatWorker": worker}, inference=model)

        CfnOutput(self, "ApiUrl", value=http.url, description="OpenAI base URL: <ApiUrl>/v1")
        CfnOutput(self, "ApiKeySecretArn", value=sec.api_key_secret.secret_arn)
        CfnOutput(self, "EndpointName", value=model.endpoint.attr_endpoint_name)
        CfnOutput(self, "QueueUrl", value=queue.queue.queue_url)
        CfnOutput(self, "AlarmTopicArn", value=alarms.topic.topic_arn)


def _acknowledge_vpc_access(fn: functions.PythonFunction) -> None:
    """Lambda's ENI management API has no resource-level permissions; AWS's managed policy is the documented form."""
    acknowledge(fn.role, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSLambdaVPCAccessExecutionRole]",
                "AWSLambdaVPCAccessExecutionRole grants only the EC2 network-interface actions Lambda needs to attach "
                "the function to the isolated subnets; those actions support no resource scoping, so a custom "
                "policy would carry the same '*' without AWS keeping it current.")


def _acknowledge_kms_variants(fn: functions.PythonFunction) -> None:
    """CDK's grants for a KMS-encrypted table/queue use two action wildcards, both on the one named key."""
    policy = fn.role.node.find_child("DefaultPolicy")
    for action in ("kms:ReEncrypt*", "kms:GenerateDataKey*"):
        acknowledge(policy, f"AwsSolutions-IAM5[Action::{action}]",
                    f"{action} is granted on the stack's single data key ARN only, never on '*'; the wildcard spans "
                    "just the variants (ReEncryptFrom/To, GenerateDataKey/WithoutPlaintext) that the DynamoDB and "
                    "SQS clients call to read and write records encrypted with that key.")
