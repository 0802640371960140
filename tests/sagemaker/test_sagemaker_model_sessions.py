"""Model sessions: a conversation's turns reach the instance that holds its prefix cache.

Two real container processes play an endpoint's two instances behind the loopback router, which sends a call that
names no session to the next instance in turn and a call naming a session to the instance that opened it.
"""

from __future__ import annotations

import itertools
import uuid
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from clawdbot.inference.model_session import NEW_SESSION, parse_session
from clawdbot.inference.sagemaker import SageMakerBackend, SageMakerConfig
from clawdbot.inference.types import ChatMessage, GenerationParams
from tests.sagemaker.conftest import ENDPOINT, start_container, stop_container
from tests.sagemaker.router import SageMakerRouter, model_error

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.sagemaker.conftest import Container

#: The prefix cache reuses whole blocks of ids (``clawdbot.inference.onnx.prefix_cache.BLOCK``).
BLOCK = 16


@pytest.fixture(scope="module")
def second_container(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    started = start_container(model_dir, tmp_path_factory.mktemp("second-container") / "serve.log")
    yield started
    stop_container(started)


@pytest.fixture
def endpoint(container: Container, second_container: Container,
             aws_env: SageMakerRouter) -> Iterator[SageMakerRouter]:
    """A two-instance endpoint (``aws_env`` provides boto3's dummy credentials)."""
    with SageMakerRouter([container.url, second_container.url]) as router:
        yield router


def backend_for(router: SageMakerRouter, bundle_dir: Path, **config: Any) -> SageMakerBackend:
    client = boto3.client("sagemaker-runtime", endpoint_url=router.url)
    return SageMakerBackend(ENDPOINT, bundle_dir, config=SageMakerConfig(max_attempts=1, **config), client=client)


def converse(backend: SageMakerBackend, turns: int, *, stream: bool = False) -> list[tuple[int, int, str | None]]:
    """A conversation of ``turns`` turns, each carrying the model session the last one returned; per turn:
    (prompt tokens, cached tokens, model session)."""
    topic = uuid.uuid4().hex[:8]  # no other test's turns share this conversation's prefix
    messages = [ChatMessage("system", f"You are a helpful assistant for project {topic}.")]
    session: str | None = NEW_SESSION
    seen = []
    for turn in range(turns):
        messages.append(ChatMessage("user", f"Tell me about part {turn} of project {topic}, please."))
        params = GenerationParams(max_tokens=8, temperature=0.0, model_session=session)
        if stream:
            deltas = list(backend.stream(messages, params))
            last = deltas[-1]
            text = "".join(d.text for d in deltas)
            prompt, cached, session = last.prompt_tokens, last.cached_tokens, last.model_session
        else:
            done = backend.generate(messages, params)
            text, prompt, cached, session = done.text, done.prompt_tokens, done.cached_tokens, done.model_session
        messages.append(ChatMessage("assistant", text))
        seen.append((prompt, cached, session))
    return seen


def test_a_conversations_turns_stay_on_one_instance_and_reuse_its_cache(endpoint: SageMakerRouter,
                                                                        bundle_dir: Path) -> None:
    backend = backend_for(endpoint, bundle_dir)
    turns = converse(backend, 4)
    # THEN the first turn opened a session, and every turn after it named it and ran where the first did
    sessions = {session for _, _, session in turns}
    assert len(sessions) == 1 and parse_session(sessions.pop()) is not None
    first = endpoint.requests[0]
    assert first.headers["x-amzn-sagemaker-session-id"] == NEW_SESSION
    assert len(endpoint.requests) == 4 and {r.instance for r in endpoint.requests} == {first.instance}
    # ... so each prompt after the first was mostly taken from the cache: all of the last prompt, at least
    for (previous_prompt, _, _), (_, cached, _) in itertools.pairwise(turns):
        assert cached >= previous_prompt - BLOCK, turns


def test_without_model_sessions_the_turns_move_between_instances(endpoint: SageMakerRouter,
                                                                  bundle_dir: Path) -> None:
    backend = backend_for(endpoint, bundle_dir, model_sessions=False)
    turns = converse(backend, 2)
    assert [r.instance for r in endpoint.requests] in ([0, 1], [1, 0])
    assert all("x-amzn-sagemaker-session-id" not in r.headers for r in endpoint.requests)
    assert turns[1][2] is None
    # THEN the second turn found only what the instance had of other conversations, not its own first turn
    assert turns[1][1] < turns[0][0] - BLOCK, turns


def test_a_streamed_turn_opens_its_session_first(endpoint: SageMakerRouter, bundle_dir: Path) -> None:
    backend = backend_for(endpoint, bundle_dir)
    turns = converse(backend, 2, stream=True)
    opening, first, second = endpoint.requests
    # THEN the session was opened by a call that generates nothing (a streamed call cannot open one) ...
    assert opening.operation == "invocations" and opening.body == {"open_session": True}
    assert opening.headers["x-amzn-sagemaker-session-id"] == NEW_SESSION
    # ... and both streamed turns ran in it, on the instance that opened it, the second reusing the first's cache
    session = turns[0][2]
    assert session is not None and turns[1][2] == session
    assert first.operation == second.operation == "invocations-response-stream"
    assert first.headers["x-amzn-sagemaker-session-id"] == parse_session(session).session_id  # type: ignore[union-attr]
    assert first.instance == second.instance == opening.instance
    assert turns[1][1] >= turns[0][0] - BLOCK, turns


def test_a_stateless_turn_names_no_session(endpoint: SageMakerRouter, bundle_dir: Path) -> None:
    backend = backend_for(endpoint, bundle_dir)
    messages = [ChatMessage("user", "Hi!")]
    done = backend.generate(messages, GenerationParams(max_tokens=2))
    last = list(backend.stream(messages, GenerationParams(max_tokens=2)))[-1]
    assert done.model_session is None and last.model_session is None
    assert [r.operation for r in endpoint.requests] == ["invocations", "invocations-response-stream"]
    assert all("x-amzn-sagemaker-session-id" not in r.headers for r in endpoint.requests)


@pytest.mark.parametrize("stream", [False, True])
def test_a_session_the_endpoint_no_longer_routes_is_replaced(endpoint: SageMakerRouter, bundle_dir: Path,
                                                             stream: bool) -> None:
    backend = backend_for(endpoint, bundle_dir)
    opened = backend.generate([ChatMessage("user", "Hi!")], GenerationParams(max_tokens=2, model_session=NEW_SESSION))
    old = parse_session(opened.model_session)
    assert old is not None
    endpoint.sessions.clear()  # GIVEN the endpoint forgot it (an instance replaced, say)
    endpoint.requests.clear()
    params = GenerationParams(max_tokens=2, model_session=opened.model_session)
    messages = [ChatMessage("user", "Hi!"), ChatMessage("assistant", opened.text), ChatMessage("user", "More?")]
    session = (list(backend.stream(messages, params))[-1].model_session if stream
               else backend.generate(messages, params).model_session)
    # THEN the rejected call was made once more, in a new session, which the turn returns
    new = parse_session(session)
    assert new is not None and new.session_id != old.session_id
    sent = [r.headers.get("x-amzn-sagemaker-session-id") for r in endpoint.requests]
    if stream:
        assert sent == [old.session_id, NEW_SESSION, new.session_id]
    else:
        assert sent == [old.session_id, NEW_SESSION]


def test_a_container_that_cannot_open_sessions_serves_streams_unrouted(endpoint: SageMakerRouter,
                                                                      bundle_dir: Path) -> None:
    backend = backend_for(endpoint, bundle_dir)
    # GIVEN a container from before model sessions, which answers the open call as a bad chat request
    endpoint.fail_next(model_error(400, '{"error": {"message": "messages must be a non-empty array."}}'))
    params = GenerationParams(max_tokens=2, model_session=NEW_SESSION)
    for _ in range(2):
        last = list(backend.stream([ChatMessage("user", "Hi!")], params))[-1]
        assert last.finish_reason is not None and last.model_session is None
    # THEN the turns streamed without a session, and only the first paid for the failed open call
    assert [r.operation for r in endpoint.requests] == ["invocations", "invocations-response-stream",
                                                        "invocations-response-stream"]


def test_a_streamed_turn_whose_session_cannot_be_opened_runs_unrouted(endpoint: SageMakerRouter,
                                                                       bundle_dir: Path) -> None:
    backend = backend_for(endpoint, bundle_dir)
    endpoint.fail_next(model_error(500, "the instance is unwell"))  # GIVEN the open call fails on the server side
    params = GenerationParams(max_tokens=2, model_session=NEW_SESSION)
    last = list(backend.stream([ChatMessage("user", "Hi!")], params))[-1]
    # THEN the turn still streamed, in no session; the next turn tries to open one again
    assert last.finish_reason is not None and last.model_session is None
    last = list(backend.stream([ChatMessage("user", "Hi!")], params))[-1]
    assert parse_session(last.model_session) is not None
    assert [r.operation for r in endpoint.requests] == ["invocations", "invocations-response-stream",
                                                        "invocations", "invocations-response-stream"]
