"""Out-of-process invocation through AWS's runtime interface client: ``invoke_function`` and ``clawdbot invoke``.

Each test starts a real ``python -m awslambdaric`` process on a tiny function folder (see conftest), so what is
asserted (context, environment, logs, error JSON) is what the real runtime produced.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import pytest

from clawdbot.local import invoke_function
from tests.lambda_local.conftest import run_clawdbot, write_event

if TYPE_CHECKING:
    from pathlib import Path

REQUEST_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_handler_gets_the_event_a_lambda_context_and_lambdas_environment(
        echo_function: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAWDBOT_PASSED_ON", "yes")
    monkeypatch.setenv("UNRELATED_SHELL_VAR", "should not leak")

    result = invoke_function(echo_function, {"hello": "world"}, env={"GREETING": "hi"}, timeout_s=20,
                             memory_mb=256, function_name="echo-fn")

    assert result.ok and result.function_error is None
    body = result.json()
    assert body["event"] == {"hello": "world"}
    context = body["context"]
    assert context["aws_request_id"] == result.request_id
    assert context["function_name"] == "echo-fn" and context["function_version"] == "$LATEST"
    assert context["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:echo-fn"
    assert context["memory_limit_in_mb"] == "256"  # a string, as on Lambda
    assert context["log_group_name"] == "/aws/lambda/echo-fn"
    assert 0 < context["remaining_ms"] <= 20_000
    env = body["env"]
    assert env["AWS_REGION"] == "us-east-1" and env["AWS_ACCESS_KEY_ID"]
    assert env["_HANDLER"] == "handler.handler"
    assert env["LAMBDA_TASK_ROOT"] == body["cwd"] == str(echo_function.resolve())
    assert re.fullmatch(r"127\.0\.0\.1:\d+", env["AWS_LAMBDA_RUNTIME_API"])
    assert env["_X_AMZN_TRACE_ID"].startswith("Root=1-")
    assert env["AWS_EXECUTION_ENV"].startswith("AWS_Lambda_python3.")
    assert env["GREETING"] == "hi" and env["CLAWDBOT_PASSED_ON"] == "yes"
    assert env["UNRELATED_SHELL_VAR"] is None


def test_logs_have_the_function_output_and_the_platform_lines(echo_function: Path) -> None:
    lines: list[str] = []

    result = invoke_function(echo_function, {"action": "echo"}, log=lines.append)

    assert result.logs == "".join(f"{line}\n" for line in lines)  # streamed as written, and kept
    assert lines[0] == "init: module imported"  # init output precedes START, as on Lambda
    assert lines[1] == f"START RequestId: {result.request_id} Version: $LATEST"
    # The runtime's own log format: [LEVEL]\t<timestamp>\t<request id>\t<message>
    assert re.fullmatch(rf"\[INFO\]\t\S+Z\t{result.request_id}\thandling echo", lines[2])
    assert lines[-2] == f"END RequestId: {result.request_id}"
    assert re.fullmatch(rf"REPORT RequestId: {result.request_id}\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms"
                        r"\tMemory Size: 128 MB\t(Max Memory Used: \d+ MB\t)?Init Duration: [\d.]+ ms", lines[-1])
    assert result.duration_ms is not None and result.init_duration_ms is not None


def test_handler_exception_comes_back_as_lambdas_error_json(echo_function: Path) -> None:
    result = invoke_function(echo_function, {"action": "raise"})

    assert not result.ok and result.function_error == "Unhandled" and result.error_type == "ValueError"
    error = result.json()
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "the handler failed on purpose"
    assert error["requestId"] == result.request_id
    assert any("handler.py" in frame and "raise ValueError" in frame for frame in error["stackTrace"])
    assert "[ERROR] ValueError: the handler failed on purpose" in result.logs


def test_import_failure_is_an_init_error(broken_function: Path) -> None:
    result = invoke_function(broken_function, {})

    assert not result.ok and result.error_type == "Runtime.ImportModuleError"
    assert result.json()["errorMessage"] == ("Unable to import module 'handler': "
                                             "No module named 'a_module_that_is_not_installed'")
    assert "START RequestId" not in result.logs  # the invocation never started
    assert "INIT_REPORT Init Duration:" in result.logs and "Status: error" in result.logs


def test_missing_handler_function_is_reported_by_the_runtime(echo_function: Path) -> None:
    result = invoke_function(echo_function, {}, handler="handler.no_such_function")

    assert result.json()["errorType"] == "Runtime.HandlerNotFound"


def test_timeout_stops_the_function_with_lambdas_timeout_error(echo_function: Path) -> None:
    result = invoke_function(echo_function, {"action": "sleep", "seconds": 30}, timeout_s=0.5)

    assert not result.ok and result.error_type == "Sandbox.Timedout"
    assert re.fullmatch(rf"RequestId: {result.request_id} Error: Task timed out after 0\.50 seconds",
                        result.json()["errorMessage"])
    assert re.search(rf"\S+Z {result.request_id} Task timed out after 0\.50 seconds", result.logs)


def test_runtime_exiting_mid_invocation_is_an_exit_error(echo_function: Path) -> None:
    result = invoke_function(echo_function, {"action": "exit"})

    assert result.error_type == "Runtime.ExitError"
    assert result.json()["errorMessage"] == (f"RequestId: {result.request_id} Error: Runtime exited with error: "
                                             "exit status 3")


def test_missing_function_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="function folder not found"):
        invoke_function(tmp_path / "nowhere", {})


# ---------------------------------------------------------------------------- the command line
def test_cli_prints_the_response_on_stdout_and_the_log_on_stderr(echo_function: Path, tmp_path: Path) -> None:
    event = write_event(tmp_path, "echo.json", {"hello": "cli"})

    done = run_clawdbot("invoke", str(echo_function), str(event), "--env", "GREETING=from-cli",
                        "--function-name", "echo-cli")

    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)  # stdout is the payload alone: pipeable to jq
    assert body["event"] == {"hello": "cli"} and body["env"]["GREETING"] == "from-cli"
    assert body["context"]["function_name"] == "echo-cli"
    assert re.search(rf"^START RequestId: {REQUEST_ID} Version: \$LATEST$", done.stderr, re.MULTILINE)
    assert re.search(r"^REPORT RequestId: ", done.stderr, re.MULTILINE)


def test_cli_handler_error_prints_lambdas_error_json_and_fails(echo_function: Path, tmp_path: Path) -> None:
    event = write_event(tmp_path, "raise.json", {"action": "raise"})

    done = run_clawdbot("invoke", str(echo_function), str(event))

    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert set(error) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "the handler failed on purpose")
    assert "[ERROR] ValueError: the handler failed on purpose" in done.stderr


def test_cli_quiet_keeps_stderr_clean(echo_function: Path, tmp_path: Path) -> None:
    event = write_event(tmp_path, "echo.json", {"hello": "quiet"})

    done = run_clawdbot("invoke", "--quiet", str(echo_function), str(event))

    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout)["event"] == {"hello": "quiet"}


@pytest.mark.parametrize(("args", "message"), [
    (["{missing_dir}", "chat-completion"], "function folder not found"),
    (["{function}", "{tmp}/absent.json"], "event file not found"),
    (["{function}", "{tmp}/invalid.json"], "not valid JSON"),
    (["{function}", "chat-completion", "--env", "NOEQUALS"], "--env expects K=V"),
    (["{function}", "chat-completion", "--timeout", "0"], "--timeout must be positive"),
])
def test_cli_usage_errors_are_clear(echo_function: Path, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "invalid.json").write_text("{oops")
    values = {"missing_dir": str(tmp_path / "no_such_function"), "function": str(echo_function),
              "tmp": str(tmp_path)}

    done = run_clawdbot("invoke", *(arg.format(**values) for arg in args))

    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("clawdbot: error: ") and message in done.stderr
