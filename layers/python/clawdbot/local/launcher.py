"""Run a Lambda function folder on one event in a fresh process, through AWS's runtime interface client.

What ``sam local invoke`` does in a container, without Docker: start ``python -m awslambdaric
<module>.<function>`` with the function folder as ``LAMBDA_TASK_ROOT`` and working directory, Lambda's
environment variables and ``AWS_LAMBDA_RUNTIME_API`` pointing at :class:`RuntimeAPIServer`; feed it one event;
collect the response or Lambda's error JSON; stop the process. The platform's side of the contract is Lambda's
too: init gets 10 seconds before the overrun counts against the timeout, a timed-out or crashed runtime yields
``Sandbox.Timedout`` / ``Runtime.ExitError``, and the log ends with ``END`` and ``REPORT`` lines.

The child sees a clean environment, as a deployed function does: ``PATH``, ``HOME``, locale, the ``CLAWDBOT_*``
variables of the caller, Lambda's variables (fake credentials, ``AWS_REGION`` ``us-east-1`` by default), then
the caller's ``env`` overrides.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import clawdbot
from clawdbot.local.runtime_api import Invocation, Outcome, RuntimeAPIServer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

#: Lambda's on-demand init limit; a longer init eats into the invocation's timeout.
INIT_TIMEOUT_S = 10.0
ACCOUNT_ID = "123456789012"
#: AWS's documented example credentials: valid in shape, never valid for a real account.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "local-invoke-session-token",
}
#: Variables of the caller's environment a local function keeps (plus every ``CLAWDBOT_*``).
INHERITED_VARIABLES = ("PATH", "HOME", "TMPDIR", "LC_ALL", "SYSTEMROOT")


@dataclass
class InvokeResult:
    """The invocation as a synchronous ``Invoke`` call would return it, plus what the console would show."""

    request_id: str
    #: The response payload, or Lambda's error JSON (``errorMessage``/``errorType``/``stackTrace``).
    payload: bytes
    #: ``None`` on success, ``"Unhandled"`` on failure (the ``X-Amz-Function-Error`` header's value).
    function_error: str | None
    #: The function's log: its stdout/stderr plus the platform's ``START``/``END``/``REPORT`` lines.
    logs: str
    init_duration_ms: float | None = None
    #: SnapStart only (``snapstart=True``): the restore phase, after-restore hooks included.
    restore_duration_ms: float | None = None
    duration_ms: float | None = None
    max_memory_used_mb: int | None = None
    error_type: str | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.function_error is None

    def json(self) -> Any:
        return json.loads(self.payload)


class _LogSink:
    """Collects the function's log lines and forwards each to ``forward`` as it arrives.

    Two writers share it: the child's output (read by :meth:`pump` on its own thread) and the platform lines the
    Runtime API server and the launcher write (``START``, ``END``, ``REPORT``). A platform line first takes in
    whatever the child has already written, under the same lock, so the log keeps Lambda's order (init output
    before ``START``, the handler's output before ``END``) however the threads are scheduled.
    """

    def __init__(self, forward: Callable[[str], None] | None) -> None:
        self._forward = forward
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._partial = b""

    def __call__(self, line: str) -> None:
        """A platform line."""
        with self._lock:
            self._drain()
            self._emit(line)

    def _emit(self, line: str) -> None:  # lock held
        self._lines.append(line)
        if self._forward is not None:
            self._forward(line)

    def _emit_raw(self, raw: bytes) -> None:  # lock held
        # The runtime separates an error's lines with ``\r`` (one CloudWatch event, several lines): split here.
        for line in raw.decode("utf-8", "replace").rstrip("\r").split("\r"):
            self._emit(line)

    def _drain(self) -> bool:
        """Take in every complete line the child has written so far (lock held); False once it closed its end."""
        if self._fd is None:
            return False
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                if self._partial:
                    self._emit_raw(self._partial)
                    self._partial = b""
                self._fd = None
                return False
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            for raw in complete:
                self._emit_raw(raw)

    def pump(self, stream: Any) -> None:
        """Read the child's output until EOF (non-blocking reads, each under the lock)."""
        fd = stream.fileno()
        os.set_blocking(fd, False)
        with self._lock:
            self._fd = fd
        try:
            while True:
                select.select([fd], [], [], 0.5)
                with self._lock:
                    if not self._drain():
                        break
        finally:
            with self._lock:
                self._fd = None
            stream.close()

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(f"{line}\n" for line in self._lines)


def invoke_function(
    function_dir: str | Path,
    event: Any,
    *,
    handler: str = "handler.handler",
    env: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
    memory_mb: int = 128,
    function_name: str | None = None,
    python: str = sys.executable,
    log: Callable[[str], None] | None = None,
    snapstart: bool = False,
    on_snapshot: Callable[[], None] | None = None,
) -> InvokeResult:
    """Invoke the function in ``function_dir`` once with ``event`` (JSON-serializable, or ``bytes`` as is).

    ``log`` receives each log line as it is written (the lines are also in the result). Raises
    ``NotADirectoryError`` for a missing folder and ``ModuleNotFoundError`` when ``python`` lacks awslambdaric.

    ``snapstart`` runs the function as a SnapStart version does: init, the before-snapshot hooks, a restore, the
    after-restore hooks, then the event; the ``REPORT`` line then gives the restore's duration, not init's (which
    a deployed version pays when it is published). ``on_snapshot`` runs between the two, while the function
    waits to be restored.
    """
    folder = Path(function_dir).resolve()
    if not folder.is_dir():
        raise NotADirectoryError(f"function folder not found: {function_dir}")
    if python == sys.executable and importlib.util.find_spec("awslambdaric") is None:
        raise ModuleNotFoundError("awslambdaric is not installed (pip install awslambdaric)", name="awslambdaric")
    payload = event if isinstance(event, bytes) else json.dumps(event).encode("utf-8")
    name = function_name or folder.name
    environment = _lambda_environment(folder, name, handler, memory_mb, env or {})
    if snapstart:
        environment["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
    request_id = str(uuid.uuid4())
    sink = _LogSink(log)

    with RuntimeAPIServer(log=sink, on_snapshot=on_snapshot if snapstart else None) as api:
        environment["AWS_LAMBDA_RUNTIME_API"] = api.address
        started = time.time()
        invocation = api.submit(Invocation(
            request_id=request_id,
            payload=payload,
            invoked_function_arn=f"arn:aws:lambda:{environment['AWS_REGION']}:{ACCOUNT_ID}:function:{name}",
            timeout_s=timeout_s,
            trace_id=_trace_id(),
            clock_starts_by=started + INIT_TIMEOUT_S,
        ))
        logger.debug("starting %s in %s (runtime API %s)", handler, folder, api.address)
        process = subprocess.Popen(
            [python, "-m", "awslambdaric", handler],
            cwd=folder, env=environment,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        pump = threading.Thread(target=sink.pump, args=(process.stdout,), name="lambda-logs", daemon=True)
        pump.start()
        try:
            outcome = _wait(invocation, process, started, timeout_s, sink)
            answered = time.time()
            max_memory = _max_memory_mb(process.pid)
        finally:
            _stop(process)
            pump.join(timeout=5)

    init_ms = ((api.snapshot_at or invocation.delivered_at or answered) - started) * 1000
    duration_ms = (answered - invocation.delivered_at) * 1000 if invocation.delivered_at else None
    if outcome.kind == "init_error" or invocation.delivered_at is None:
        status = "timeout" if outcome.error_type == "Sandbox.Timedout" else "error"
        sink(f"INIT_REPORT Init Duration: {init_ms:.2f} ms\tPhase: init\tStatus: {status}"
             + (f"\tError Type: {outcome.error_type}" if outcome.error_type else ""))
    if duration_ms is not None:
        sink(f"END RequestId: {request_id}")
        sink(_report_line(request_id, duration_ms, memory_mb, max_memory, init_ms, restore_ms=api.restore_ms))
    return InvokeResult(
        request_id=request_id,
        payload=outcome.body,
        function_error=None if outcome.kind == "response" else "Unhandled",
        logs=sink.text,
        init_duration_ms=init_ms,
        restore_duration_ms=api.restore_ms,
        duration_ms=duration_ms,
        max_memory_used_mb=max_memory,
        error_type=outcome.error_type,
    )


def _wait(invocation: Invocation, process: subprocess.Popen[bytes], started: float, timeout_s: float,
          log: Callable[[str], None]) -> Outcome:
    """Wait for the runtime's answer, its exit, or the deadline, whichever comes first."""
    while True:
        if invocation.done.wait(0.02):
            assert invocation.outcome is not None
            return invocation.outcome
        returncode = process.poll()
        if returncode is not None:
            if invocation.outcome is not None:  # answered just before exiting (an init error does that)
                return invocation.outcome
            return _platform_error(invocation.request_id, "Runtime.ExitError",
                                   f"Runtime exited with error: {_exit_status(returncode)}")
        deadline = (invocation.deadline_ms / 1000 if invocation.deadline_ms is not None
                    else started + INIT_TIMEOUT_S + timeout_s)
        if time.time() >= deadline:
            message = f"Task timed out after {timeout_s:.2f} seconds"
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            log(f"{now} {invocation.request_id} {message}")
            return _platform_error(invocation.request_id, "Sandbox.Timedout", message)


def _platform_error(request_id: str, error_type: str, message: str) -> Outcome:
    """An error the platform reports on the function's behalf, in the shape Lambda's Invoke returns it."""
    body = json.dumps({"errorType": error_type, "errorMessage": f"RequestId: {request_id} Error: {message}"})
    return Outcome("error", body.encode(), error_type=error_type)


def _exit_status(returncode: int) -> str:
    """Describe an exit status the way Lambda's (Go) platform does: ``exit status 1``, ``signal: killed``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    description = signal.strsignal(-returncode) or f"signal {-returncode}"
    return f"signal: {description.lower()}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _max_memory_mb(pid: int) -> int | None:
    """Peak resident memory of the runtime process (Linux ``VmHWM``), for the ``REPORT`` line."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return math.ceil(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return None


def _report_line(request_id: str, duration_ms: float, memory_mb: int, max_memory_mb: int | None,
                 init_ms: float, restore_ms: float | None = None) -> str:
    # Lambda bills the init phase of on-demand functions too (since August 2025); a SnapStart version bills the
    # restore instead (its init ran, and was billed, when the version was published).
    billed = duration_ms + (restore_ms if restore_ms is not None else init_ms)
    fields = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {duration_ms:.2f} ms",
        f"Billed Duration: {math.ceil(billed)} ms",
        f"Memory Size: {memory_mb} MB",
    ]
    if max_memory_mb is not None:
        fields.append(f"Max Memory Used: {max_memory_mb} MB")
    fields.append(f"Restore Duration: {restore_ms:.2f} ms" if restore_ms is not None
                  else f"Init Duration: {init_ms:.2f} ms")
    return "\t".join(fields)


def _trace_id() -> str:
    """An X-Ray trace header: ``Root=1-<epoch hex>-<96-bit id>;Parent=<64-bit id>;Sampled=0``."""
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"


def _lambda_environment(folder: Path, name: str, handler: str, memory_mb: int,
                        overrides: Mapping[str, str]) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if key in INHERITED_VARIABLES or key.startswith("CLAWDBOT_")}
    region = overrides.get("AWS_REGION", "us-east-1")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    # The function folder first (LAMBDA_TASK_ROOT), then the folder holding this clawdbot package: the layer's
    # content, as /opt/python is on Lambda.
    layer = Path(clawdbot.__file__).resolve().parents[1]
    environment.update({
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONPATH": os.pathsep.join([str(folder), str(layer)]),
        "LAMBDA_TASK_ROOT": str(folder),
        "_HANDLER": handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{version}",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"{time.strftime('%Y/%m/%d', time.gmtime())}/[$LATEST]{uuid.uuid4().hex}",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        **FAKE_CREDENTIALS,
    })
    environment.update(overrides)
    return environment
