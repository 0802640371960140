"""The shared Lambda layer and the one way this stack builds a Python function.

Every function gets the same shape, so the security review happens once: arm64 on the newest Python runtime,
the ``clawdbot`` layer (no third-party code in the function zip), JSON logs into its own KMS-encrypted log group
with a retention, and an execution role that may write to that log group and nothing else until a construct
grants it a named resource.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Annotations, AssetHashType, BundlingOptions, DockerImage, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.bundling import LAMBDA_MODEL_DIR, LAYER_PACKAGE, FunctionBundling, LayerBundling

if TYPE_CHECKING:
    from pathlib import Path

    from aws_cdk import aws_ec2 as ec2
    from aws_cdk import aws_kms as kms

RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
#: Never used: local bundling always succeeds or raises, so CDK never falls back to a Docker build.
_NO_DOCKER = DockerImage.from_registry("local-bundling-only")


def shared_layer(scope: Construct) -> lambda_.LayerVersion:
    """The ``clawdbot`` library and its pinned dependencies for arm64 (see ``cdk/bundling.py``)."""
    return lambda_.LayerVersion(
        scope, "SharedLayer",
        description="clawdbot library + pinned core dependencies (FastAPI, Powertools, tokenizers, redis)",
        code=lambda_.Code.from_asset(
            str(LAYER_PACKAGE.parent.parent),
            asset_hash_type=AssetHashType.OUTPUT,
            bundling=BundlingOptions(image=_NO_DOCKER, local=LayerBundling()),
        ),
        compatible_runtimes=[RUNTIME],
        compatible_architectures=[ARCHITECTURE],
        removal_policy=RemovalPolicy.RETAIN,  # old versions stay callable during a rollback
    )


class PythonFunction(Construct):
    """A handler folder + tokenizer bundle on the shared layer; ``function``, ``role`` and ``log_group``.

    ``snapstart``: Lambda SnapStart on published versions. Each deploy that changes the function publishes a
    version (init runs then, and is snapshotted) and moves the ``live`` alias to it; callers invoke
    ``invoke_target`` (the alias), since an unqualified call runs ``$LATEST``, which SnapStart never covers.
    Superseded versions are deleted with the update, so only the live snapshot is cached (and billed).
    """

    def __init__(self, scope: Construct, construct_id: str, *, source: Path, tokenizer_dir: Path,
                 layer: lambda_.ILayerVersion, key: kms.IKey, description: str, memory_mb: int,
                 timeout: Duration, environment: dict[str, str], reserved_concurrency: int | None = None,
                 vpc: ec2.IVpc | None = None, security_groups: list[ec2.ISecurityGroup] | None = None,
                 snapstart: bool = False) -> None:
        super().__init__(scope, construct_id)
        if not (source / "handler.py").is_file():
            raise FileNotFoundError(f"{source}/handler.py is missing: the {construct_id} function's code")
        self.log_group = logs.LogGroup(
            self, "Logs", retention=LOG_RETENTION, encryption_key=key, removal_policy=RemovalPolicy.DESTROY)
        self.role = iam.Role(
            self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{construct_id}: writes its own log group; every other grant names a resource")
        self.log_group.grant_write(self.role)
        if vpc is not None:  # ENIs in the isolated subnets; Function adds this only to roles it creates itself
            self.role.add_managed_policy(
                iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSLambdaVPCAccessExecutionRole"))
        self.function = lambda_.Function(
            self, "Function",
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler="handler.handler",
            code=lambda_.Code.from_asset(
                str(source),
                asset_hash_type=AssetHashType.OUTPUT,
                bundling=BundlingOptions(image=_NO_DOCKER, local=FunctionBundling(source, tokenizer_dir)),
            ),
            layers=[layer],
            memory_size=memory_mb,
            timeout=timeout,
            reserved_concurrent_executions=reserved_concurrency,
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            environment={"CLAWDBOT_MODEL_DIR": LAMBDA_MODEL_DIR, **environment},
            environment_encryption=key,
            vpc=vpc,
            security_groups=security_groups,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if snapstart else None,
            current_version_options=(lambda_.VersionOptions(removal_policy=RemovalPolicy.DESTROY)
                                     if snapstart else None),
        )
        self.alias: lambda_.Alias | None = None
        self.invoke_target: lambda_.IFunction = self.function
        if snapstart:
            self.alias = lambda_.Alias(self, "Live", alias_name="live", version=self.function.current_version,
                                       description="The published (SnapStart) version callers invoke")
            self.invoke_target = self.alias
            # CDK warns that SnapStart needs published versions: the alias above publishes one per deploy.
            Annotations.of(self.function).acknowledge_warning(
                "@aws-cdk/aws-lambda:snapStartRequirePublish", "a version is published for the live alias")
