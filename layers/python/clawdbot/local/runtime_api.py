"""A small local implementation of the AWS Lambda Runtime API, for running a handler the way Lambda runs it.

AWS's runtime interface client (``awslambdaric``, the same code that runs inside Lambda's Python runtime) drives
the handler: it imports the module (init), long-polls ``GET /runtime/invocation/next`` for an event, builds the
context from that response's headers, and posts the result or Lambda's error JSON back. Serving that protocol
on a loopback port, instead of calling the handler ourselves, is what makes a local invocation behave like a
deployed one: same init, same context object, same log and error formats.

Endpoints (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html):

- ``GET  /2018-06-01/runtime/invocation/next``: blocks until an invocation is submitted; the event is the
  body, the context travels in ``Lambda-Runtime-Aws-Request-Id``, ``-Deadline-Ms``, ``-Invoked-Function-Arn``,
  ``-Trace-Id`` (and ``-Client-Context`` when set);
- ``POST /2018-06-01/runtime/invocation/{id}/response`` and ``.../{id}/error``;
- ``POST /2018-06-01/runtime/init/error``;
- ``GET  /2018-06-01/runtime/restore/next`` and ``POST /2018-06-01/runtime/restore/error``: a SnapStart runtime
  (``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``) calls the first after init and its before-snapshot hooks; the
  answer means "resumed from the snapshot", and the runtime then runs its after-restore hooks. Here the snapshot
  is resumed at once, in the same process: the hooks and the order of the phases are Lambda's, the microVM is not.

Like Lambda's own Runtime API, the server writes the platform's ``START`` line to the function's log.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

API_PREFIX = "/2018-06-01/runtime"
#: Lambda's limit on a synchronous response payload (6 MB as Lambda counts it).
MAX_RESPONSE_BYTES = 6_291_556

OutcomeKind = Literal["response", "error", "init_error"]


@dataclass(frozen=True)
class Outcome:
    """What the runtime posted back: a response, an invocation error, or an init error."""

    kind: OutcomeKind
    body: bytes
    content_type: str = "application/json"
    #: ``Lambda-Runtime-Function-Error-Type`` for errors (e.g. ``Runtime.ImportModuleError``).
    error_type: str | None = None


@dataclass
class Invocation:
    """One event for the runtime, and, once it has answered, its outcome."""

    request_id: str
    payload: bytes
    invoked_function_arn: str
    timeout_s: float
    trace_id: str = ""
    function_version: str = "$LATEST"
    client_context: str | None = None
    #: Epoch seconds by which the invocation clock starts even if the runtime has not asked for the event yet:
    #: Lambda gives init 10 s and counts a longer init against the function's timeout.
    clock_starts_by: float | None = None
    #: Set by the server when the runtime fetches the event (epoch seconds / epoch milliseconds).
    delivered_at: float | None = None
    deadline_ms: int | None = None
    outcome: Outcome | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)


class RuntimeAPIServer:
    """The Runtime API on a free loopback port; one invocation in flight at a time, as in one Lambda sandbox.

    ``log`` receives platform log lines (``START ...``); ``init_error`` holds what the runtime posted to
    ``/runtime/init/error``, and that outcome also ends the invocation waiting for it.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log: Callable[[str], None] | None = None,
                 on_snapshot: Callable[[], None] | None = None) -> None:
        self._pending: queue.Queue[Invocation] = queue.Queue()
        self._lock = threading.Lock()
        self._current: Invocation | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.log = log or (lambda line: None)
        self.init_error: Outcome | None = None
        #: Epoch seconds at which a SnapStart runtime asked to be restored (and at which it was), and the restore
        #: phase's length (the after-restore hooks, up to its first ``invocation/next``).
        self.snapshot_at: float | None = None  # init and the before-snapshot hooks were done
        self.restore_requested_at: float | None = None
        self.restore_ms: float | None = None
        #: Called when the runtime asks to be restored, before it is answered: what happens between a version's
        #: publish and a restore (a key rotated, a table changed) can happen here.
        self.on_snapshot = on_snapshot
        self._httpd = _QuietHTTPServer((host, port), _RuntimeAPIHandler)
        self._httpd.runtime_api = self  # type: ignore[attr-defined]

    @property
    def address(self) -> str:
        """``host:port``, the value ``AWS_LAMBDA_RUNTIME_API`` takes."""
        host, port = self._httpd.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> RuntimeAPIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="lambda-runtime-api", daemon=True)
        self._thread.start()
        logger.debug("Lambda Runtime API listening on %s", self.address)
        return self

    def stop(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RuntimeAPIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def submit(self, invocation: Invocation) -> Invocation:
        """Queue ``invocation`` for the runtime's next ``GET .../invocation/next``."""
        self._pending.put(invocation)
        return invocation

    # --- called from request threads

    def _next_invocation(self) -> Invocation | None:
        """Block until an invocation is queued (``None`` once the server is closing)."""
        while not self._closing.is_set():
            try:
                invocation = self._pending.get(timeout=0.2)
            except queue.Empty:
                continue
            now = time.time()
            if self.restore_requested_at is not None and self.restore_ms is None:
                self.restore_ms = (now - self.restore_requested_at) * 1000
                self.log(f"RESTORE_REPORT Restore Duration: {self.restore_ms:.2f} ms")
            start = min(now, invocation.clock_starts_by) if invocation.clock_starts_by else now
            invocation.delivered_at = now
            invocation.deadline_ms = int((start + invocation.timeout_s) * 1000)
            with self._lock:
                self._current = invocation
            self.log(f"START RequestId: {invocation.request_id} Version: {invocation.function_version}")
            return invocation
        return None

    def _restore(self) -> None:
        """A SnapStart runtime finished init and its before-snapshot hooks: resume it from the "snapshot"."""
        self.snapshot_at = time.time()
        if self.on_snapshot is not None:
            self.on_snapshot()
        self.restore_requested_at = time.time()
        self.log("RESTORE_START (local: the snapshot is resumed in the same process)")

    def _finish(self, request_id: str, outcome: Outcome) -> bool:
        """Record the outcome of invocation ``request_id``; ``False`` if no such invocation is in flight."""
        with self._lock:
            invocation = self._current
            if invocation is None or invocation.request_id != request_id or invocation.outcome is not None:
                return False
            invocation.outcome = outcome
            self._current = None
        invocation.done.set()
        return True

    def _fail_init(self, outcome: Outcome) -> None:
        self.init_error = outcome
        # The invocation waiting for this sandbox ends with the init error, as on Lambda.
        while True:
            try:
                invocation = self._pending.get_nowait()
            except queue.Empty:
                break
            invocation.outcome = outcome
            invocation.done.set()


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # The runtime is stopped while its connection waits for the next event: a reset then is the normal
        # end of a sandbox, not an error worth a traceback on the console.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            logger.debug("runtime connection from %s closed: %s", client_address, exc)
            return
        super().handle_error(request, client_address)


class _RuntimeAPIHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the runtime client's HTTP library expects
    server_version = "LocalLambdaRuntimeAPI"

    _ACCEPTED: ClassVar[bytes] = b'{"status":"OK"}'

    @property
    def api(self) -> RuntimeAPIServer:
        return self.server.runtime_api  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("runtime api: " + format, *args)

    # --- routing

    def do_GET(self) -> None:
        if self.path == f"{API_PREFIX}/invocation/next":
            self._serve_next()
        elif self.path == f"{API_PREFIX}/restore/next":
            self.api._restore()
            self._send(HTTPStatus.OK, b"")
        else:
            self._send_error(HTTPStatus.NOT_FOUND, "NotFound", f"no such endpoint: GET {self.path}")

    def do_POST(self) -> None:
        body = self._read_body()
        parts = self.path.removeprefix(API_PREFIX).strip("/").split("/")
        content_type = self.headers.get("Content-Type", "application/json")
        error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
        if parts in (["init", "error"], ["restore", "error"]):  # a failed restore hook ends the sandbox too
            self.api._fail_init(Outcome("init_error", body, content_type, error_type or _error_type_in(body)))
            self._send(HTTPStatus.ACCEPTED, self._ACCEPTED)
        elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            self._post_result(parts[1], parts[2], body, content_type, error_type)
        else:
            self._send_error(HTTPStatus.NOT_FOUND, "NotFound", f"no such endpoint: POST {self.path}")

    # --- endpoints

    def _serve_next(self) -> None:
        invocation = self.api._next_invocation()
        if invocation is None:  # shutting down: the sandbox is going away
            self.close_connection = True
            return
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.invoked_function_arn,
        }
        if invocation.trace_id:
            headers["Lambda-Runtime-Trace-Id"] = invocation.trace_id
        if invocation.client_context:
            headers["Lambda-Runtime-Client-Context"] = invocation.client_context
        self._send(HTTPStatus.OK, invocation.payload, headers)

    def _post_result(self, request_id: str, what: str, body: bytes, content_type: str,
                     error_type: str | None) -> None:
        if what == "response" and len(body) > MAX_RESPONSE_BYTES:
            message = f"Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
            error = json.dumps({"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"}).encode()
            if self.api._finish(request_id, Outcome("error", error, error_type="Function.ResponseSizeTooLarge")):
                self._send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "RequestEntityTooLarge",
                                 f"Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).")
                return
        kind: OutcomeKind = "response" if what == "response" else "error"
        if kind == "error" and not error_type:
            error_type = _error_type_in(body)  # awslambdaric names the type in the body only
        if self.api._finish(request_id, Outcome(kind, body, content_type, error_type)):
            self._send(HTTPStatus.ACCEPTED, self._ACCEPTED)
        else:
            self._send_error(HTTPStatus.BAD_REQUEST, "InvalidRequestID", "Invalid request ID")

    # --- plumbing

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: HTTPStatus, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, status: HTTPStatus, error_type: str, message: str) -> None:
        self._send(status, json.dumps({"errorMessage": message, "errorType": error_type}).encode())


def _error_type_in(body: bytes) -> str | None:
    """The ``errorType`` of an error JSON body, if it is one."""
    try:
        error = json.loads(body)
    except ValueError:
        return None
    return error.get("errorType") if isinstance(error, dict) else None
