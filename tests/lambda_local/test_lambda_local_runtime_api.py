"""The local Lambda Runtime API spoken over real HTTP connections, as a runtime client speaks it."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import TYPE_CHECKING

import pytest

from clawdbot.local import Invocation, RuntimeAPIServer

if TYPE_CHECKING:
    from collections.abc import Iterator

NEXT = "/2018-06-01/runtime/invocation/next"


@pytest.fixture
def api() -> Iterator[RuntimeAPIServer]:
    lines: list[str] = []
    with RuntimeAPIServer(log=lines.append) as server:
        server.log_lines = lines  # type: ignore[attr-defined]
        yield server


def request(api: RuntimeAPIServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = api.address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def invocation(**overrides: object) -> Invocation:
    fields: dict = {"request_id": "8f507cfc-0000-4697-b07a-ac58fc914c95", "payload": b'{"hello": "world"}',
                    "invoked_function_arn": "arn:aws:lambda:us-east-1:123456789012:function:echo",
                    "timeout_s": 3.0, "trace_id": "Root=1-5e6a8c3e-2a1b3c4d5e6f7a8b9c0d1e2f;Sampled=0"}
    return Invocation(**{**fields, **overrides})


def test_next_delivers_the_event_with_lambdas_headers(api: RuntimeAPIServer) -> None:
    api.submit(invocation(client_context='{"custom": {"a": "b"}}'))
    before_ms = time.time() * 1000

    status, headers, body = request(api, "GET", NEXT)

    assert status == 200 and body == b'{"hello": "world"}'
    assert headers["Content-Type"] == "application/json"
    assert headers["Lambda-Runtime-Aws-Request-Id"] == "8f507cfc-0000-4697-b07a-ac58fc914c95"
    assert headers["Lambda-Runtime-Invoked-Function-Arn"] == "arn:aws:lambda:us-east-1:123456789012:function:echo"
    assert headers["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
    assert headers["Lambda-Runtime-Client-Context"] == '{"custom": {"a": "b"}}'
    # The deadline is the timeout from delivery, in epoch milliseconds.
    assert before_ms + 2000 < int(headers["Lambda-Runtime-Deadline-Ms"]) <= time.time() * 1000 + 3000
    assert api.log_lines == ["START RequestId: 8f507cfc-0000-4697-b07a-ac58fc914c95 Version: $LATEST"]  # type: ignore[attr-defined]


def test_deadline_counts_a_long_init_against_the_timeout(api: RuntimeAPIServer) -> None:
    # GIVEN an invocation whose clock had to start 2 s ago (init ran past its allowance)
    api.submit(invocation(clock_starts_by=time.time() - 2))

    _, headers, _ = request(api, "GET", NEXT)

    assert int(headers["Lambda-Runtime-Deadline-Ms"]) <= time.time() * 1000 + 1000


def test_next_blocks_until_an_invocation_is_submitted(api: RuntimeAPIServer) -> None:
    results: list[tuple[int, dict[str, str], bytes]] = []
    poller = threading.Thread(target=lambda: results.append(request(api, "GET", NEXT)))
    poller.start()
    poller.join(timeout=0.5)
    assert poller.is_alive() and not results  # long-polling, like Lambda between invocations

    api.submit(invocation())
    poller.join(timeout=10)

    assert results and results[0][0] == 200


def test_response_is_accepted_once_for_the_invocation_in_flight(api: RuntimeAPIServer) -> None:
    pending = api.submit(invocation())
    request(api, "GET", NEXT)
    url = f"/2018-06-01/runtime/invocation/{pending.request_id}/response"

    first = request(api, "POST", url, b'{"statusCode": 200}', {"Content-Type": "application/json"})
    again = request(api, "POST", url, b'{"statusCode": 500}')

    assert (first[0], json.loads(first[2])) == (202, {"status": "OK"})
    assert again[0] == 400 and json.loads(again[2])["errorType"] == "InvalidRequestID"
    assert pending.done.is_set() and pending.outcome is not None
    assert (pending.outcome.kind, pending.outcome.body) == ("response", b'{"statusCode": 200}')


def test_response_for_an_unknown_request_id_is_rejected(api: RuntimeAPIServer) -> None:
    api.submit(invocation())
    request(api, "GET", NEXT)

    status, _, body = request(api, "POST", "/2018-06-01/runtime/invocation/not-this-one/response", b"{}")

    assert status == 400 and json.loads(body) == {"errorMessage": "Invalid request ID",
                                                   "errorType": "InvalidRequestID"}


def test_chunked_response_body_is_read_whole(api: RuntimeAPIServer) -> None:
    pending = api.submit(invocation())
    request(api, "GET", NEXT)
    host, port = api.address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)

    connection.request("POST", f"/2018-06-01/runtime/invocation/{pending.request_id}/response",
                       body=iter([b'{"part": ', b'"one"', b"}"]), encode_chunked=True)
    status = connection.getresponse().status
    connection.close()

    assert status == 202 and pending.outcome is not None and pending.outcome.body == b'{"part": "one"}'


def test_error_keeps_the_runtime_error_type(api: RuntimeAPIServer) -> None:
    pending = api.submit(invocation())
    request(api, "GET", NEXT)
    error = {"errorMessage": "boom", "errorType": "ValueError", "requestId": pending.request_id, "stackTrace": []}

    status, _, _ = request(api, "POST", f"/2018-06-01/runtime/invocation/{pending.request_id}/error",
                           json.dumps(error).encode(), {"Lambda-Runtime-Function-Error-Type": "ValueError"})

    assert status == 202 and pending.outcome is not None
    assert (pending.outcome.kind, pending.outcome.error_type) == ("error", "ValueError")
    assert json.loads(pending.outcome.body) == error


def test_init_error_ends_the_waiting_invocation(api: RuntimeAPIServer) -> None:
    pending = api.submit(invocation())
    error = {"errorMessage": "Unable to import module 'handler'", "errorType": "Runtime.ImportModuleError"}

    status, _, _ = request(api, "POST", "/2018-06-01/runtime/init/error", json.dumps(error).encode(),
                           {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"})

    assert status == 202
    assert api.init_error is not None and api.init_error.error_type == "Runtime.ImportModuleError"
    assert pending.done.is_set() and pending.outcome == api.init_error


def test_oversized_response_becomes_lambdas_size_error(api: RuntimeAPIServer) -> None:
    pending = api.submit(invocation())
    request(api, "GET", NEXT)

    status, _, body = request(api, "POST", f"/2018-06-01/runtime/invocation/{pending.request_id}/response",
                              b"x" * 6_291_557)

    assert status == 413 and json.loads(body)["errorType"] == "RequestEntityTooLarge"
    assert pending.outcome is not None and pending.outcome.error_type == "Function.ResponseSizeTooLarge"


def test_unknown_endpoint_is_404(api: RuntimeAPIServer) -> None:
    assert request(api, "GET", "/2018-06-01/runtime/invocation/whatever")[0] == 404
    assert request(api, "POST", "/2018-06-01/runtime/nothing", b"{}")[0] == 404
