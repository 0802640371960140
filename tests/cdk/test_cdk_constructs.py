"""Single constructs in a bare stack, for the branches the session synth does not take: every quota preset's
scaling, the inference-component placement (GPU share, scale-to-zero), an S3 model, and Valkey sessions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cdk.config import PRESET_NAMES, PRESETS_DIR, ModelSource, load_quota
from cdk.inference import GPU_BUILD_ARGS

S3_MODEL = ModelSource(s3_bucket="team-models", s3_key="clawdbot/v7/model.tar.gz")
PRESETS = [*PRESET_NAMES, str(PRESETS_DIR / "shared-gpu.json")]


def _synth_inference(quota_name: str, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(template, assets manifest) of a stack holding only the inference construct."""
    _, template, manifest = _inference_stack(quota_name, tmp_path)
    return template, manifest


def _inference_stack(quota_name: str, tmp_path: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(the ``Inference`` construct, template, assets manifest) of a stack holding only that construct."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_kms as kms
    from aws_cdk import aws_sns as sns

    from cdk.inference import Inference

    app = App(outdir=str(tmp_path / "out"))
    stack = Stack(app, "Clawdbot")
    inference = Inference(stack, "Inference", model=S3_MODEL, quota=load_quota(quota_name).inference,
                          key=kms.Key(stack, "Key"), alarm_topic=sns.Topic(stack, "Topic"),
                          cache_dir=tmp_path / "cache")
    assembly = app.synth()
    manifest = json.loads((Path(assembly.directory) / "Clawdbot.assets.json").read_text())
    return inference, assembly.get_stack_by_name("Clawdbot").template, manifest


def _of_type(template: dict[str, Any], cfn_type: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == cfn_type]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: Path(p).stem)
def test_scaling_limits_and_cooldowns_follow_each_preset(preset: str, tmp_path: Path) -> None:
    quota = load_quota(preset).inference
    template, _ = _synth_inference(preset, tmp_path)
    targets = _of_type(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert len(targets) == (1 if quota.placement == "inference_component" else len(quota.variants))
    for target in targets:
        assert (target["MinCapacity"], target["MaxCapacity"]) == (quota.min_capacity, quota.max_capacity)
    policies = _of_type(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    tracking = [p["TargetTrackingScalingPolicyConfiguration"] for p in policies
                if p["PolicyType"] == "TargetTrackingScaling"]
    assert len(tracking) == len(targets)
    for config in tracking:
        assert config["TargetValue"] == quota.target_invocations_per_instance
        assert (config["ScaleInCooldown"], config["ScaleOutCooldown"]) == (quota.scale_in_cooldown_seconds,
                                                                           quota.scale_out_cooldown_seconds)
    latency = [a for a in _of_type(template, "AWS::CloudWatch::Alarm")
               if "ModelLatency" in json.dumps(a.get("Metrics", a.get("MetricName")))]
    assert len(latency) == len(targets)
    assert {(a["EvaluationPeriods"], a["DatapointsToAlarm"], a["Threshold"]) for a in latency} == {
        (5, 5, quota.latency_threshold_ms * 1000)}


def test_cpu_endpoint_volumes_use_the_customer_key(tmp_path: Path) -> None:
    template, manifest = _synth_inference("small", tmp_path)
    (config,) = _of_type(template, "AWS::SageMaker::EndpointConfig")
    assert "KmsKeyId" in config
    (image,) = manifest["dockerImages"].values()
    assert "dockerBuildArgs" not in image["source"]  # CPU image


def test_shared_gpu_preset_places_an_inference_component_that_scales_to_zero(tmp_path: Path) -> None:
    preset = str(PRESETS_DIR / "shared-gpu.json")
    quota = load_quota(preset).inference
    inference, template, manifest = _inference_stack(preset, tmp_path)
    (config,) = _of_type(template, "AWS::SageMaker::EndpointConfig")
    (variant,) = config["ProductionVariants"]
    assert "ModelName" not in variant  # the model comes in through the component
    assert variant["ManagedInstanceScaling"] == {"Status": "ENABLED", "MinInstanceCount": 0,
                                                 "MaxInstanceCount": quota.component.max_instances}
    assert "ExecutionRoleArn" in config
    assert "KmsKeyId" not in config  # ml.g5 volumes are local NVMe, which SageMaker encrypts itself
    (component,) = _of_type(template, "AWS::SageMaker::InferenceComponent")
    needs = component["Specification"]["ComputeResourceRequirements"]
    assert needs["NumberOfAcceleratorDevicesRequired"] == 1  # 0.25 of ml.g5.12xlarge's 4 GPUs
    assert needs["NumberOfCpuCoresRequired"] == quota.component.cpu_cores
    assert needs["MinMemoryRequiredInMb"] == quota.component.memory_mb
    # the Lambdas name exactly this component on every call (SageMaker refuses calls that name none)
    env = inference.environment()
    assert env["CLAWDBOT_SAGEMAKER_INFERENCE_COMPONENT"] == component["InferenceComponentName"]
    assert "CLAWDBOT_AB_VARIANTS" not in env  # one component: no endpoint variants to route between
    (target,) = _of_type(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["ScalableDimension"] == "sagemaker:inference-component:DesiredCopyCount"
    assert target["MinCapacity"] == 0
    wake = [a for a in _of_type(template, "AWS::CloudWatch::Alarm")
            if "NoCapacityInvocationFailures" in json.dumps(a)]
    assert len(wake) == 1 and wake[0]["EvaluationPeriods"] == 1
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerBuildArgs"] == GPU_BUILD_ARGS


def test_s3_model_is_read_from_exactly_that_object(tmp_path: Path) -> None:
    template, _ = _synth_inference("small", tmp_path)
    (model,) = _of_type(template, "AWS::SageMaker::Model")
    assert model["PrimaryContainer"]["ModelDataUrl"] == S3_MODEL.s3_uri
    statements = [s for p in _of_type(template, "AWS::IAM::Policy") for s in p["PolicyDocument"]["Statement"]]
    reads = [s for s in statements if s["Action"] == "s3:GetObject"]
    assert len(reads) == 1
    assert json.dumps(reads[0]["Resource"]).endswith(':s3:::team-models/clawdbot/v7/model.tar.gz"]]}')


@pytest.mark.parametrize("mode", ["serverless", "cluster"])
def test_valkey_sessions_in_an_isolated_vpc_pass_the_checks(mode: str, tmp_path: Path) -> None:
    from aws_cdk import App, Stack
    from aws_cdk import aws_kms as kms

    from cdk.nag import apply_checks
    from cdk.sessions import PrivateNetwork, RedisSessions

    app = App(outdir=str(tmp_path / "out"))
    stack = Stack(app, "Clawdbot")
    key = kms.Key(stack, "Key", enable_key_rotation=True)
    network = PrivateNetwork(stack, "Network", key=key)
    sessions = RedisSessions(stack, "Sessions", key=key, network=network, mode=mode)
    apply_checks(app)
    template = app.synth().get_stack_by_name("Clawdbot").template  # raises on a cdk-nag finding

    assert sessions.environment()["CLAWDBOT_SESSION_STORE"] == "redis"
    assert "rediss://" in json.dumps(stack.resolve(sessions.url))
    caches = _of_type(template, "AWS::ElastiCache::ServerlessCache" if mode == "serverless"
                      else "AWS::ElastiCache::ReplicationGroup")
    assert len(caches) == 1 and caches[0]["Engine"] == "valkey" and "KmsKeyId" in caches[0]
    if mode == "cluster":
        assert caches[0]["TransitEncryptionEnabled"] is True and caches[0]["AtRestEncryptionEnabled"] is True
    for absent in ("AWS::EC2::NatGateway", "AWS::EC2::InternetGateway"):
        assert _of_type(template, absent) == []
    endpoints = {json.dumps(e["ServiceName"]) for e in _of_type(template, "AWS::EC2::VPCEndpoint")}
    assert len(endpoints) == 3 and any("sagemaker.runtime" in e for e in endpoints)
    assert len(_of_type(template, "AWS::EC2::FlowLog")) == 1
    ingress = _of_type(template, "AWS::EC2::SecurityGroupIngress")
    assert ingress and all("SourceSecurityGroupId" in rule for rule in ingress)  # never a CIDR


@pytest.mark.parametrize("snapstart", [True, False], ids=["snapstart", "no-snapstart"])
def test_the_api_invokes_a_snapstart_alias_or_the_plain_function(snapstart: bool, tmp_path: Path) -> None:
    from aws_cdk import App, Duration, Stack
    from aws_cdk import aws_kms as kms
    from aws_cdk import aws_lambda as lambda_

    from cdk.api import ChatHttpApi
    from cdk.config import DEFAULT_MODEL, REPO_ROOT
    from cdk.functions import PythonFunction
    from cdk.pricing import hourly, snapstart_cache_hourly

    quota = load_quota("small")
    quota = quota.model_copy(update={"api": quota.api.model_copy(update={"snapstart": snapstart}),
                                     "worker": quota.worker.model_copy(update={"snapstart": snapstart})})
    app = App(outdir=str(tmp_path / "out"))
    stack = Stack(app, "Clawdbot")
    key = kms.Key(stack, "Key", enable_key_rotation=True)
    layer = lambda_.LayerVersion.from_layer_version_arn(
        stack, "Layer", "arn:aws:lambda:us-east-1:123456789012:layer:clawdbot:1")
    function = PythonFunction(stack, "ChatApi", source=REPO_ROOT / "functions" / "chat_api",
                              tokenizer_dir=REPO_ROOT / DEFAULT_MODEL, layer=layer, key=key, description="api",
                              memory_mb=quota.api.memory_mb, timeout=Duration.seconds(30), environment={},
                              snapstart=quota.api.snapstart)
    ChatHttpApi(stack, "Api", function=function, quota=quota.api, key=key)
    template = app.synth().get_stack_by_name("Clawdbot").template

    (fn,) = _of_type(template, "AWS::Lambda::Function")
    (integration,) = _of_type(template, "AWS::ApiGatewayV2::Integration")
    aliases = [k for k, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Alias"]
    functions = [k for k, r in template["Resources"].items() if r["Type"] == "AWS::Lambda::Function"]
    if snapstart:
        assert fn["SnapStart"] == {"ApplyOn": "PublishedVersions"}
        assert integration["IntegrationUri"] == {"Ref": aliases[0]}
        # each function's snapshot cached for a month: $3.95 per GB (the small preset: 1 GB API + 1 GB worker)
        cached_gb = (quota.api.memory_mb + quota.worker.memory_mb) / 1024
        assert snapstart_cache_hourly(quota) * 730 == pytest.approx(3.95 * cached_gb, abs=0.01)
    else:
        assert "SnapStart" not in fn and aliases == []
        assert _of_type(template, "AWS::Lambda::Version") == []
        assert integration["IntegrationUri"] == {"Fn::GetAtt": [functions[0], "Arn"]}
        assert snapstart_cache_hourly(quota) == 0.0
    assert hourly(quota).fixed > 0
