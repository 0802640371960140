"""The chat_api Lambda (``functions/chat_api/handler.py``) on the sample API Gateway events.

In-process: ``handler(event, context)`` exactly as Lambda calls it, with the shipped model and a SQLite store in a
temporary folder. Out-of-process: ``clawdbot invoke`` runs the same folder through AWS's runtime interface client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from clawdbot.testing import LambdaContext, load_event
from tests.lambda_local.conftest import run_clawdbot

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

    from fastapi import FastAPI
    from starlette.requests import Request

REPO_ROOT = Path(__file__).resolve().parents[2]
SESSION_ID = load_event("session-read")["rawPath"].rsplit("/", 1)[1]


def call(chat_api: ModuleType, event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Invoke the handler; return the status, the parsed JSON body and the whole payload 2.0 response."""
    response = chat_api.handler(event, LambdaContext(function_name="chat_api"))
    assert response["isBase64Encoded"] is False
    assert response["headers"]["content-type"].startswith("application/json")
    return response["statusCode"], json.loads(response["body"]), response


def assert_openai_error(body: dict[str, Any], error_type: str, code: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["type"], body["error"]["code"]) == (error_type, code)
    assert body["error"]["message"]


@pytest.mark.parametrize(("name", "status"), [
    ("chat-completion", 200),
    ("chat-completion-base64", 200),
    ("session-read", 404),  # the sample session does not exist in a fresh store
    ("bad-request", 400),
])
def test_each_sample_event_gets_its_status(chat_api: ModuleType, name: str, status: int) -> None:
    assert call(chat_api, load_event(name))[0] == status


def test_chat_completion_returns_openais_shape(chat_api: ModuleType) -> None:
    event = load_event("chat-completion")
    max_tokens = json.loads(event["body"])["max_tokens"]

    status, body, response = call(chat_api, event)

    assert status == 200
    assert body["object"] == "chat.completion" and body["id"]
    assert body["model"] == chat_api.app.state.resources.backend.model_id
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] in ("stop", "length")
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    usage = body["usage"]
    assert 0 < usage["completion_tokens"] <= max_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert response["headers"]["x-request-id"]


def test_base64_body_with_cookies_is_decoded_like_the_plain_one(chat_api: ModuleType) -> None:
    # GIVEN the same request twice: as JSON text, and base64-encoded with cookies (as API Gateway may deliver it)
    _, plain, _ = call(chat_api, load_event("chat-completion"))

    status, encoded, _ = call(chat_api, load_event("chat-completion-base64"))

    # THEN both reach the model as the same prompt
    assert status == 200 and encoded["object"] == "chat.completion"
    assert encoded["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]


@pytest.fixture
def cookie_probe(chat_api: ModuleType) -> Iterator[FastAPI]:
    """A route added to the handler's own app that shows what a request carried and sets a cookie in return.

    The app reads no cookies today; the probe proves that the handler turns API Gateway's ``cookies`` field into
    a ``Cookie`` header, passes the Lambda context on, and returns ``Set-Cookie`` in the response's ``cookies``.
    """
    from starlette.responses import JSONResponse

    app: FastAPI = chat_api.app

    async def probe(request: Request) -> JSONResponse:
        response = JSONResponse({
            "cookie": request.headers.get("cookie"), "cookies": dict(request.cookies),
            "aws_request_id": request.scope["aws.context"].aws_request_id, "body": (await request.body()).decode(),
        })
        response.set_cookie("probe", "seen", httponly=True)
        return response

    app.router.add_route("/_lambda_local_probe", probe, methods=["POST"])  # a plain Starlette endpoint
    route = app.router.routes[-1]
    try:
        yield app
    finally:
        app.router.routes.remove(route)


def test_cookies_and_base64_body_reach_the_app_and_set_cookie_comes_back(
        chat_api: ModuleType, cookie_probe: FastAPI) -> None:
    event = load_event("chat-completion-base64", path="/_lambda_local_probe")
    context = LambdaContext(function_name="chat_api")

    response = chat_api.handler(event, context)

    assert response["statusCode"] == 200
    seen = json.loads(response["body"])
    assert seen["cookie"] == "; ".join(event["cookies"])
    assert seen["cookies"] == {"clawdbot_client": "docs-example", "theme": "dark"}
    assert seen["body"] == json.dumps(json.loads(load_event("chat-completion")["body"]), separators=(",", ":"))
    assert seen["aws_request_id"] == context.aws_request_id
    assert [c.split(";")[0] for c in response["cookies"]] == ["probe=seen"]
    assert "set-cookie" not in response["headers"]  # payload 2.0 returns cookies in their own field


def test_malformed_json_is_an_openai_400(chat_api: ModuleType) -> None:
    status, body, _ = call(chat_api, load_event("bad-request"))

    assert status == 400
    assert_openai_error(body, "invalid_request_error", "invalid_json")


def test_session_read_finds_a_session_created_through_the_handler(chat_api: ModuleType) -> None:
    missing_status, missing, _ = call(chat_api, load_event("session-read"))
    assert missing_status == 404
    assert_openai_error(missing, "invalid_request_error", "session_not_found")

    create = load_event("session-read", method="POST", path="/v1/sessions",
                        body={"id": SESSION_ID, "metadata": {"source": "lambda-local-test"}},
                        headers={"content-type": "application/json"})
    created_status, created, _ = call(chat_api, create)
    status, body, _ = call(chat_api, load_event("session-read"))

    assert (created_status, created["id"]) == (201, SESSION_ID)
    assert status == 200
    assert (body["id"], body["object"], body["metadata"]) == (SESSION_ID, "session", {"source": "lambda-local-test"})
    assert body["messages"] == {"object": "list", "data": [], "has_more": False, "next_after": None}

    # Deleting it again leaves the store as the sample event expects it (no such session).
    deleted_status, deleted, _ = call(chat_api, load_event("session-read", method="DELETE"))
    assert (deleted_status, deleted["deleted"]) == (200, True)
    assert call(chat_api, load_event("session-read"))[0] == 404


def test_unknown_route_is_an_openai_404(chat_api: ModuleType) -> None:
    status, body, _ = call(chat_api, load_event("session-read", path="/v1/nothing-here"))

    assert status == 404
    assert_openai_error(body, "invalid_request_error", "unknown_url")


# ---------------------------------------------------------------------------- out of process, as on Lambda
def embedded_env(data_dir: Path) -> list[str]:
    """``--env`` options for the embedded parts (whatever ``CLAWDBOT_*`` the calling shell has set)."""
    return ["--env", f"CLAWDBOT_DATA_DIR={data_dir}", "--env", "CLAWDBOT_SESSION_STORE=sqlite",
            "--env", "CLAWDBOT_INFERENCE=local"]


def test_clawdbot_invoke_runs_chat_api_through_the_runtime_client(tmp_path: Path) -> None:
    done = run_clawdbot("invoke", "functions/chat_api", "events/chat-completion.json",
                        *embedded_env(tmp_path), "--timeout", "60", cwd=REPO_ROOT, timeout=180)

    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)
    assert response["statusCode"] == 200 and response["isBase64Encoded"] is False
    body = json.loads(response["body"])
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert "REPORT RequestId:" in done.stderr and "Init Duration:" in done.stderr


def test_clawdbot_invoke_chat_api_bad_request_is_a_400_response_not_a_function_error(tmp_path: Path) -> None:
    done = run_clawdbot("invoke", "functions/chat_api", "events/bad-request.json", "--quiet",
                        *embedded_env(tmp_path), "--timeout", "60", cwd=REPO_ROOT, timeout=180)

    assert done.returncode == 0, done.stderr  # the function succeeded: it answered 400
    response = json.loads(done.stdout)
    assert response["statusCode"] == 400
    assert_openai_error(json.loads(response["body"]), "invalid_request_error", "invalid_json")
