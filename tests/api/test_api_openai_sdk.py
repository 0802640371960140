"""The unmodified ``openai`` SDK against the real server: the compatibility promise of the product."""

from __future__ import annotations

from typing import TYPE_CHECKING

import openai
import pytest

from clawdbot.inference.types import ChatMessage

if TYPE_CHECKING:
    import httpx

    from tests.api.conftest import LiveServer


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.v1, api_key="unused-while-open", max_retries=0)


@pytest.fixture(scope="module")
def backend(model_dir):  # the same engine the server runs, to compute what the model must have received
    from clawdbot.inference.onnx import OnnxBackend

    return OnnxBackend.from_folder(model_dir)


def test_models_list_names_the_served_model(client: openai.OpenAI, model_id: str) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [model_id]
    assert models.data[0].owned_by == "clawdbot"


def test_non_streaming_completion_has_real_usage_and_finish_reason(client: openai.OpenAI, model_id: str,
                                                                    backend) -> None:
    messages = [{"role": "user", "content": "Hello! How are you today?"}]
    response = client.chat.completions.create(model=model_id, messages=messages, max_tokens=5, temperature=0)
    choice = response.choices[0]
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    # usage comes from the tokenizer: the prompt is exactly what the chat template renders
    assert response.usage.prompt_tokens == backend.count_prompt_tokens([ChatMessage("user", messages[0]["content"])])
    assert 1 <= response.usage.completion_tokens <= 5
    if choice.finish_reason == "length":
        assert response.usage.completion_tokens == 5
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_streaming_matches_non_streaming_greedy_text(client: openai.OpenAI, model_id: str) -> None:
    messages = [{"role": "user", "content": "What do you like to do on weekends?"}]
    whole = client.chat.completions.create(model=model_id, messages=messages, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(model=model_id, messages=messages, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    pieces, finish, usage, roles = [], None, None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    assert roles == ["assistant"]
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def _streamed_text(stream: openai.Stream) -> tuple[list[str], str | None]:
    pieces, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return [p for p in pieces if p], finish


def test_a_long_streamed_turn_stores_the_text_it_streamed(client: openai.OpenAI, http: httpx.Client,
                                                          model_id: str) -> None:
    # GIVEN a session, and a sampled turn long enough to go out in several writes (its text is made from the
    # token ids on the event loop's thread, the stored text from all of them at once on the decoding thread)
    session_id = http.post("/v1/sessions", json={}).json()["id"]
    question = [{"role": "user", "content": "Tell me a long story about a lighthouse."}]
    sampling = {"max_tokens": 120, "temperature": 1.0, "seed": 11}
    # WHEN it is streamed
    pieces, finish = _streamed_text(client.chat.completions.create(
        model=model_id, messages=question, stream=True, extra_headers={"x-session-id": session_id}, **sampling))
    # THEN it came in several content chunks, and the transcript holds exactly the streamed text
    assert len(pieces) > 1 and finish in ("stop", "length")
    stored = http.get(f"/v1/sessions/{session_id}").json()["messages"]["data"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["content"] == "".join(pieces)
    # AND it is the text the same request gets whole
    whole = client.chat.completions.create(model=model_id, messages=question, **sampling)
    assert whole.choices[0].message.content == "".join(pieces)


def test_a_streamed_turn_with_a_stop_string_ends_where_the_whole_one_does(client: openai.OpenAI,
                                                                         model_id: str) -> None:
    messages = [{"role": "user", "content": "What do you like to do on weekends?"}]
    text = client.chat.completions.create(model=model_id, messages=messages, max_tokens=40,
                                          temperature=0).choices[0].message.content
    words = text.split()
    assert len(words) > 4, f"precondition: a reply of several words, got {text!r}"
    stop = words[3]
    # GIVEN a stop string from the middle of the greedy reply; WHEN it is asked for whole and streamed
    whole = client.chat.completions.create(model=model_id, messages=messages, max_tokens=40, temperature=0,
                                           stop=[stop])
    pieces, finish = _streamed_text(client.chat.completions.create(
        model=model_id, messages=messages, max_tokens=40, temperature=0, stop=[stop], stream=True))
    # THEN both end right before its first occurrence, with finish reason "stop"
    assert whole.choices[0].message.content == text[:text.index(stop)]
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason == "stop"


def test_two_turn_session_builds_context_from_stored_history(client: openai.OpenAI, http: httpx.Client,
                                                             model_id: str, backend) -> None:
    # GIVEN a session created by the API
    session_id = http.post("/v1/sessions", json={}).json()["id"]
    headers = {"x-session-id": session_id}
    first_q, second_q = "Hi there, my name is Sam.", "What did I just tell you?"

    # WHEN the client sends only the new message on each turn
    first = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": first_q}],
                                           max_tokens=8, temperature=0, extra_headers=headers)
    first_reply = first.choices[0].message.content
    second = client.chat.completions.with_raw_response.create(
        model=model_id, messages=[{"role": "user", "content": second_q}], max_tokens=8, temperature=0,
        extra_headers=headers)
    assert second.headers["x-session-id"] == session_id
    second = second.parse()

    # THEN the model received the first turn as context: the prompt it was given is exactly
    # user(first) + assistant(first reply) + user(second), token for token
    expected = [ChatMessage("user", first_q), ChatMessage("assistant", first_reply), ChatMessage("user", second_q)]
    assert second.usage.prompt_tokens == backend.count_prompt_tokens(expected)
    assert second.usage.prompt_tokens > backend.count_prompt_tokens([ChatMessage("user", second_q)])
    # AND the engine computed only what the first turn had not: its prompt and reply came from the prefix
    # cache (all of them, but for a reply token or two that tokenizes differently as text), reported as OpenAI does
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens <= cached < second.usage.prompt_tokens

    # AND the transcript holds both turns, in order
    transcript = http.get(f"/v1/sessions/{session_id}").json()
    assert [(m["role"], m["content"]) for m in transcript["messages"]["data"]] == [
        ("user", first_q), ("assistant", first_reply), ("user", second_q),
        ("assistant", second.choices[0].message.content)]
    assert [m["seq"] for m in transcript["messages"]["data"]] == [0, 1, 2, 3]


def test_a_streamed_session_turn_reports_its_cached_prompt_tokens(client: openai.OpenAI, http: httpx.Client,
                                                                  model_id: str) -> None:
    # GIVEN a session with one turn
    headers = {"x-session-id": http.post("/v1/sessions", json={}).json()["id"]}
    first = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "Hello, Ada here!"}],
                                           max_tokens=6, temperature=0, extra_headers=headers)
    # WHEN the next turn streams, with usage
    stream = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Remember me?"}], max_tokens=6, temperature=0,
        stream=True, stream_options={"include_usage": True}, extra_headers=headers)
    usage = [chunk.usage for chunk in stream if chunk.usage is not None]
    # THEN its usage says the prompt's start (the first turn) was not computed again
    assert len(usage) == 1
    assert first.usage.prompt_tokens <= usage[0].prompt_tokens_details.cached_tokens < usage[0].prompt_tokens


def test_user_field_continues_a_conversation(client: openai.OpenAI, model_id: str, backend) -> None:
    q1, q2 = "Good morning!", "Tell me more."
    r1 = client.chat.completions.with_raw_response.create(
        model=model_id, messages=[{"role": "user", "content": q1}], max_tokens=6, temperature=0, user="alice")
    session_id = r1.headers["x-session-id"]
    reply = r1.parse().choices[0].message.content
    r2 = client.chat.completions.with_raw_response.create(
        model=model_id, messages=[{"role": "user", "content": q2}], max_tokens=6, temperature=0, user="alice")
    assert r2.headers["x-session-id"] == session_id
    expected = [ChatMessage("user", q1), ChatMessage("assistant", reply), ChatMessage("user", q2)]
    assert r2.parse().usage.prompt_tokens == backend.count_prompt_tokens(expected)


def test_stateless_request_stores_nothing(client: openai.OpenAI, model_id: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model_id, messages=[{"role": "user", "content": "Hello"}], max_tokens=3)
    assert "x-session-id" not in raw.headers
    assert raw.headers["x-request-id"]


def test_sdk_surfaces_errors_as_typed_exceptions(client: openai.OpenAI, model_id: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-session-id": "sess_does_not_exist"})
    assert missing.value.body["code"] == "session_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "hi"}], max_tokens=-1)
    assert bad.value.body["param"] == "max_tokens"
    with pytest.raises(openai.NotFoundError) as unknown_model:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert unknown_model.value.body["code"] == "model_not_found"
