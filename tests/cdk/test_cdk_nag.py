"""cdk-nag (AWS Solutions pack) runs on every synth, and every acknowledgment explains itself."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from cdk.nag import MIN_REASON_LENGTH, acknowledge, acknowledgments, apply_checks

if TYPE_CHECKING:
    from pathlib import Path

    from tests.cdk.conftest import Synthesized

#: Every finding the stack acknowledges (DynamoDB mode). A new one must be added here — a reviewed change.
EXPECTED_ACKNOWLEDGED = {
    "AwsSolutions-SMG4",  # the operator-chosen API key is rotated by redeploying
    "AwsSolutions-APIG4",  # bearer API key checked by the app (API and its route)
    "AwsSolutions-IAM5[Resource::*]",  # ecr:GetAuthorizationToken
    "AwsSolutions-SM1",  # network isolation instead of a VPC
    "AwsSolutions-IAM5[Action::kms:ReEncrypt*]",
    "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
}


def test_the_stack_synthesizes_with_no_unacknowledged_finding(synthesized: Synthesized) -> None:
    # GIVEN the session's synth (app.synth() raises on any unacknowledged error)
    report = json.loads((synthesized.outdir / "validation-report.json").read_text())
    # THEN the AWS Solutions plugin reported nothing
    assert [r for r in report["pluginReports"] if r.get("violations")] == []


def test_every_acknowledgment_is_expected_and_carries_a_reason(synthesized: Synthesized) -> None:
    found = acknowledgments(synthesized.app)
    assert {a.rule for a in found} == EXPECTED_ACKNOWLEDGED
    for item in found:
        assert len(item.reason) >= MIN_REASON_LENGTH, item
        assert item.rule.startswith("AwsSolutions-"), item


def test_the_checks_really_run_and_name_the_rule(tmp_path: Path) -> None:
    """Guards the wiring itself: without it the test above would pass vacuously."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_sqs as sqs

    # GIVEN an app with the same checks and a queue that breaks two AWS Solutions rules
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Bad")
    sqs.Queue(stack, "Plain")
    apply_checks(app)
    # WHEN it is synthesized THEN the synth fails and the report names the rules
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert {"AwsSolutions-SQS3", "AwsSolutions-SQS4"} <= rules


def test_an_acknowledgment_without_a_real_reason_is_refused() -> None:
    from aws_cdk import App, Stack

    stack = Stack(App(), "S")
    with pytest.raises(ValueError, match="needs a reason"):
        acknowledge(stack, "AwsSolutions-SQS3", "not needed")
