"""The pages through the chat_api Lambda handler (API Gateway payload 2.0 → Mangum), as deployed on AWS."""

from __future__ import annotations

import hashlib
import json
import sys
from typing import TYPE_CHECKING, Any

import pytest

from clawdbot.testing import LambdaContext, load_event
from tests.fixtures.event_loops import close_main_thread_loop

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

KEY = "cb-web-lambda-test-key-0123456789abcdefghijklmnop"


@pytest.fixture(scope="module")
def chat_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """``functions/chat_api/handler.py`` imported as Lambda does, with the environment the stack gives it."""
    import importlib

    from clawdbot.config.settings import get_settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_LAMBDA_FUNCTION_NAME", "clawdbot-chat-api")
        patch.setenv("CLAWDBOT_DATA_DIR", str(tmp_path_factory.mktemp("web-lambda")))
        patch.setenv("CLAWDBOT_SESSION_STORE", "sqlite")
        patch.setenv("CLAWDBOT_INFERENCE", "local")
        patch.setenv("CLAWDBOT_BOOTSTRAP_KEY_SHA256", hashlib.sha256(KEY.encode()).hexdigest())
        get_settings.cache_clear()
        sys.modules.pop("functions.chat_api.handler", None)
        try:
            yield importlib.import_module("functions.chat_api.handler")
        finally:
            sys.modules.pop("functions.chat_api.handler", None)
            close_main_thread_loop()
            get_settings.cache_clear()


def get(chat_api: ModuleType, path: str, key: str | None = None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    event = load_event("session-read", path=path, method="GET", headers=headers)
    return chat_api.handler(event, LambdaContext(function_name="clawdbot-chat-api"))


@pytest.mark.parametrize(("path", "content_type", "starts"), [
    ("/", "text/html", "<!doctype html>"),
    ("/ops", "text/html", "<!doctype html>"),
    ("/web/js/chat.js", "javascript", "// The chat page"),
    ("/web/app.css", "text/css", "/* clawdbot pages"),
])
def test_pages_and_assets_need_no_key_and_come_back_as_text(chat_api: ModuleType, path: str, content_type: str,
                                                             starts: str) -> None:
    response = get(chat_api, path)
    assert response["statusCode"] == 200
    assert content_type in response["headers"]["content-type"]
    assert response["isBase64Encoded"] is False  # text through API Gateway, not base64 the browser cannot read
    assert response["body"].startswith(starts)
    if content_type == "text/html":
        assert "default-src 'self'" in response["headers"]["content-security-policy"]


def test_data_still_needs_the_key_and_ops_says_where_metrics_went(chat_api: ModuleType) -> None:
    assert get(chat_api, "/v1/ops/summary")["statusCode"] == 401
    assert get(chat_api, "/v1/sessions")["statusCode"] == 401

    response = get(chat_api, "/v1/ops/summary", KEY)
    assert response["statusCode"] == 200
    summary = json.loads(response["body"])
    assert summary["metrics"] is None  # EMF to CloudWatch on Lambda: no registry in the function
    assert "CloudWatch" in summary["metrics_unavailable"]
    assert summary["latency_guard"]["streaks"] == {"default": 0}
    assert json.loads(get(chat_api, "/v1/sessions", KEY)["body"]) == {"object": "list", "data": []}
