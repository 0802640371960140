"""The stack's customer-managed KMS key and the API key secret.

One data key encrypts everything that rests — sessions, queue messages, logs, alarm notifications, the secret,
the SageMaker volumes — so one key policy says who may read clawdbot's data, rotation is on, and deleting the
stack keeps the key (and thus the retained table's data) readable.

The API key reaches AWS only as a NoEcho CloudFormation parameter turned into a Secrets Manager secret: the
template and ``cdk.out`` never hold it, and the Lambdas get the secret's ARN, not the key.
"""

from __future__ import annotations

from aws_cdk import Aws, CfnParameter, RemovalPolicy, SecretValue, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from cdk.nag import acknowledge

#: CloudFormation parameter name; ``clawdbot deploy`` passes ``--parameters ApiKey=...``.
API_KEY_PARAMETER = "ApiKey"
#: What a key may look like: printable ASCII without spaces (OpenAI-style ``sk-...`` keys fit).
API_KEY_PATTERN = "[!-~]+"
API_KEY_MIN_LENGTH = 16
API_KEY_MAX_LENGTH = 256


class Security(Construct):
    """``data_key`` (KMS, rotated) and ``api_key_secret`` (Secrets Manager, from the NoEcho parameter)."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.data_key = kms.Key(
            self, "DataKey",
            description=f"{stack.stack_name}: encrypts sessions, queues, logs, alarms, secrets and model volumes",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # CloudWatch Logs encrypts log groups with the key only when the key policy lets the regional Logs
        # service use it, and only for this account's log groups.
        self.data_key.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowCloudWatchLogsForThisAccount",
            principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            resources=["*"],
            conditions={"ArnLike": {
                "kms:EncryptionContext:aws:logs:arn": f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:*"}},
        ))
        # CloudWatch alarms publish to the encrypted SNS topic; the service needs the key for that alone.
        self.data_key.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowCloudWatchAlarmsToPublish",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"],
            conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
        ))

        api_key = CfnParameter(
            stack, API_KEY_PARAMETER,
            type="String",
            no_echo=True,
            min_length=API_KEY_MIN_LENGTH,
            max_length=API_KEY_MAX_LENGTH,
            allowed_pattern=API_KEY_PATTERN,
            constraint_description=f"{API_KEY_MIN_LENGTH}-{API_KEY_MAX_LENGTH} printable ASCII characters, "
                                   "no spaces",
            description="The API key clients send as 'Authorization: Bearer KEY' (stored in Secrets Manager).",
        )
        self.api_key_secret = secretsmanager.Secret(
            self, "ApiKeySecret",
            description=f"{stack.stack_name}: the bearer API key of the chat API",
            encryption_key=self.data_key,
            secret_string_value=SecretValue.cfn_parameter(api_key),
            removal_policy=RemovalPolicy.DESTROY,
        )
        acknowledge(self.api_key_secret, "AwsSolutions-SMG4",
                    "The secret is the client-facing API key the operator chooses at deploy time and hands to "
                    "clients; it is rotated by redeploying with a new --api-key, because an automatic rotation "
                    "Lambda would silently lock every client out.")
