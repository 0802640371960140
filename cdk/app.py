"""The CDK app ``cdk.json`` runs: read the inputs from context, build the stack, check it with cdk-nag.

``build_app`` is the single way to make the app — the CLI (``cdk synth``/``deploy``), the tests and
``clawdbot deploy`` all go through it — so what the tests assert is what gets deployed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from cdk.config import REPO_ROOT, ConfigError, parse_inputs

#: Context keys the app reads (cdk.json holds none of them, so a bare ``cdk synth`` uses the defaults).
INPUT_KEYS = ("model", "quota", "sessionStore", "redisMode", "tokenizerDir", "stackName", "alarmEmail", "apiKey",
              "replyTopicArns")


def build_app(context: dict[str, Any] | None = None, outdir: str | None = None,
              build_dir: Path | None = None) -> tuple[Any, Any]:
    """(App, ClawdbotStack) for the given context; raises ConfigError for a bad input."""
    from cdk.node_banner import silence_end_of_life_banner

    silence_end_of_life_banner()  # before jsii starts its Node.js
    from aws_cdk import App, Environment

    from cdk.nag import apply_checks
    from cdk.stack import ClawdbotStack

    app = App(context=context or {}, outdir=outdir)
    raw = {key: app.node.try_get_context(key) for key in INPUT_KEYS}
    inputs = parse_inputs(raw)
    stack = ClawdbotStack(
        app, inputs.stack_name, stack_name=inputs.stack_name, inputs=inputs,
        build_dir=build_dir or Path(os.environ.get("CLAWDBOT_CDK_BUILD_DIR", REPO_ROOT / "build" / "cdk")),
        # Region/account come from the deploying credentials (CDK_DEFAULT_*); unset at an offline synth.
        env=Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")),
    )
    apply_checks(app)
    return app, stack


def main(context: dict[str, Any] | None = None) -> int:
    """Entry of ``cdk.json``'s app; the CLI passes ``-c`` values in the environment, which ``App`` reads."""
    try:
        app, _ = build_app(context)
    except ConfigError as exc:
        print(f"clawdbot stack: {exc}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
