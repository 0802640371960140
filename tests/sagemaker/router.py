"""A loopback stand-in for the SageMaker Runtime front end, in front of a real container process.

botocore's ``sagemaker-runtime`` client (``endpoint_url`` pointed here) sends
``POST /endpoints/{name}/invocations`` and ``/endpoints/{name}/invocations-response-stream``; the router forwards
them to the container's ``/invocations`` and answers the way SageMaker does:

- a container answer that is not 2xx becomes SageMaker's ``ModelError`` (HTTP 424 with ``OriginalStatusCode``
  and ``OriginalMessage``), before any stream starts;
- a streamed answer is re-framed into AWS event-stream ``PayloadPart`` messages
  (``application/vnd.amazon.eventstream``), cut wherever the container's bytes happen to arrive, or into
  ``part_size``-byte pieces to prove the client reassembles events split anywhere (even inside a UTF-8 char);
- the invoked variant comes back in ``x-Amzn-Invoked-Production-Variant``;
- with several containers (an endpoint's instances), a call goes to the next one in turn, or to a random one
  (``routing="random"``), unless it names a stateful session: ``SessionId=NEW_SESSION`` (``InvokeEndpoint`` only;
  the streaming call is refused it, as SageMaker documents) records the id the container answers in
  ``X-Amzn-SageMaker-New-Session-Id`` with its instance, and later calls naming that id go there until it expires.
  A call naming a session the router does not route (unknown, expired) gets a ``ValidationError``: SageMaker does
  not document its answer, and this is the one our backend assumes.

Faults are queued, one per upcoming request (:meth:`SageMakerRouter.fail_next`), so error mapping is tested
against real HTTP error shapes that botocore parses itself, never against a patched client.
"""

from __future__ import annotations

import binascii
import calendar
import http.client
import json
import random
import re
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

LOG_STREAM_ARN = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/test"
_PATH = re.compile(r"/endpoints/([^/]+)/(invocations|invocations-response-stream)")
#: What SageMaker says when a container takes longer than the invocation time limit.
TIMEOUT_MESSAGE = (
    "Your invocation timed out while waiting for a response from container primary. Review the latency "
    "metrics for each container in Amazon CloudWatch, resolve the issue, and try again."
)


# --------------------------------------------------------------------------------------------- event stream
def encode_event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (the framing botocore's ``EventStreamBuffer`` decodes).

    Layout: prelude (total length, headers length: big-endian uint32), the prelude's CRC32, headers (name length
    byte, name, type 7 = string, uint16 value length, value), payload, then the CRC32 of everything before it.
    """
    encoded = b"".join(
        struct.pack(">B", len(name.encode())) + name.encode() + b"\x07" + struct.pack(">H", len(value.encode()))
        + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def payload_part(data: bytes) -> bytes:
    return encode_event_message(
        {":event-type": "PayloadPart", ":content-type": "application/octet-stream", ":message-type": "event"}, data
    )


def stream_exception(kind: str, message: str, error_code: str | None = None) -> bytes:
    body: dict[str, str] = {"Message": message}
    if error_code:
        body["ErrorCode"] = error_code
    return encode_event_message(
        {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
        json.dumps(body).encode(),
    )


# --------------------------------------------------------------------------------------------- faults
@dataclass(frozen=True)
class Fault:
    """What the router does to one request instead of (or on the way to) forwarding it.

    - ``error``: answer ``status`` with SageMaker's error ``code`` and body ``fields`` (no forwarding);
    - ``delay``: wait ``seconds`` before forwarding (past the client's read timeout: a timeout);
    - ``stall``: forward a stream, then go silent for ``seconds`` after ``after_parts`` parts;
    - ``stream_error``: forward a stream, then end it after ``after_parts`` parts with an exception event
      ``code`` (``ModelStreamError``...) carrying ``fields``;
    - ``truncate``: forward a stream, then end it cleanly after ``after_parts`` parts (a connection cut short).
    """

    kind: str
    code: str = ""
    status: int = 400
    message: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    after_parts: int = 0


_STREAM_FAULTS = frozenset({"stall", "stream_error", "truncate"})


@dataclass(frozen=True)
class RoutedRequest:
    endpoint: str
    operation: str
    headers: dict[str, str]
    body: Any
    #: Index of the container (instance) the call went to; -1 when the router answered it itself.
    instance: int = -1


# --------------------------------------------------------------------------------------------- router
class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client closing its kept-alive connection (boto3 shutting down its pool) is not an error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class SageMakerRouter:
    def __init__(self, container_url: str | list[str], *, part_size: int | None = None,
                 invocation_timeout: float = 60.0, routing: str = "round-robin", seed: int = 0) -> None:
        urls = [container_url] if isinstance(container_url, str) else list(container_url)
        self.instances = [((t.hostname or "127.0.0.1"), t.port or 8080) for t in map(urlsplit, urls)]
        self.routing = routing
        self._random = random.Random(seed)
        self._turn = 0
        #: Stateful sessions: id -> (instance index, expiry as the container wrote it, epoch seconds).
        self.sessions: dict[str, tuple[int, float]] = {}
        self.part_size = part_size
        self.invocation_timeout = invocation_timeout
        self.requests: list[RoutedRequest] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="sagemaker-router", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SageMakerRouter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SageMakerRouter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, *faults: Fault) -> None:
        """Apply ``faults`` to the next requests, one each, in order."""
        with self._lock:
            self._faults.extend(faults)

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    def _next_fault(self, streaming: bool) -> Fault | None:
        """The fault for this request: the next one queued, except that a fault of a stream (``stall``,
        ``stream_error``, ``truncate``) waits for a streamed call (a streamed turn's session-opening call passes)."""
        with self._lock:
            if not self._faults or (not streaming and self._faults[0].kind in _STREAM_FAULTS):
                return None
            return self._faults.popleft()

    def pick(self) -> int:
        """The instance of a call that names no session: the next in turn, or a random one."""
        with self._lock:
            if self.routing == "random":
                return self._random.randrange(len(self.instances))
            self._turn = (self._turn + 1) % len(self.instances)
            return self._turn

    def session_instance(self, session_id: str) -> int | None:
        """The instance routing ``session_id``, ``None`` if none does (unknown, or expired)."""
        with self._lock:
            routed = self.sessions.get(session_id)
        return routed[0] if routed is not None and routed[1] > time.time() else None

    def remember(self, header: str | None, instance: int) -> None:
        """Record the session a container opened (its ``<id>; Expires=<time>`` header) on ``instance``."""
        match = re.fullmatch(r"([^;]+);\s*Expires=(\S+)", (header or "").strip())
        if match:
            expires = calendar.timegm(time.strptime(match[2], "%Y-%m-%dT%H:%M:%SZ"))  # a UTC time
            with self._lock:
                self.sessions[match[1]] = (instance, expires)


# Convenience constructors for SageMaker's error shapes (status codes as SageMaker Runtime sends them).
def throttling(message: str = "Rate exceeded", headers: dict[str, str] | None = None) -> Fault:
    return Fault("error", "ThrottlingException", 400, message, headers=headers or {})


def validation_error(message: str) -> Fault:
    return Fault("error", "ValidationError", 400, message)


def model_error(original_status: int, original_message: str) -> Fault:
    return Fault("error", "ModelError", 424, _model_error_message(original_status, original_message),
                 fields={"OriginalStatusCode": original_status, "OriginalMessage": original_message,
                         "LogStreamArn": LOG_STREAM_ARN})


def model_timeout() -> Fault:
    """SageMaker's answer when the container exceeds the invocation time limit."""
    return Fault("error", "ModelError", 424, _model_error_message(0, TIMEOUT_MESSAGE),
                 fields={"OriginalStatusCode": 0, "OriginalMessage": TIMEOUT_MESSAGE, "LogStreamArn": LOG_STREAM_ARN})


def _model_error_message(status: int, message: str) -> str:
    kind = "client" if 400 <= status < 500 else "server"
    return (f'Received {kind} error ({status}) from primary with message "{message}". See {LOG_STREAM_ARN} '
            "in account 123456789012 for more information.")


def _handler_for(router: SageMakerRouter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            match = _PATH.fullmatch(urlsplit(self.path).path)
            if match is None:
                self._error(404, "UnknownOperationException", "Unknown operation")
                return
            endpoint, operation = unquote(match.group(1)), match.group(2)
            try:
                parsed: Any = json.loads(body)
            except ValueError:
                parsed = body
            streaming = operation == "invocations-response-stream"
            session = self.headers.get("X-Amzn-SageMaker-Session-Id")
            instance = -1
            refusal = None
            if session == "NEW_SESSION" and streaming:
                refusal = "You can't create a stateful session by using InvokeEndpointWithResponseStream."
            elif session and session != "NEW_SESSION":
                known = router.session_instance(session)
                if known is None:
                    refusal = f"Session {session} is not found or has expired."
                instance = -1 if known is None else known
            else:
                instance = router.pick()
            headers_seen = {k.lower(): v for k, v in self.headers.items()}
            router.requests.append(RoutedRequest(endpoint, operation, headers_seen, parsed, instance))
            fault = router._next_fault(streaming)
            if fault is not None and fault.kind == "error":
                self._error(fault.status, fault.code, fault.message, fault.fields, fault.headers)
                return
            if refusal is not None:
                self._error(400, "ValidationError", refusal)
                return
            if fault is not None and fault.kind == "delay":
                time.sleep(fault.seconds)
            accept = self.headers.get("X-Amzn-SageMaker-Accept" if streaming else "Accept")
            headers = {"Content-Type": self.headers.get("Content-Type", "application/octet-stream")}
            if accept:
                headers["Accept"] = accept
            if attrs := self.headers.get("X-Amzn-SageMaker-Custom-Attributes"):
                headers["X-Amzn-SageMaker-Custom-Attributes"] = attrs
            if session:
                headers["X-Amzn-SageMaker-Session-Id"] = session
            variant = self.headers.get("X-Amzn-SageMaker-Target-Variant") or "AllTraffic"
            host, port = router.instances[instance]
            connection = http.client.HTTPConnection(host, port, timeout=router.invocation_timeout)
            try:
                connection.request("POST", "/invocations", body=body, headers=headers)
                response = connection.getresponse()
                if response.status >= 300 or not streaming:
                    opened = response.getheader("X-Amzn-SageMaker-New-Session-Id")
                    if session == "NEW_SESSION" and response.status < 300:
                        router.remember(opened, instance)
                    self._relay(response, variant, opened if session == "NEW_SESSION" else None)
                else:
                    self._relay_stream(response, variant, fault)
            except TimeoutError:
                self._error(424, "ModelError", _model_error_message(0, TIMEOUT_MESSAGE),
                            {"OriginalStatusCode": 0, "OriginalMessage": TIMEOUT_MESSAGE})
            finally:
                connection.close()

        def _relay(self, response: http.client.HTTPResponse, variant: str, new_session: str | None = None) -> None:
            data = response.read()
            if response.status >= 300:
                text = data.decode("utf-8", "replace")
                self._error(424, "ModelError", _model_error_message(response.status, text),
                            {"OriginalStatusCode": response.status, "OriginalMessage": text,
                             "LogStreamArn": LOG_STREAM_ARN, "ErrorCode": "CLIENT_ERROR_FROM_MODEL"})
                return
            self.send_response(200)
            self.send_header("Content-Type", response.getheader("Content-Type", "application/octet-stream"))
            self.send_header("x-Amzn-Invoked-Production-Variant", variant)
            if new_session:
                self.send_header("X-Amzn-SageMaker-New-Session-Id", new_session)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _relay_stream(self, response: http.client.HTTPResponse, variant: str, fault: Fault | None) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.amazon.eventstream")
            self.send_header("X-Amzn-SageMaker-Content-Type",
                             response.getheader("Content-Type", "application/octet-stream"))
            self.send_header("x-Amzn-Invoked-Production-Variant", variant)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = 0
            try:
                while True:
                    try:
                        piece = response.read1(65536)
                    except (http.client.HTTPException, OSError):
                        self._chunk(stream_exception("ModelStreamError", "The stream from the model broke.",
                                                     "StreamBroken"))
                        break
                    if not piece:
                        break
                    size = router.part_size or len(piece)
                    for start in range(0, len(piece), size):
                        if fault is not None and sent == fault.after_parts:
                            if fault.kind == "stall":
                                time.sleep(fault.seconds)
                            elif fault.kind in ("stream_error", "truncate"):
                                if fault.kind == "stream_error":
                                    self._chunk(stream_exception(fault.code, fault.message,
                                                                 fault.fields.get("ErrorCode")))
                                self._chunk(b"")
                                return
                        self._chunk(payload_part(piece[start:start + size]))
                        sent += 1
                self._chunk(b"")
            except OSError:  # the client hung up (closed the stream early): stop reading the container too
                self.close_connection = True

        def _chunk(self, data: bytes) -> None:
            """One HTTP/1.1 chunk (empty: the terminating chunk)."""
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _error(self, status: int, code: str, message: str, fields: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> None:
            payload = json.dumps({"Message": message, **(fields or {})}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("x-amzn-ErrorType", f"{code}:http://internal.amazon.com/coral/com.amazon.sagemaker/")
            self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
