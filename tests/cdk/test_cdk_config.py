"""Stack inputs: presets are valid, and every bad input fails with a message naming it and what is allowed."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from cdk.config import PRESET_NAMES, PRESETS_DIR, ConfigError, load_quota, parse_inputs, parse_model

if TYPE_CHECKING:
    from pathlib import Path


def _write(tmp_path: Path, quota: dict) -> str:
    path = tmp_path / "quota.json"
    path.write_text(json.dumps(quota))
    return str(path)


def _preset(name: str) -> dict:
    return json.loads((PRESETS_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", [*PRESET_NAMES, str(PRESETS_DIR / "shared-gpu.json")])
def test_shipped_presets_are_valid(name: str) -> None:
    quota = load_quota(name)
    assert quota.inference.min_capacity <= quota.inference.max_capacity
    assert quota.description


def test_presets_grow_from_small_to_large() -> None:
    small, medium, large = (load_quota(n) for n in PRESET_NAMES)
    assert small.api.rate_limit < medium.api.rate_limit < large.api.rate_limit
    assert small.inference.max_capacity < medium.inference.max_capacity < large.inference.max_capacity
    assert len(small.inference.variants) == 1 and len(medium.inference.variants) == 2
    assert small.api.max_concurrency < medium.api.max_concurrency < large.api.max_concurrency


def test_inputs_default_to_the_shipped_model_and_small(model_dir: Path) -> None:
    inputs = parse_inputs({"model": str(model_dir)})
    assert (inputs.quota_name, inputs.session_store, inputs.stack_name) == ("small", "dynamodb", "Clawdbot")
    assert inputs.tokenizer_dir == model_dir.resolve()


def test_unknown_quota_names_the_input_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"'quota' = 'huge'.*small, medium, large.*JSON file"):
        load_quota("huge")


def test_quota_file_errors_name_the_field(tmp_path: Path) -> None:
    quota = _preset("small")
    quota["api"]["integration_timeout_seconds"] = 45
    quota["inference"]["variants"][0]["weight"] = -1
    with pytest.raises(ConfigError) as caught:
        load_quota(_write(tmp_path, quota))
    message = str(caught.value)
    assert "api.integration_timeout_seconds" in message and "30" in message and "45" in message
    assert "inference.variants.0.weight" in message


def test_quota_file_rejects_unknown_keys(tmp_path: Path) -> None:
    quota = _preset("small")
    quota["api"]["rate"] = 5
    with pytest.raises(ConfigError, match=r"api\.rate: Extra inputs are not permitted"):
        load_quota(_write(tmp_path, quota))


def test_scale_to_zero_needs_an_inference_component(tmp_path: Path) -> None:
    quota = _preset("small")
    quota["inference"]["min_capacity"] = 0
    with pytest.raises(ConfigError, match=r"scale-to-zero.*inference_component"):
        load_quota(_write(tmp_path, quota))


def test_gpu_share_must_be_whole_devices(tmp_path: Path) -> None:
    quota = _preset("shared-gpu")
    quota["inference"]["component"]["accelerator_share"] = 0.3
    with pytest.raises(ConfigError, match=r"whole GPUs.*1/4, 2/4, 3/4, 4/4"):
        load_quota(_write(tmp_path, quota))
    quota["inference"]["component"]["accelerator_share"] = 0.25
    quota["inference"]["variants"][0]["instance_type"] = "ml.c5.xlarge"
    with pytest.raises(ConfigError, match="needs a GPU instance type"):
        load_quota(_write(tmp_path, quota))


def test_worker_timeout_must_fit_the_queue_visibility(tmp_path: Path) -> None:
    quota = _preset("small")
    quota["worker"]["timeout_seconds"] = 900  # 6 x 900 s = 1.5 h: fine
    assert load_quota(_write(tmp_path, quota)).worker.timeout_seconds == 900
    quota["worker"]["timeout_seconds"] = 901
    with pytest.raises(ConfigError, match=r"worker\.timeout_seconds"):
        load_quota(_write(tmp_path, quota))


def test_worker_timeout_must_hold_one_whole_turn(tmp_path: Path) -> None:
    from cdk.config import TURN_BUDGET_SECONDS, WORKER_TIMEOUT_MARGIN_SECONDS

    quota = _preset("small")
    least = TURN_BUDGET_SECONDS + WORKER_TIMEOUT_MARGIN_SECONDS
    quota["worker"]["timeout_seconds"] = least
    assert load_quota(_write(tmp_path, quota)).worker.timeout_seconds == least
    # 120 s (the presets' former value) cannot hold three 70 s attempts of a model call
    quota["worker"]["timeout_seconds"] = 120
    with pytest.raises(ConfigError, match=rf"worker\.timeout_seconds must be at least {least}"):
        load_quota(_write(tmp_path, quota))
    for name in ("small", "medium", "large", "shared-gpu"):  # every preset holds one
        assert _preset(name)["worker"]["timeout_seconds"] >= least


def test_model_path_forms(tmp_path: Path) -> None:
    source = parse_model("s3://my-models/clawdbot/v3/model.tar.gz")
    assert (source.s3_bucket, source.s3_key) == ("my-models", "clawdbot/v3/model.tar.gz")
    assert source.name == "v3"  # s3://.../NAME/model.tar.gz is served as NAME
    assert parse_model("s3://my-models/support-bot.tar.gz").name == "support-bot"
    with pytest.raises(ConfigError, match=r"'model'.*s3://BUCKET/KEY.tar.gz"):
        parse_model("s3://my-models/model.onnx")
    with pytest.raises(ConfigError, match=r"'model'.*no folder"):
        parse_model(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"'model'.*no \*\.onnx"):
        parse_model(str(tmp_path))


def test_s3_model_needs_a_local_tokenizer(model_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"'tokenizerDir'.*required with an s3:// model"):
        parse_inputs({"model": "s3://my-models/model.tar.gz"})
    inputs = parse_inputs({"model": "s3://my-models/model.tar.gz", "tokenizerDir": str(model_dir)})
    assert inputs.model.s3_uri == "s3://my-models/model.tar.gz"


def test_api_key_is_refused_as_context(model_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"'apiKey'.*never a context value.*--parameters ApiKey=") as caught:
        parse_inputs({"model": str(model_dir), "apiKey": "sk-supersecretvalue123"})
    assert "supersecret" not in str(caught.value)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("sessionStore", "memcached", "dynamodb, redis"),
    ("redisMode", "sharded", "serverless, cluster"),
    ("stackName", "1bad name", "letters, digits and hyphens"),
    ("alarmEmail", "not-an-address", "e-mail address"),
])
def test_choice_inputs_name_what_is_allowed(model_dir: Path, key: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'.*{expected}"):
        parse_inputs({"model": str(model_dir), key: value})


def test_documented_costs_match_the_presets() -> None:
    """docs/deploy.md's cost table is what cdk.pricing computes from the presets today."""
    from cdk.config import REPO_ROOT
    from cdk.pricing import PRICES_AS_OF, table_rows

    doc = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for row in table_rows((*PRESET_NAMES, "cdk/presets/shared-gpu.json")):
        assert row in doc, f"docs/deploy.md is stale; regenerate with python -m cdk.pricing: {row}"
    assert f"as of {PRICES_AS_OF}" in doc


def test_reply_topics_are_sns_arns_from_a_list_or_a_separated_string(model_dir: Path) -> None:
    standard = "arn:aws:sns:eu-west-1:123456789012:replies"
    fifo = "arn:aws-cn:sns:cn-north-1:123456789012:replies.fifo"
    assert parse_inputs({"model": str(model_dir)}).reply_topic_arns == ()
    assert parse_inputs({"model": str(model_dir), "replyTopicArns": f"{standard}, {fifo} {standard}"}) \
        .reply_topic_arns == (standard, fifo)
    assert parse_inputs({"model": str(model_dir), "replyTopicArns": [fifo]}).reply_topic_arns == (fifo,)
    for bad in ("arn:aws:sqs:eu-west-1:123456789012:replies", "arn:aws:sns:eu-west-1:123456789012:*", "replies"):
        with pytest.raises(ConfigError, match=r"'replyTopicArns'.*SNS topic ARN"):
            parse_inputs({"model": str(model_dir), "replyTopicArns": bad})
