"""Fixtures for local Lambda invocation: tiny function folders, the ``clawdbot`` command, the chat_api handler.

The tiny functions are real Lambda function folders (a ``handler.py``) run by the real runtime interface
client; they exercise the platform side (context, logs, error formats) without loading a model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.event_loops import close_main_thread_loop

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

ECHO_HANDLER = '''
import logging
import os
import sys
import time

logger = logging.getLogger()
logger.setLevel(logging.INFO)
print("init: module imported")


def handler(event, context):
    logger.info("handling %s", event.get("action", "echo"))
    action = event.get("action")
    if action == "raise":
        raise ValueError("the handler failed on purpose")
    if action == "sleep":
        time.sleep(event["seconds"])
    if action == "exit":
        os._exit(3)
    return {
        "event": event,
        "context": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "log_group_name": context.log_group_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
        "env": {key: os.environ.get(key) for key in (
            "AWS_REGION", "AWS_ACCESS_KEY_ID", "_HANDLER", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_RUNTIME_API",
            "_X_AMZN_TRACE_ID", "AWS_EXECUTION_ENV", "GREETING", "CLAWDBOT_PASSED_ON", "UNRELATED_SHELL_VAR")},
        "cwd": os.getcwd(),
        "sys_path_0": sys.path[0],
    }
'''


@pytest.fixture(scope="session")
def echo_function(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A function folder whose handler echoes event, context and environment, or fails on request."""
    folder = tmp_path_factory.mktemp("echo_fn")
    (folder / "handler.py").write_text(textwrap.dedent(ECHO_HANDLER))
    return folder


@pytest.fixture(scope="session")
def broken_function(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A function folder whose module cannot be imported: the failure happens in Lambda's init phase."""
    folder = tmp_path_factory.mktemp("broken_fn")
    (folder / "handler.py").write_text("import a_module_that_is_not_installed\n\ndef handler(event, context):\n"
                                       "    return 'unreachable'\n")
    return folder


def write_event(folder: Path, name: str, event: object) -> Path:
    path = folder / name
    path.write_text(json.dumps(event))
    return path


def clawdbot_command() -> list[str]:
    """The installed ``clawdbot`` console script next to this interpreter (else the module it runs)."""
    script = Path(sys.executable).with_name("clawdbot")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "clawdbot.cli.main"]


def run_clawdbot(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*clawdbot_command(), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def chat_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """``functions/chat_api/handler.py`` imported as Lambda would (cold start) with a fresh data directory.

    The module builds its app from ``CLAWDBOT_*`` variables at import, so they are set first and the cached
    settings cleared; the module is dropped again afterwards so other tests import their own.
    """
    import importlib

    from clawdbot.config.settings import Settings, get_settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLAWDBOT_DATA_DIR", str(tmp_path_factory.mktemp("chat_api_data")))
        patch.setenv("CLAWDBOT_SESSION_STORE", "sqlite")
        patch.setenv("CLAWDBOT_INFERENCE", "local")
        model_dir = Settings().model_dir  # the shipped model unless CLAWDBOT_MODEL_DIR says otherwise
        assert (model_dir / "model.onnx").exists(), f"the model is missing at {model_dir}"
        get_settings.cache_clear()
        sys.modules.pop("functions.chat_api.handler", None)
        try:
            yield importlib.import_module("functions.chat_api.handler")
        finally:
            sys.modules.pop("functions.chat_api.handler", None)
            close_main_thread_loop()
    get_settings.cache_clear()
