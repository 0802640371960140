"""jsii's end-of-life banner for the running Node.js, silenced where the CDK runs from Python.

aws-cdk-lib runs on jsii, which starts a Node.js process and prints a 12-line banner on stderr each time if that
Node.js is past its end of life by jsii's calendar (Node 20 since 2026-10-30), unless
``JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION`` lists its major version. The project supports Node 20 (README,
"Quick start"), the synth is the same either way, and the banner buried the output of ``cdk synth``, the CDK tests
and ``bench.coldstart``. A value already set is left as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess

ENV = "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"


def node_major_version() -> str | None:
    """The major version of the ``node`` on ``PATH`` (``"20"``), or ``None`` without one."""
    node = shutil.which("node")
    if node is None:
        return None
    try:
        done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    major = done.stdout.strip().removeprefix("v").split(".")[0]
    return major if major.isdigit() else None


def silence_end_of_life_banner() -> None:
    """Set :data:`ENV` to the running Node.js major version, before jsii starts (unless it is set already)."""
    if os.environ.get(ENV):
        return
    major = node_major_version()
    if major is not None:
        os.environ[ENV] = major
