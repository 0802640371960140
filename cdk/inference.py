"""The SageMaker side: our ONNX container, the model archive, the endpoint, and how it scales.

Two placements, picked by the quota:

* ``endpoint`` — one production variant per A/B arm, each with its own instances and weight. Each variant scales
  through Application Auto Scaling on two signals: target tracking on invocations per instance (steady load),
  and a step policy driven by an alarm on model latency that must breach for 5 consecutive one-minute datapoints
  (the product rule "5 slow requests in a row -> scale out": sustained slowness, not a single spike).
* ``inference_component`` — the model as an inference component on a shared, managed-scaling variant: it asks
  for a share of the instance's GPUs and can scale to zero copies when idle; a "no capacity" alarm brings the
  first copy back when a request arrives.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aws_cdk import Aws, Duration, IgnoreMode, RemovalPolicy, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from cdk.config import REPO_ROOT, has_local_nvme
from cdk.model_package import package_model
from cdk.nag import acknowledge

if TYPE_CHECKING:
    from pathlib import Path

    from aws_cdk import aws_kms as kms
    from aws_cdk import aws_sns as sns

    from cdk.config import InferenceQuota, ModelSource

#: Built from the repository root (it copies the ``clawdbot`` package); its ``.dockerignore`` sits beside it.
INFERENCE_DOCKERFILE = REPO_ROOT / "functions" / "inference" / "Dockerfile"
#: Build arguments of the CUDA flavour of the same Dockerfile (onnxruntime-gpu falls back to CPU without a GPU).
GPU_BUILD_ARGS = {"BASE_IMAGE": "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04", "ONNXRUNTIME": "onnxruntime-gpu"}
#: Consecutive breaching one-minute datapoints before the latency alarm adds capacity.
LATENCY_DATAPOINTS = 5
SAGEMAKER_NAMESPACE = "AWS/SageMaker"


def is_gpu_instance(instance_type: str) -> bool:
    """ml.g* / ml.p* instance families carry NVIDIA GPUs."""
    family = instance_type.split(".")[1] if instance_type.count(".") >= 2 else ""
    return family[:1] in ("g", "p")


def inference_image(scope: Construct, construct_id: str, *, gpu: bool,
                    dockerfile: Path = INFERENCE_DOCKERFILE) -> ecr_assets.DockerImageAsset:
    """The container asset: synth only copies the build context (filtered like ``docker build`` would)."""
    if not dockerfile.is_file():
        raise FileNotFoundError(f"{dockerfile} is missing: the SageMaker inference container")
    ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
    exclude = [line.strip() for line in ignore_file.read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.lstrip().startswith("#")] if ignore_file.is_file() else []
    return ecr_assets.DockerImageAsset(
        scope, construct_id,
        directory=str(REPO_ROOT),
        file=dockerfile.relative_to(REPO_ROOT).as_posix(),
        platform=ecr_assets.Platform.LINUX_AMD64,
        build_args=GPU_BUILD_ARGS if gpu else None,
        exclude=exclude,
        ignore_mode=IgnoreMode.DOCKER,
    )


class ScaledUnit:
    """What one scalable target scales: an endpoint variant or an inference component, with its metric dims."""

    def __init__(self, label: str, resource_id: str, dimension: str, metric_dims: dict[str, str]) -> None:
        self.label = label
        self.resource_id = resource_id
        self.dimension = dimension
        self.metric_dims = metric_dims
        self.target: appscaling.ScalableTarget | None = None
        self.latency_alarm: cloudwatch.Alarm | None = None

    def metric(self, name: str, statistic: str) -> cloudwatch.Metric:
        """A one-minute SageMaker metric of this unit (SageMaker publishes at one-minute resolution)."""
        return cloudwatch.Metric(namespace=SAGEMAKER_NAMESPACE, metric_name=name, dimensions_map=self.metric_dims,
                                 statistic=statistic, period=Duration.minutes(1), label=f"{name} {self.label}")


class Inference(Construct):
    """``endpoint`` (name in ``endpoint_name``), ``units`` (one per variant or component) with their scaling."""

    def __init__(self, scope: Construct, construct_id: str, *, model: ModelSource, quota: InferenceQuota,
                 key: kms.IKey, alarm_topic: sns.ITopic, cache_dir: Path,
                 dockerfile: Path = INFERENCE_DOCKERFILE) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.quota = quota
        self.model_name = model.name
        self.endpoint_name = f"{stack.stack_name.lower()}-chat"
        #: The model's inference component (placement ``inference_component``): SageMaker routes an invocation of
        #: such an endpoint only when it names the component, so the Lambdas get this very name.
        self.component_name = f"{self.endpoint_name}-model"

        # Pre-created so it is encrypted and expires; SageMaker writes the container's stdout into it.
        self.log_group = logs.LogGroup(
            self, "EndpointLogs", log_group_name=f"/aws/sagemaker/Endpoints/{self.endpoint_name}",
            retention=logs.RetentionDays.ONE_MONTH, encryption_key=key, removal_policy=RemovalPolicy.DESTROY)
        self.role = iam.Role(self, "ExecutionRole", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
                             description="clawdbot SageMaker model: pull its image, read its archive, write logs")
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams", "logs:CreateLogGroup"],
            resources=[self.log_group.log_group_arn]))

        image = inference_image(self, "Image", gpu=any(is_gpu_instance(v.instance_type) for v in quota.variants),
                                dockerfile=dockerfile)
        image.repository.grant_pull(self.role)
        acknowledge(self.role.node.find_child("DefaultPolicy"), "AwsSolutions-IAM5[Resource::*]",
                    "ecr:GetAuthorizationToken has no resource-level permissions (AWS documents '*' as its only "
                    "resource); the image pull actions themselves are limited to the one assets repository.")

        model_data_url = self._model_data(model, cache_dir)
        self.model = sagemaker.CfnModel(
            self, "Model",
            execution_role_arn=self.role.role_arn,
            enable_network_isolation=True,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image.image_uri,
                model_data_url=model_data_url,
                environment={"CLAWDBOT_LOG_LEVEL": "INFO", "CLAWDBOT_MODEL_NAME": model.name},
            ),
        )
        self.model.node.add_dependency(self.role)
        acknowledge(self.model, "AwsSolutions-SM1",
                    "The model runs with EnableNetworkIsolation=true: its container gets no network interface at "
                    "all (SageMaker fetches the image and archive on its behalf), which is stricter than "
                    "placing it in a VPC.")

        if quota.placement == "endpoint":
            self.units = self._variant_endpoint(key)
        else:
            self.units = self._component_endpoint(key)
        for unit in self.units:
            self._autoscale(unit, alarm_topic)

    # ------------------------------------------------------------------------------------------- model data
    def _model_data(self, model: ModelSource, cache_dir: Path) -> str:
        if model.local_dir is not None:
            archive = s3_assets.Asset(self, "ModelArchive", path=str(package_model(model.local_dir, cache_dir)))
            bucket, key = archive.s3_bucket_name, archive.s3_object_key
            url = archive.s3_object_url
        else:
            bucket, key = str(model.s3_bucket), str(model.s3_key)
            url = str(model.s3_uri)
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[f"arn:{Aws.PARTITION}:s3:::{bucket}/{key}"]))
        return url

    # ------------------------------------------------------------------------------------------- endpoints
    def _volume_key(self, instance_type: str, key: kms.IKey) -> str | None:
        return None if has_local_nvme(instance_type) else key.key_arn

    def _variant_endpoint(self, key: kms.IKey) -> list[ScaledUnit]:
        variants = self.quota.variants
        kms_types = {self._volume_key(v.instance_type, key) is not None for v in variants}
        config = sagemaker.CfnEndpointConfig(
            self, "EndpointConfig",
            kms_key_id=key.key_arn if kms_types == {True} else None,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=v.name,
                    model_name=self.model.attr_model_name,
                    initial_instance_count=self.quota.min_capacity,
                    instance_type=v.instance_type,
                    initial_variant_weight=v.weight,
                )
                for v in variants
            ],
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self, "Endpoint", endpoint_name=self.endpoint_name, endpoint_config_name=config.attr_endpoint_config_name)
        return [ScaledUnit(
            label=v.name,
            resource_id=f"endpoint/{self.endpoint.attr_endpoint_name}/variant/{v.name}",
            dimension="sagemaker:variant:DesiredInstanceCount",
            metric_dims={"EndpointName": self.endpoint.attr_endpoint_name, "VariantName": v.name},
        ) for v in variants]

    def _component_endpoint(self, key: kms.IKey) -> list[ScaledUnit]:
        variant = self.quota.variants[0]
        component = self.quota.component
        assert component is not None  # guaranteed by InferenceQuota validation
        config = sagemaker.CfnEndpointConfig(
            self, "EndpointConfig",
            execution_role_arn=self.role.role_arn,
            kms_key_id=self._volume_key(variant.instance_type, key),
            production_variants=[sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                variant_name=variant.name,
                instance_type=variant.instance_type,
                initial_instance_count=1,
                managed_instance_scaling=sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
                    status="ENABLED",
                    min_instance_count=0 if self.quota.min_capacity == 0 else 1,
                    max_instance_count=component.max_instances,
                ),
                routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(
                    routing_strategy="LEAST_OUTSTANDING_REQUESTS"),
            )],
        )
        config.node.add_dependency(self.role)
        self.endpoint = sagemaker.CfnEndpoint(
            self, "Endpoint", endpoint_name=self.endpoint_name, endpoint_config_name=config.attr_endpoint_config_name)
        devices = self.quota.accelerators_per_copy()
        requirements = sagemaker.CfnInferenceComponent.InferenceComponentComputeResourceRequirementsProperty(
            number_of_cpu_cores_required=component.cpu_cores,
            min_memory_required_in_mb=component.memory_mb,
            number_of_accelerator_devices_required=devices or None,
        )
        name = self.component_name
        self.component = sagemaker.CfnInferenceComponent(
            self, "Component",
            inference_component_name=name,
            endpoint_name=self.endpoint.attr_endpoint_name,
            variant_name=variant.name,
            specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                model_name=self.model.attr_model_name, compute_resource_requirements=requirements),
            runtime_config=sagemaker.CfnInferenceComponent.InferenceComponentRuntimeConfigProperty(
                copy_count=max(1, self.quota.min_capacity)),
        )
        return [ScaledUnit(
            label=variant.name,
            resource_id=f"inference-component/{name}",
            dimension="sagemaker:inference-component:DesiredCopyCount",
            metric_dims={"InferenceComponentName": name},
        )]

    # ------------------------------------------------------------------------------------------- scaling
    def _autoscale(self, unit: ScaledUnit, alarm_topic: sns.ITopic) -> None:
        quota = self.quota
        scope = Construct(self, f"Scaling-{unit.label}")
        target = appscaling.ScalableTarget(
            scope, "Target",
            role=self._autoscaling_role(),
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=unit.resource_id,
            scalable_dimension=unit.dimension,
            min_capacity=quota.min_capacity,
            max_capacity=quota.max_capacity,
        )
        target.node.add_dependency(self.component if quota.placement == "inference_component" else self.endpoint)
        unit.target = target
        scale_in = Duration.seconds(quota.scale_in_cooldown_seconds)
        scale_out = Duration.seconds(quota.scale_out_cooldown_seconds)
        per_copy = quota.placement == "inference_component"
        target.scale_to_track_metric(
            "InvocationsPerInstance",
            target_value=quota.target_invocations_per_instance,
            predefined_metric=(appscaling.PredefinedMetric.SAGEMAKER_INFERENCE_COMPONENT_INVOCATIONS_PER_COPY
                               if per_copy else appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE),
            scale_in_cooldown=scale_in,
            scale_out_cooldown=scale_out,
        )

        # "5 slow requests in a row": p90 model latency over the threshold for 5 consecutive minutes.
        step_out = appscaling.StepScalingAction(
            scope, "LatencyStepOut",
            scaling_target=target,
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            cooldown=scale_out,
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
        )
        step_out.add_adjustment(adjustment=1, lower_bound=0)
        latency = cloudwatch.Alarm(
            scope, "LatencyAlarm",
            alarm_description=(f"ModelLatency p90 of {unit.label} above {quota.latency_threshold_ms} ms for "
                               f"{LATENCY_DATAPOINTS} consecutive minutes: adds capacity"),
            metric=unit.metric("ModelLatency", "p90"),
            threshold=quota.latency_threshold_ms * 1000,  # ModelLatency is reported in microseconds
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=LATENCY_DATAPOINTS,
            datapoints_to_alarm=LATENCY_DATAPOINTS,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        latency.add_alarm_action(cw_actions.ApplicationScalingAction(step_out))
        latency.add_alarm_action(cw_actions.SnsAction(alarm_topic))
        unit.latency_alarm = latency

        if per_copy and quota.min_capacity == 0:
            # At zero copies nothing reports latency or invocations; the first refused request does.
            wake = appscaling.StepScalingAction(
                scope, "ScaleFromZero", scaling_target=target,
                adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY, cooldown=scale_out)
            wake.add_adjustment(adjustment=1, lower_bound=0)
            no_capacity = cloudwatch.Alarm(
                scope, "NoCapacityAlarm",
                alarm_description=f"{unit.label} is scaled to zero and a request arrived: start one copy",
                metric=unit.metric("NoCapacityInvocationFailures", "Maximum"),
                threshold=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            no_capacity.add_alarm_action(cw_actions.ApplicationScalingAction(wake))

    def _autoscaling_role(self) -> iam.IRole:
        """Application Auto Scaling acts for SageMaker through its service-linked role; a stack role would be unused."""
        existing = self.node.try_find_child("AutoScalingRole")
        if existing is not None:
            return existing  # type: ignore[return-value]
        return iam.Role.from_role_arn(
            self, "AutoScalingRole",
            Stack.of(self).format_arn(
                service="iam", region="", resource="role",
                resource_name="aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
                              "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"),
            mutable=False)

    def grant_invoke(self, grantee: iam.IGrantable) -> None:
        """InvokeEndpoint (and its streaming form) on this one endpoint."""
        arn = Stack.of(self).format_arn(service="sagemaker", resource="endpoint", resource_name=self.endpoint_name)
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"],
            resource_arns=[arn],
        )

    def environment(self) -> dict[str, str]:
        """The app's inference settings; with several variants, its A/B arms map 1:1 onto them.

        Why the app routes rather than SageMaker's weights alone: the app pins a session to one arm (a
        conversation never switches model mid-way) and tags its business metrics with the arm's name, which is
        the variant's name, so the dashboard's per-variant lines line up with SageMaker's.
        """
        env = {"CLAWDBOT_INFERENCE": "sagemaker", "CLAWDBOT_SAGEMAKER_ENDPOINT": self.endpoint.attr_endpoint_name,
               "CLAWDBOT_MODEL_NAME": self.model_name}
        variants = self.quota.variants
        if self.quota.placement == "endpoint" and len(variants) > 1:
            env["CLAWDBOT_AB_VARIANTS"] = json.dumps(
                [{"name": v.name, "weight": v.weight, "target_variant": v.name} for v in variants],
                separators=(",", ":"))
        if self.quota.placement == "inference_component":
            env["CLAWDBOT_SAGEMAKER_INFERENCE_COMPONENT"] = self.component_name
        return env
