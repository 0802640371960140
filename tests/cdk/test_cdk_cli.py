"""``clawdbot deploy``: input checks, the CDK command it builds, and a real offline synth through the npm CLI."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from cdk.bundling import installed_layer_site
from cdk.config import PRESETS_DIR, REPO_ROOT, load_quota
from clawdbot.cli.main import main

if TYPE_CHECKING:
    from pathlib import Path

KEY = "sk-clawdbot-test-0123456789abcdef"


@pytest.fixture
def in_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)


def test_dry_run_prints_the_cdk_command_with_the_key_masked(in_checkout: None, model_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["deploy", "--model", str(model_dir), "--api-key", KEY, "--quota", "large", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("npx --no-install cdk deploy Clawdbot ")
    assert f"-c model={model_dir.resolve()}" in out
    assert "-c quota=large" in out and "-c sessionStore=dynamodb" in out
    assert "--parameters 'Clawdbot:ApiKey=****'" in out
    assert KEY not in out


def test_api_key_from_stdin_keeps_it_out_of_argv(in_checkout: None, model_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(KEY + "\n"))
    assert main(["deploy", "--model", str(model_dir), "--api-key", "-", "--yes", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--require-approval never" in out and "ApiKey=****" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--api-key", "short"], "--api-key: expected 16-256 printable ASCII characters"),
    (["--api-key", "has spaces in the middle of it"], "with whitespace"),
    (["--quota", "gigantic"], "--quota: expected small | medium | large or a JSON quota file"),
    (["--model", "s3://bucket/model.onnx"], "--model: an S3 model must be s3://BUCKET/KEY.tar.gz"),
    (["--model", "no/such/folder"], "--model: expected a model folder"),
])
def test_bad_inputs_fail_fast_naming_the_flag(in_checkout: None, model_dir: Path, argv: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    base = {"--model": str(model_dir), "--api-key": KEY, "--quota": "small"}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    code = main(["deploy", *[x for pair in base.items() for x in pair], "--dry-run"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_deploy_outside_a_checkout_says_where_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["deploy", "--model", str(model_dir), "--api-key", KEY, "--dry-run"]) == 2
    assert "no cdk.json" in capsys.readouterr().err


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """No AWS credentials or config, and every proxy-aware client pointed at a closed loopback port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    dead = "http://127.0.0.1:9"
    env.update({
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead, "NO_PROXY": "",
        "PIP_NO_INDEX": "1",  # a layer rebuild would need the index: fail loudly instead
        "NPM_CONFIG_OFFLINE": "true",
        "NPM_CONFIG_UPDATE_NOTIFIER": "false",
    })
    return env


def test_real_cdk_cli_synthesizes_offline(model_dir: Path, tmp_path: Path) -> None:
    """The npm CLI pinned in package.json runs the app from cdk.json: inference component + Valkey cluster."""
    # GIVEN the pinned CLI (make test runs npm ci) and the layer's wheels already cached (the only network step)
    assert (REPO_ROOT / "node_modules" / ".bin" / "cdk").exists(), "run 'npm ci' (make test does)"
    assert shutil.which("npx"), "Node.js (npx) is needed for the CDK CLI"
    installed_layer_site()
    out = tmp_path / "cdk.out"
    # WHEN clawdbot deploy --synth-only runs with no credentials and no network
    result = subprocess.run(
        [sys.executable, "-m", "clawdbot.cli.main", "deploy", "--synth-only", "--model", str(model_dir),
         "--api-key", KEY, "--quota", str(PRESETS_DIR / "shared-gpu.json"), "--session-store", "redis",
         "--redis-mode", "cluster", "--output", str(out)],
        cwd=REPO_ROOT, env=_offline_env(tmp_path), capture_output=True, text=True, timeout=240, check=False)
    # THEN the CLI wrote the cloud assembly, cdk-nag clean, with the inputs applied
    assert result.returncode == 0, result.stderr[-4000:]
    template = json.loads((out / "Clawdbot.template.json").read_text())
    types = [r["Type"] for r in template["Resources"].values()]
    assert "AWS::SageMaker::InferenceComponent" in types
    assert "AWS::ElastiCache::ReplicationGroup" in types
    assert types.count("AWS::Lambda::Function") == 2
    # no reply topics configured: nobody may publish, and the app allows no target
    functions = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert not any("CLAWDBOT_REPLY_TOPIC_ARNS" in f["Environment"]["Variables"] for f in functions)
    policies = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"]
    assert "sns:Publish" not in json.dumps(policies)
    # both Lambdas name the model's inference component on every call
    (component,) = [r["Properties"] for r in template["Resources"].values()
                    if r["Type"] == "AWS::SageMaker::InferenceComponent"]
    assert [f["Environment"]["Variables"]["CLAWDBOT_SAGEMAKER_INFERENCE_COMPONENT"] for f in functions] == \
        [component["InferenceComponentName"]] * 2
    # the API's reserved concurrency follows this quota file too
    quota = load_quota(str(PRESETS_DIR / "shared-gpu.json"))
    assert sorted(f.get("ReservedConcurrentExecutions", 0) for f in functions) == [0, quota.api.max_concurrency]
    report = json.loads((out / "validation-report.json").read_text())
    assert [r for r in report["pluginReports"] if r.get("violations")] == []
    assert KEY not in "".join(p.read_text(errors="ignore") for p in out.glob("*.json"))
    assert not (REPO_ROOT / "cdk.context.json").exists()  # nothing looked up in an account


def test_cdk_app_reports_a_bad_context_value_and_exits_2(model_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """What `cdk synth -c quota=huge` prints (the CLI hands its -c values to this entry point)."""
    from cdk.app import main as app_main

    assert app_main({"model": str(model_dir), "quota": "huge"}) == 2
    assert "invalid input 'quota' = 'huge': expected one of small, medium, large" in capsys.readouterr().err
