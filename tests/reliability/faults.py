"""Fault-injecting proxies that sit between ``clawdbot serve`` and what it depends on.

* :class:`TcpFaultProxy`: any TCP service (Redis). ``refuse()`` drops every open connection and refuses new ones
  (the server went away), ``restore()`` lets traffic through again.
* :class:`DynamoDBFaultProxy`: an HTTP proxy in front of DynamoDB Local that answers chosen operations with
  DynamoDB's own throttling error (``ThrottlingException``, HTTP 400, as botocore parses it), counting every
  attempt, so a test sees the client's retries, their spacing, and that they stop.

The model endpoint's faults come from the SageMaker router in ``tests.sagemaker.router``. Nothing here patches
our code: the app under test talks to these over real sockets and reacts as it would to the real thing.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"})


class TcpFaultProxy:
    """A loopback TCP proxy to ``upstream_port`` that can refuse all traffic on demand."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._refusing = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        #: Connections refused or cut while refusing.
        self.faults = 0
        self._thread = threading.Thread(target=self._accept, name="tcp-fault-proxy", daemon=True)
        self._thread.start()

    def url(self, scheme: str = "redis") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def refuse(self) -> None:
        """Cut every open connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._refusing = True
            open_now, self._open = self._open, set()
        for sock in open_now:
            self.faults += 1
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        self.refuse()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refusing = self._refusing
            if refusing:
                self.faults += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # linger 0: a reset, as from a host with nothing listening
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):  # the other direction's thread then stops on its closed socket
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._open.discard(source)
                self._open.discard(target)


class DynamoDBFaultProxy:
    """HTTP proxy to DynamoDB Local that throttles chosen operations (``TransactWriteItems``, ...)."""

    def __init__(self, upstream_url: str) -> None:
        target = urlsplit(upstream_url)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 8000)
        #: Operation name -> how many more of its calls to throttle (``None``: all of them).
        self._throttle: dict[str, int | None] = {}
        self._lock = threading.Lock()
        #: Every call per operation, and the throttled ones; (operation, monotonic time) of each throttled call.
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.throttle_times: list[tuple[str, float]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="dynamodb-fault-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def throttle(self, operation: str, times: int | None = None) -> None:
        """Answer ``operation`` with ``ThrottlingException`` (the next ``times`` calls, or all until cleared)."""
        with self._lock:
            self._throttle[operation] = times

    def clear(self) -> None:
        with self._lock:
            self._throttle.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take_fault(self, operation: str) -> bool:
        with self._lock:
            self.calls[operation] += 1
            if operation not in self._throttle:
                return False
            left = self._throttle[operation]
            if left is not None:
                if left <= 0:
                    return False
                self._throttle[operation] = left - 1
            self.throttled[operation] += 1
            self.throttle_times.append((operation, time.monotonic()))
            return True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                operation = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2]
                if proxy._take_fault(operation):
                    self._answer(400, b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
                                      b'"message":"Rate of requests exceeds the allowed throughput."}',
                                 {"Content-Type": "application/x-amz-json-1.0"})
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    upstream.request("POST", self.path, body=body, headers=dict(self.headers.items()))
                    response = upstream.getresponse()
                    data = response.read()
                    headers = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
                    self._answer(response.status, data, headers)
                finally:
                    upstream.close()

            def _answer(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("x-amzn-RequestId", "fault-proxy")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
