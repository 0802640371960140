"""The synthesized stack (quota ``medium``, DynamoDB sessions): each resource with the properties that matter."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_cdk.assertions import Match

from cdk.config import load_quota
from tests.cdk.conftest import MAIN_QUOTA, REPLY_TOPIC_ARNS

if TYPE_CHECKING:
    import pytest
    from aws_cdk.assertions import Template

    from clawdbot.config.settings import Settings
    from tests.cdk.conftest import Synthesized

QUOTA = load_quota(MAIN_QUOTA)
DATA_KEY = {"Fn::GetAtt": [Match.string_like_regexp("^SecurityDataKey"), "Arn"]}


def _only(synthesized: Synthesized, cfn_type: str) -> dict[str, Any]:
    found = synthesized.resources(cfn_type)
    assert len(found) == 1, f"expected one {cfn_type}, found {sorted(found)}"
    return next(iter(found.values()))


def _logical_id(synthesized: Synthesized, cfn_type: str, prefix: str) -> str:
    ids = [k for k in synthesized.resources(cfn_type) if k.startswith(prefix)]
    assert len(ids) == 1, (cfn_type, prefix, ids)
    return ids[0]


# ------------------------------------------------------------------------------------------------ API
def test_http_api_stage_throttles_and_logs_from_the_quota(template: Template) -> None:
    template.resource_count_is("AWS::ApiGatewayV2::Api", 1)
    template.has_resource_properties("AWS::ApiGatewayV2::Api", {"ProtocolType": "HTTP"})
    template.has_resource_properties("AWS::ApiGatewayV2::Stage", {
        "StageName": "$default",
        "AutoDeploy": True,
        "DefaultRouteSettings": {"ThrottlingRateLimit": QUOTA.api.rate_limit,
                                 "ThrottlingBurstLimit": QUOTA.api.burst_limit},
        "AccessLogSettings": {"DestinationArn": Match.any_value(),
                              "Format": Match.string_like_regexp(r'"status":"\$context.status"')},
    })


def test_integration_timeout_is_deliberate_and_the_function_stops_just_after(synthesized: Synthesized) -> None:
    integration = _only(synthesized, "AWS::ApiGatewayV2::Integration")["Properties"]
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert integration["PayloadFormatVersion"] == "2.0"
    assert integration["TimeoutInMillis"] == QUOTA.api.integration_timeout_seconds * 1000
    api_fn = synthesized.raw["Resources"][_logical_id(synthesized, "AWS::Lambda::Function", "ChatApiFunction")]
    assert api_fn["Properties"]["Timeout"] == QUOTA.api.integration_timeout_seconds + 1
    # the app stops waiting for SageMaker first, so the client gets an OpenAI-shaped error, not a bare 503
    env = api_fn["Properties"]["Environment"]["Variables"]
    assert int(env["CLAWDBOT_SAGEMAKER_READ_TIMEOUT"]) < QUOTA.api.integration_timeout_seconds
    assert env["CLAWDBOT_SAGEMAKER_MAX_ATTEMPTS"] == "1"


def test_lambdas_are_arm64_python_with_the_shared_layer_and_app_environment(synthesized: Synthesized) -> None:
    layer_id = _logical_id(synthesized, "AWS::Lambda::LayerVersion", "SharedLayer")
    functions = synthesized.resources("AWS::Lambda::Function")
    assert len(functions) == 2
    for fn in functions.values():
        props = fn["Properties"]
        assert props["Architectures"] == ["arm64"]
        assert props["Runtime"].startswith("python3.")
        assert tuple(int(p) for p in props["Runtime"].removeprefix("python").split(".")) >= (3, 12)
        assert props["Layers"] == [{"Ref": layer_id}]
        assert props["Handler"] == "handler.handler"
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        env = props["Environment"]["Variables"]
        assert env["CLAWDBOT_SESSION_STORE"] == "dynamodb"
        assert env["CLAWDBOT_DYNAMODB_TABLE"] == {"Ref": Match.string_like_regexp("^SessionsTable")} or \
            env["CLAWDBOT_DYNAMODB_TABLE"]["Ref"].startswith("SessionsTable")
        assert env["CLAWDBOT_INFERENCE"] == "sagemaker"
        assert env["CLAWDBOT_SAGEMAKER_ENDPOINT"]["Fn::GetAtt"][1] == "EndpointName"
        assert env["CLAWDBOT_MODEL_DIR"] == "/var/task/model"
        # AWS names the model folders (/var/task/model, /opt/ml/model): the id clients send is set explicitly
        assert env["CLAWDBOT_MODEL_NAME"] == "clawdbot-tiny-chat"
        assert env["CLAWDBOT_API_KEY_SECRET_ARN"]["Ref"].startswith("SecurityApiKeySecret")
        assert env["CLAWDBOT_QUEUE_URL"]["Ref"].startswith("QueueTurns")
        assert env["POWERTOOLS_SERVICE_NAME"] == "clawdbot"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Clawdbot"
        assert "KmsKeyArn" in props  # environment variables are encrypted with the data key


def _policy_statements(synthesized: Synthesized, policy_prefix: str) -> list[dict[str, Any]]:
    policy = next(v for k, v in synthesized.resources("AWS::IAM::Policy").items() if k.startswith(policy_prefix))
    return list(policy["Properties"]["PolicyDocument"]["Statement"])


def test_api_function_runs_snapstart_versions_and_the_api_invokes_the_live_alias(synthesized: Synthesized) -> None:
    assert QUOTA.api.snapstart  # the preset's default
    resources = synthesized.raw["Resources"]
    api_fn_id = _logical_id(synthesized, "AWS::Lambda::Function", "ChatApiFunction")
    assert resources[api_fn_id]["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    # one published version, deleted when a deploy supersedes it (its snapshot would stay cached, and billed)
    version_id = _logical_id(synthesized, "AWS::Lambda::Version", "ChatApiFunctionCurrentVersion")
    assert resources[version_id]["DeletionPolicy"] == "Delete"
    assert resources[version_id]["Properties"]["FunctionName"] == {"Ref": api_fn_id}
    alias_id = _logical_id(synthesized, "AWS::Lambda::Alias", "ChatApiLive")
    alias = resources[alias_id]["Properties"]
    assert alias["Name"] == "live" and alias["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    # API Gateway calls the alias ($LATEST never runs from a snapshot), and may call nothing else
    integration = _only(synthesized, "AWS::ApiGatewayV2::Integration")["Properties"]
    assert integration["IntegrationUri"] == {"Ref": alias_id}
    permissions = [p["Properties"] for p in synthesized.resources("AWS::Lambda::Permission").values()
                   if p["Properties"]["Principal"] == "apigateway.amazonaws.com"]
    assert permissions and all(p["FunctionName"] == {"Ref": alias_id} for p in permissions)
    # the worker has its own version and alias (the queue's event source calls it: test_worker_reports_...)
    worker_id = _logical_id(synthesized, "AWS::Lambda::Function", "ChatWorkerFunction")
    worker_version = _logical_id(synthesized, "AWS::Lambda::Version", "ChatWorkerFunctionCurrentVersion")
    assert resources[worker_version]["Properties"]["FunctionName"] == {"Ref": worker_id}


def _app_settings(synthesized: Synthesized, function_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The app's ``Settings`` as the function would read them from its literal ``CLAWDBOT_*`` variables."""
    from clawdbot.config.settings import Settings

    fn = synthesized.raw["Resources"][_logical_id(synthesized, "AWS::Lambda::Function", function_prefix)]
    for name, value in fn["Properties"]["Environment"]["Variables"].items():
        if name.startswith("CLAWDBOT_") and isinstance(value, str):  # tokens (ARNs, names) are left out
            monkeypatch.setenv(name, value)
    return Settings()


def test_the_synth_raises_no_warning(synthesized: Synthesized) -> None:
    # (CDK warns that SnapStart needs published versions; the live alias publishes one, and says so)
    from aws_cdk.assertions import Annotations

    warnings = Annotations.from_stack(synthesized.stack).find_warning("*", Match.any_value())
    assert warnings == [], [w.entry.data for w in warnings]


def test_api_requires_keys_and_reserves_the_quotas_concurrency(synthesized: Synthesized,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from clawdbot.traffic.factory import keys_always_required

    # GIVEN the API function's environment as the app reads it
    settings = _app_settings(synthesized, "ChatApiFunction", monkeypatch)
    # THEN it never runs open, and its stated cap is the concurrency Lambda reserves for it
    assert settings.auth == "required" and keys_always_required(settings)
    assert settings.max_concurrency == QUOTA.api.max_concurrency
    functions = {k: v["Properties"] for k, v in synthesized.resources("AWS::Lambda::Function").items()}
    api_fn = functions[_logical_id(synthesized, "AWS::Lambda::Function", "ChatApiFunction")]
    assert api_fn["ReservedConcurrentExecutions"] == QUOTA.api.max_concurrency
    # the worker's concurrency is bounded by its event source mapping instead (see the queue tests)
    worker_fn = functions[_logical_id(synthesized, "AWS::Lambda::Function", "ChatWorkerFunction")]
    assert "ReservedConcurrentExecutions" not in worker_fn


def test_reply_topics_reach_both_functions_and_only_the_worker_may_publish(
        synthesized: Synthesized, monkeypatch: pytest.MonkeyPatch) -> None:
    from clawdbot.queue.replies import ReplyPublisher

    for prefix in ("ChatApiFunction", "ChatWorkerFunction"):
        # the API refuses any other target and the worker skips any other: both must read the same list
        settings = _app_settings(synthesized, prefix, monkeypatch)
        assert ReplyPublisher.from_settings(settings).allowed_topics == set(REPLY_TOPIC_ARNS), prefix
    publish = [s for s in _policy_statements(synthesized, "ChatWorkerRoleDefaultPolicy")
               if "sns:Publish" in json.dumps(s["Action"])]
    assert len(publish) == 1
    assert publish[0]["Effect"] == "Allow" and publish[0]["Action"] == "sns:Publish"
    assert sorted(publish[0]["Resource"]) == sorted(REPLY_TOPIC_ARNS)  # exactly those topics, no pattern
    assert "sns:" not in json.dumps(_policy_statements(synthesized, "ChatApiRoleDefaultPolicy"))


# ------------------------------------------------------------------------------------------------ queue
def test_fifo_queue_with_kms_dlq_redrive_and_six_times_visibility(synthesized: Synthesized, template: Template) -> None:
    dlq_id = _logical_id(synthesized, "AWS::SQS::Queue", "QueueDeadLetters")
    template.has_resource_properties("AWS::SQS::Queue", {
        "FifoQueue": True,
        "ContentBasedDeduplication": True,
        "KmsMasterKeyId": DATA_KEY,
        "VisibilityTimeout": 6 * QUOTA.worker.timeout_seconds,
        "RedrivePolicy": {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}, "maxReceiveCount": 3},
    })
    template.has_resource_properties("AWS::SQS::Queue", {"FifoQueue": True, "KmsMasterKeyId": DATA_KEY,
                                                         "MessageRetentionPeriod": 14 * 24 * 3600})


def test_worker_gives_a_turn_up_on_the_queues_last_delivery(synthesized: Synthesized,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from clawdbot.queue.config import WorkerConfig

    turns = synthesized.raw["Resources"][_logical_id(synthesized, "AWS::SQS::Queue", "QueueTurns")]
    max_receive_count = turns["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    _app_settings(synthesized, "ChatWorkerFunction", monkeypatch)  # the worker's variables, as it reads them
    assert WorkerConfig().max_receive_count == max_receive_count


def test_worker_starts_no_turn_it_has_no_time_left_for(synthesized: Synthesized,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from clawdbot.inference.sagemaker import SageMakerConfig
    from clawdbot.queue.config import WorkerConfig

    _app_settings(synthesized, "ChatWorkerFunction", monkeypatch)
    budget = WorkerConfig().turn_budget_seconds
    model = SageMakerConfig()  # the worker's model calls, as it reads its variables
    worker = synthesized.raw["Resources"][_logical_id(synthesized, "AWS::Lambda::Function", "ChatWorkerFunction")]
    # a turn's budget covers every attempt of its model call timing out (a stuck network), and the whole turn fits
    # in the worker's Lambda timeout, so the timeout never cuts a turn off (the first record of a batch always runs)
    assert budget is not None and model.max_attempts * model.read_timeout < budget
    assert budget < worker["Properties"]["Timeout"] == QUOTA.worker.timeout_seconds


def test_worker_reports_batch_item_failures(synthesized: Synthesized, template: Template) -> None:
    worker_id = _logical_id(synthesized, "AWS::Lambda::Function", "ChatWorkerFunction")
    # the queue invokes the worker's live alias: its SnapStart version (a cold worker resumes a snapshot)
    assert QUOTA.worker.snapstart
    alias_id = _logical_id(synthesized, "AWS::Lambda::Alias", "ChatWorkerLive")
    assert synthesized.raw["Resources"][worker_id]["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    mapping = _only(synthesized, "AWS::Lambda::EventSourceMapping")["Properties"]
    # "<function name>:live", the name taken from the alias's ARN: the alias, not $LATEST
    assert json.dumps(mapping["FunctionName"]).count(json.dumps({"Ref": alias_id})) == 1
    assert json.dumps(mapping["FunctionName"]).endswith('":live"]]}')
    template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "EventSourceArn": {"Fn::GetAtt": [Match.string_like_regexp("^QueueTurns"), "Arn"]},
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "BatchSize": QUOTA.worker.batch_size,
        "ScalingConfig": {"MaximumConcurrency": QUOTA.worker.max_concurrency},
    })
    worker = synthesized.raw["Resources"][worker_id]["Properties"]
    assert worker["Timeout"] == QUOTA.worker.timeout_seconds


def test_dead_letter_depth_alarm_notifies_the_topic(synthesized: Synthesized, template: Template) -> None:
    dlq_id = _logical_id(synthesized, "AWS::SQS::Queue", "QueueDeadLetters")
    template.has_resource_properties("AWS::CloudWatch::Alarm", {
        "MetricName": "ApproximateNumberOfMessagesVisible",
        "Namespace": "AWS/SQS",
        "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}],
        "Threshold": 0,
        "ComparisonOperator": "GreaterThanThreshold",
        "AlarmActions": [{"Ref": Match.string_like_regexp("^AlarmsTopic")}],
    })


# ------------------------------------------------------------------------------------------------ sessions
def test_session_table_on_demand_ttl_pitr_and_customer_key(template: Template) -> None:
    template.resource_count_is("AWS::DynamoDB::Table", 1)
    template.has_resource_properties("AWS::DynamoDB::Table", {
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": Match.array_with([{"AttributeName": "pk", "AttributeType": "S"},
                                                  {"AttributeName": "sk", "AttributeType": "S"}]),
        "BillingMode": "PAY_PER_REQUEST",
        "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": DATA_KEY},
    })
    template.resource_count_is("AWS::ElastiCache::ServerlessCache", 0)
    template.resource_count_is("AWS::EC2::VPC", 0)


# ------------------------------------------------------------------------------------------------ inference
def test_model_image_archive_and_network_isolation(synthesized: Synthesized) -> None:
    model = _only(synthesized, "AWS::SageMaker::Model")["Properties"]
    assert model["EnableNetworkIsolation"] is True
    container = model["PrimaryContainer"]
    assert container["Environment"]["CLAWDBOT_MODEL_NAME"] == "clawdbot-tiny-chat"
    assert "ecr" in json.dumps(container["Image"])  # the Docker image asset's repository URI
    assert container["ModelDataUrl"]["Fn::Sub"].startswith("s3://cdk-")
    assert container["ModelDataUrl"]["Fn::Sub"].endswith(".gz")  # our gzip tarball (CDK keeps the last suffix)
    assets = json.loads((synthesized.outdir / f"{synthesized.stack.artifact_id}.assets.json").read_text())
    images = list(assets["dockerImages"].values())
    assert len(images) == 1
    source = images[0]["source"]
    assert source["dockerFile"] == "functions/inference/Dockerfile"
    assert source.get("platform") == "linux/amd64"
    staged = synthesized.outdir / source["directory"]
    # the build context is filtered by the Dockerfile's .dockerignore: no virtualenv, models or node_modules
    assert sorted(p.name for p in staged.iterdir()) == ["README.md", "functions", "layers", "pyproject.toml"]


def test_endpoint_variants_carry_the_ab_weights(synthesized: Synthesized) -> None:
    config = _only(synthesized, "AWS::SageMaker::EndpointConfig")["Properties"]
    variants = {v["VariantName"]: v for v in config["ProductionVariants"]}
    assert set(variants) == {v.name for v in QUOTA.inference.variants}
    for wanted in QUOTA.inference.variants:
        got = variants[wanted.name]
        assert got["InitialVariantWeight"] == wanted.weight
        assert got["InstanceType"] == wanted.instance_type
        assert got["InitialInstanceCount"] == QUOTA.inference.min_capacity
    assert config["KmsKeyId"] == {"Fn::GetAtt": [Match.string_like_regexp("Security"), "Arn"]} or \
        config["KmsKeyId"]["Fn::GetAtt"][0].startswith("SecurityDataKey")
    endpoint = _only(synthesized, "AWS::SageMaker::Endpoint")["Properties"]
    assert endpoint["EndpointName"] == "clawdbot-chat"


def test_app_ab_arms_are_the_endpoint_variants(synthesized: Synthesized) -> None:
    """The app's own A/B config (its VariantConfig model) accepts what the stack passes, one arm per variant."""
    from clawdbot.traffic.ab import VariantConfig

    fn = synthesized.raw["Resources"][_logical_id(synthesized, "AWS::Lambda::Function", "ChatApiFunction")]
    arms = [VariantConfig.model_validate(item)
            for item in json.loads(fn["Properties"]["Environment"]["Variables"]["CLAWDBOT_AB_VARIANTS"])]
    assert [(a.name, a.weight, a.target_variant) for a in arms] == [
        (v.name, v.weight, v.name) for v in QUOTA.inference.variants]


def test_each_variant_scales_between_the_quota_limits(synthesized: Synthesized) -> None:
    targets = synthesized.resources("AWS::ApplicationAutoScaling::ScalableTarget")
    assert len(targets) == len(QUOTA.inference.variants)
    seen = set()
    for target in targets.values():
        props = target["Properties"]
        assert props["ServiceNamespace"] == "sagemaker"
        assert props["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
        assert (props["MinCapacity"], props["MaxCapacity"]) == (QUOTA.inference.min_capacity,
                                                                QUOTA.inference.max_capacity)
        assert "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint" in json.dumps(props["RoleARN"])
        seen.add(props["ResourceId"]["Fn::Join"][1][-1].rsplit("/", 1)[-1])
    assert seen == {v.name for v in QUOTA.inference.variants}


def test_target_tracking_on_invocations_per_instance(template: Template) -> None:
    template.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "TargetValue": QUOTA.inference.target_invocations_per_instance,
            "ScaleInCooldown": QUOTA.inference.scale_in_cooldown_seconds,
            "ScaleOutCooldown": QUOTA.inference.scale_out_cooldown_seconds,
        },
    })


def _alarm_metric(alarm: dict[str, Any]) -> tuple[str, str, int, str]:
    """(namespace, name, period, statistic) of a single-metric alarm, in either of CloudFormation's forms."""
    if "MetricName" in alarm:
        return (alarm["Namespace"], alarm["MetricName"], alarm["Period"],
                alarm.get("Statistic") or alarm.get("ExtendedStatistic"))
    stat = alarm["Metrics"][0]["MetricStat"]
    return stat["Metric"]["Namespace"], stat["Metric"]["MetricName"], stat["Period"], stat["Stat"]


def test_latency_alarm_needs_five_consecutive_breaches_and_drives_step_scaling(synthesized: Synthesized) -> None:
    alarms = {k: v["Properties"] for k, v in synthesized.resources("AWS::CloudWatch::Alarm").items()
              if _alarm_metric(v["Properties"])[1] == "ModelLatency"}
    assert len(alarms) == len(QUOTA.inference.variants)
    steps = {k: v["Properties"] for k, v in synthesized.resources("AWS::ApplicationAutoScaling::ScalingPolicy").items()
             if v["Properties"]["PolicyType"] == "StepScaling"}
    for alarm in alarms.values():
        assert alarm["EvaluationPeriods"] == 5
        assert alarm["DatapointsToAlarm"] == 5
        assert _alarm_metric(alarm) == ("AWS/SageMaker", "ModelLatency", 60, "p90")
        assert alarm["Threshold"] == QUOTA.inference.latency_threshold_ms * 1000  # microseconds
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"
        policy_refs = [a["Ref"] for a in alarm["AlarmActions"] if "Ref" in a and a["Ref"] in steps]
        assert len(policy_refs) == 1, alarm["AlarmActions"]
        step = steps[policy_refs[0]]["StepScalingPolicyConfiguration"]
        assert step["AdjustmentType"] == "ChangeInCapacity"
        assert step["Cooldown"] == QUOTA.inference.scale_out_cooldown_seconds
        assert step["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]


def test_lambdas_may_invoke_only_this_endpoint(synthesized: Synthesized) -> None:
    for policy_id in ("ChatApiRoleDefaultPolicy", "ChatWorkerRoleDefaultPolicy"):
        policy = next(v for k, v in synthesized.resources("AWS::IAM::Policy").items() if k.startswith(policy_id))
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        invoke = [s for s in statements if "sagemaker:InvokeEndpoint" in json.dumps(s["Action"])]
        assert len(invoke) == 1
        assert json.dumps(invoke[0]["Resource"]).endswith(':endpoint/clawdbot-chat"]]}')


def test_only_the_api_may_send_to_the_turn_queue(synthesized: Synthesized) -> None:
    def actions(policy_id: str) -> str:
        policy = next(v for k, v in synthesized.resources("AWS::IAM::Policy").items() if k.startswith(policy_id))
        return json.dumps([s["Action"] for s in policy["Properties"]["PolicyDocument"]["Statement"]])

    assert "sqs:SendMessage" in actions("ChatApiRoleDefaultPolicy")  # POST /v1/sessions/{id}/turns
    assert "sqs:SendMessage" not in actions("ChatWorkerRoleDefaultPolicy")  # it receives through its event source
    assert "sqs:ReceiveMessage" in actions("ChatWorkerRoleDefaultPolicy")
    assert "sqs:ChangeMessageVisibility" in actions("ChatWorkerRoleDefaultPolicy")  # hands deferred turns back


# ------------------------------------------------------------------------------------------------ observability
def _dashboard_widgets(synthesized: Synthesized) -> list[dict[str, Any]]:
    """The dashboard body as JSON; CloudFormation tokens (endpoint name, API id) become "<token>" strings."""
    body = _only(synthesized, "AWS::CloudWatch::Dashboard")["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    return json.loads("".join(p if isinstance(p, str) else "<token>" for p in parts))["widgets"]


def _rows(widgets: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    current = None
    for widget in widgets:
        if widget["type"] == "text":
            current = widget["properties"]["markdown"].removeprefix("## ")
            rows[current] = []
        else:
            assert current is not None, "a graph before the first row header"
            rows[current].append(widget)
    return rows


def _row_text(widgets: list[dict[str, Any]]) -> str:
    return json.dumps([w["properties"]["metrics"] for w in widgets])


def test_dashboard_has_three_rows_in_order(synthesized: Synthesized) -> None:
    rows = _rows(_dashboard_widgets(synthesized))
    assert list(rows) == ["Infrastructure", "Service", "Business"]
    infrastructure, service, business = (_row_text(rows[r]) for r in rows)
    for metric in ("GPUUtilization", "CPUUtilization", "MemoryUtilization", "Duration", "Throttles",
                   "ConcurrentExecutions"):
        assert f'"{metric}"' in infrastructure, metric
    for metric in ('"Count"', '"p50"', '"p90"', '"p99"', '"4xx"', '"5xx"', '"ModelLatency"', '"Invocations"'):
        assert metric in service, metric
    # one SEARCH per business metric: every series that carries a "variant" dimension, i.e. one line per arm
    for metric in ("Turns", "ConversationsCompleted", "SatisfactionScore"):
        assert f'SEARCH(\'Namespace=\\"Clawdbot\\" MetricName=\\"{metric}\\" variant\'' in business, metric
    for variant in QUOTA.inference.variants:  # the SageMaker graphs have a line per variant too
        assert f'"VariantName", "{variant.name}"' in service


def test_alarms_go_to_an_encrypted_tls_only_topic(synthesized: Synthesized, template: Template) -> None:
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": DATA_KEY})
    template.has_resource_properties("AWS::SNS::TopicPolicy", {"PolicyDocument": {"Statement": Match.array_with([
        Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}})
    alarms = synthesized.resources("AWS::CloudWatch::Alarm")
    notifying = [a for a in alarms.values() if any(str(x.get("Ref", "")).startswith("AlarmsTopic")
                                                   for x in a["Properties"].get("AlarmActions", []))]
    # DLQ depth, API 5xx, two Lambdas' errors, model 5xx and latency per variant
    assert len(notifying) == 4 + 2 * len(QUOTA.inference.variants)


# ------------------------------------------------------------------------------------------------ security
def test_api_key_is_a_noecho_parameter_stored_in_secrets_manager(synthesized: Synthesized,
                                                                template: Template) -> None:
    parameter = synthesized.raw["Parameters"]["ApiKey"]
    assert parameter["NoEcho"] is True
    assert parameter["MinLength"] >= 16
    template.has_resource_properties("AWS::SecretsManager::Secret", {
        "SecretString": {"Ref": "ApiKey"},
        "KmsKeyId": DATA_KEY,
    })


def test_data_at_rest_uses_the_rotated_customer_key(synthesized: Synthesized, template: Template) -> None:
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    log_groups = synthesized.resources("AWS::Logs::LogGroup")
    assert len(log_groups) >= 4  # two functions, API access logs, SageMaker endpoint
    for name, group in log_groups.items():
        assert "KmsKeyId" in group["Properties"], name
        assert "RetentionInDays" in group["Properties"], name
    for name, queue in synthesized.resources("AWS::SQS::Queue").items():
        assert "KmsMasterKeyId" in queue["Properties"], name


def test_queues_refuse_plain_http(synthesized: Synthesized) -> None:
    policies = synthesized.resources("AWS::SQS::QueuePolicy")
    assert len(policies) == 2
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
                   for s in statements)


def test_no_wildcard_resource_except_ecr_authorization(synthesized: Synthesized) -> None:
    """Least privilege: '*' appears only where AWS offers no resource-level permission."""
    for name, policy in synthesized.resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            if "*" in resources:
                assert statement["Action"] == "ecr:GetAuthorizationToken", (name, statement)
    for name, role in synthesized.resources("AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], name  # DynamoDB mode: no VPC, no managed policy


def test_outputs_name_what_a_client_and_an_operator_need(synthesized: Synthesized) -> None:
    assert {"ApiUrl", "ApiKeySecretArn", "EndpointName", "QueueUrl", "AlarmTopicArn"} <= set(
        synthesized.raw["Outputs"])
