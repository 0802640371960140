"""jsii's end-of-life banner for the running Node.js is silenced where the CDK runs from Python (cdk.node_banner)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

from cdk.config import REPO_ROOT
from cdk.node_banner import ENV, node_major_version, silence_end_of_life_banner

if TYPE_CHECKING:
    import pytest

_START_JSII = "import aws_cdk; aws_cdk.App()"
_BANNER = "is end-of-life and not supported anymore"


def _jsii_stderr(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stderr


def test_the_variable_names_the_running_node(monkeypatch: pytest.MonkeyPatch) -> None:
    major = node_major_version()
    assert major is not None and major.isdigit()
    monkeypatch.delenv(ENV, raising=False)
    silence_end_of_life_banner()
    assert os.environ[ENV] == major
    monkeypatch.setenv(ENV, "18,20")  # a value the user set stays
    silence_end_of_life_banner()
    assert os.environ[ENV] == "18,20"


def test_jsii_starts_without_the_banner() -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    quiet = _jsii_stderr(f"from cdk.node_banner import silence_end_of_life_banner\n"
                         f"silence_end_of_life_banner()\n{_START_JSII}", env)
    assert _BANNER not in quiet, quiet
    if node_major_version() == "20":  # past its end of life for jsii: without the variable, the banner shows
        assert _BANNER in _jsii_stderr(_START_JSII, env)
