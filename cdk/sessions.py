"""Where conversations live: a DynamoDB table by default, or ElastiCache (Valkey) in a private VPC.

DynamoDB is the serverless default: on-demand billing (no idle cost), the ``expires_at`` TTL attribute the
session store writes, point-in-time recovery, and the stack's customer-managed key. Redis/Valkey is for the
lowest per-turn latency and needs a VPC; the Lambdas then run in isolated subnets that reach AWS only through
interface endpoints — there is no NAT and no route to the internet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.nag import acknowledge

if TYPE_CHECKING:
    from aws_cdk import aws_iam as iam
    from aws_cdk import aws_kms as kms

TTL_ATTRIBUTE = "expires_at"
#: Not 6379: a non-default port keeps opportunistic scanners that hit the default port away (cdk-nag AEC5).
REDIS_PORT = 6380
REDIS_NODE_TYPE = "cache.t4g.small"


class SessionTable(Construct):
    """``table``: pk/sk strings, on-demand, TTL ``expires_at``, PITR, customer-managed KMS."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self, "Table",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute=TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )

    def environment(self) -> dict[str, str]:
        return {"CLAWDBOT_SESSION_STORE": "dynamodb", "CLAWDBOT_DYNAMODB_TABLE": self.table.table_name}

    def grant(self, grantee: iam.IGrantable) -> None:
        self.table.grant_read_write_data(grantee)


class PrivateNetwork(Construct):
    """Two-AZ VPC with isolated subnets, flow logs, and endpoints for the AWS APIs the Lambdas call."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self, "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[ec2.SubnetConfiguration(
                name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24)],
        )
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH, encryption_key=key,
                                  removal_policy=RemovalPolicy.DESTROY)
        self.vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))
        self.lambda_security_group = ec2.SecurityGroup(
            self, "LambdaSg", vpc=self.vpc, allow_all_outbound=False,
            description="clawdbot Lambdas: HTTPS to the VPC endpoints and the cache port only")
        endpoint_sg = ec2.SecurityGroup(self, "EndpointSg", vpc=self.vpc, allow_all_outbound=False,
                                        description="VPC interface endpoints: HTTPS from the clawdbot Lambdas")
        endpoint_sg.add_ingress_rule(self.lambda_security_group, ec2.Port.tcp(443), "HTTPS from the Lambdas")
        self.lambda_security_group.add_egress_rule(endpoint_sg, ec2.Port.tcp(443), "HTTPS to the VPC endpoints")
        for name, service in (("SageMakerRuntime", ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME),
                              ("SecretsManager", ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER),
                              ("Sqs", ec2.InterfaceVpcEndpointAwsService.SQS)):
            self.vpc.add_interface_endpoint(name, service=service, private_dns_enabled=True,
                                            security_groups=[endpoint_sg], open=False)


class RedisSessions(Construct):
    """Valkey (Redis-compatible) reachable only from the Lambdas' security group, TLS in transit, KMS at rest."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey, network: PrivateNetwork,
                 mode: str) -> None:
        super().__init__(scope, construct_id)
        vpc = network.vpc
        subnet_ids = [s.subnet_id for s in vpc.isolated_subnets]
        self.security_group = ec2.SecurityGroup(self, "CacheSg", vpc=vpc, allow_all_outbound=False,
                                                description="clawdbot session cache: TLS from the Lambdas only")
        name = f"{Stack.of(self).stack_name.lower()}-sessions"[:40]
        if mode == "serverless":
            cache = elasticache.CfnServerlessCache(
                self, "Serverless",
                engine="valkey",
                major_engine_version="8",
                serverless_cache_name=name,
                kms_key_id=key.key_id,
                security_group_ids=[self.security_group.security_group_id],
                subnet_ids=subnet_ids,
                description="clawdbot sessions (serverless Valkey, TLS only)",
            )
            host, port = cache.attr_endpoint_address, cache.attr_endpoint_port
            port_rule = ec2.Port.tcp_range(6379, 6380)  # serverless: 6379 primary, 6380 reader endpoint
        else:
            subnets = elasticache.CfnSubnetGroup(
                self, "Subnets", description="clawdbot session cache subnets", subnet_ids=subnet_ids)
            group = elasticache.CfnReplicationGroup(
                self, "Cluster",
                replication_group_description="clawdbot sessions (Valkey primary + replica, TLS only)",
                engine="valkey",
                engine_version="8.0",
                cache_node_type=REDIS_NODE_TYPE,
                num_cache_clusters=2,
                automatic_failover_enabled=True,
                multi_az_enabled=True,
                port=REDIS_PORT,
                at_rest_encryption_enabled=True,
                kms_key_id=key.key_id,
                transit_encryption_enabled=True,
                cache_subnet_group_name=subnets.ref,
                security_group_ids=[self.security_group.security_group_id],
                snapshot_retention_limit=1,
            )
            host, port = group.attr_primary_end_point_address, group.attr_primary_end_point_port
            port_rule = ec2.Port.tcp(REDIS_PORT)
            acknowledge(group, "AwsSolutions-AEC6",
                        "No AUTH token: a shared password would have to sit in the Lambdas' environment. The cache "
                        "accepts connections only from the Lambdas' security group inside an isolated VPC, and "
                        "TLS is enforced; network identity is the access control here.")
        self.security_group.add_ingress_rule(network.lambda_security_group, port_rule, "Valkey over TLS")
        network.lambda_security_group.add_egress_rule(self.security_group, port_rule, "Valkey over TLS")
        self.url = f"rediss://{host}:{port}/0"

    def environment(self) -> dict[str, str]:
        return {"CLAWDBOT_SESSION_STORE": "redis", "CLAWDBOT_REDIS_URL": self.url}
