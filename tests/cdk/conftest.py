"""Fixtures of the CDK tests: one full in-process synth per session, shared by every assertion module.

A synth of the whole stack costs 10-20 s (jsii, bundling, cdk-nag), so it happens once: the ``medium`` quota
(two A/B variants) with DynamoDB sessions and two reply topics. The CLI synth test covers the other branch
(inference component, Redis, no reply topics) through the real npm CLI. Construct-level tests build single
constructs in a bare stack, which is cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from cdk.config import REPO_ROOT, TOKENIZER_FILES
from cdk.node_banner import silence_end_of_life_banner

# jsii prints a banner for Node versions past end of life; it is noise in test output, not a failure.
silence_end_of_life_banner()

if TYPE_CHECKING:
    from pathlib import Path

    from aws_cdk.assertions import Template

SHIPPED_MODEL = REPO_ROOT / "models" / "clawdbot-tiny-chat"
MAIN_QUOTA = "medium"
#: Reply topics of the session synth (a standard and a FIFO topic); the CLI synth test configures none.
REPLY_TOPIC_ARNS = ("arn:aws:sns:eu-west-1:123456789012:clawdbot-replies",
                    "arn:aws:sns:eu-west-1:123456789012:clawdbot-replies.fifo")


def _usable_model(folder: Path) -> bool:
    return any(folder.glob("*.onnx")) and all((folder / n).is_file() for n in TOKENIZER_FILES[:2])


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model when it is there; else a stand-in folder with the same file names (synth reads no
    weights, it only packages them)."""
    if _usable_model(SHIPPED_MODEL):
        return SHIPPED_MODEL
    folder = tmp_path_factory.mktemp("model")
    (folder / "model.onnx").write_bytes(b"\x08\x07stand-in graph" * 64)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"}}')
    for name in TOKENIZER_FILES[1:]:
        (folder / name).write_text("{}")
    return folder


@dataclass
class Synthesized:
    app: Any
    stack: Any
    outdir: Path
    template: Template
    raw: dict[str, Any]

    def resources(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.raw["Resources"].items() if v["Type"] == cfn_type}

    def asset_dir(self, logical_id: str) -> Path:
        """The staged folder of a Lambda function's or layer's code asset (found through its S3 key)."""
        props = self.raw["Resources"][logical_id]["Properties"]
        s3_key = (props.get("Code") or props.get("Content"))["S3Key"]
        manifest = json.loads((self.outdir / f"{self.stack.artifact_id}.assets.json").read_text())
        for asset in manifest["files"].values():
            if any(d["objectKey"] == s3_key for d in asset["destinations"].values()):
                return self.outdir / asset["source"]["path"]
        raise KeyError(f"no staged asset for {logical_id} ({s3_key})")


@pytest.fixture(scope="session")
def synthesized(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The whole app synthesized in-process, cdk-nag included (a finding would raise here)."""
    from aws_cdk.assertions import Template

    from cdk.app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app({"model": str(model_dir), "quota": MAIN_QUOTA,
                            "replyTopicArns": ",".join(REPLY_TOPIC_ARNS)}, outdir=str(outdir))
    app.synth()
    raw = json.loads((outdir / stack.template_file).read_text())
    return Synthesized(app=app, stack=stack, outdir=outdir, template=Template.from_json(raw), raw=raw)


@pytest.fixture(scope="session")
def template(synthesized: Synthesized) -> Template:
    return synthesized.template
