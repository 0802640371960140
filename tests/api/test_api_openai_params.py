"""OpenAI's sampling adjustments (``presence_penalty``, ``frequency_penalty``, ``logit_bias``) reach the model, log
probabilities come back as OpenAI reports them, and what the model cannot do (tools, JSON output, audio) is
refused, never silently ignored: the unmodified ``openai`` SDK against the real server."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import openai
import pytest

from clawdbot.inference.types import ChatMessage, GenerationParams

if TYPE_CHECKING:
    import httpx

    from clawdbot.inference.onnx import OnnxBackend
    from tests.api.conftest import LiveServer

MESSAGES = [{"role": "user", "content": "What do you like to do on weekends?"}]
#: Its greedy answer repeats itself ("a lot of the time" twice): what the penalties are for.
REPEATING = [{"role": "user", "content": "Hi there"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.v1, api_key="unused-while-open", max_retries=0)


@pytest.fixture(scope="module")
def backend(model_dir) -> OnnxBackend:  # the engine the server runs, in this process: what the model must answer
    from clawdbot.inference.onnx import OnnxBackend

    return OnnxBackend.from_folder(model_dir)


def text_of(client: openai.OpenAI, model_id: str, stream: bool, messages: list[dict[str, str]] = MESSAGES,
            **params: Any) -> str:
    if not stream:
        reply = client.chat.completions.create(model=model_id, messages=messages, **params)
        return reply.choices[0].message.content or ""
    chunks = client.chat.completions.create(model=model_id, messages=messages, stream=True, **params)
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def expected(backend: OnnxBackend, messages: list[dict[str, str]] = MESSAGES, **params: Any) -> str:
    return backend.generate([ChatMessage(m["role"], m["content"]) for m in messages], GenerationParams(**params)).text


@pytest.mark.parametrize("stream", [False, True])
def test_penalties_and_biases_reach_the_sampler(client: openai.OpenAI, model_id: str, backend: OnnxBackend,
                                                stream: bool) -> None:
    plain = text_of(client, model_id, stream, REPEATING, max_tokens=24, temperature=0)
    assert plain == expected(backend, REPEATING, max_tokens=24, temperature=0)
    # GIVEN each adjustment in turn, on a greedy turn whose plain answer repeats tokens
    (yes,) = backend.tokenizer.encode(" yes").ids
    first = backend.tokenizer.encode(plain).ids[0]
    cases = [
        ({"frequency_penalty": 1.5}, {"frequency_penalty": 1.5}),
        ({"presence_penalty": 2.0}, {"presence_penalty": 2.0}),
        ({"logit_bias": {str(yes): 100}}, {"logit_bias": ((yes, 100.0),)}),  # forced
        ({"logit_bias": {str(first): -100}}, {"logit_bias": ((first, -100.0),)}),  # banned
    ]
    for wire, engine in cases:
        got = text_of(client, model_id, stream, REPEATING, max_tokens=24, temperature=0, **wire)
        # THEN the server answers what the engine answers with the same adjustment, which is not the plain answer
        assert got == expected(backend, REPEATING, max_tokens=24, temperature=0, **engine), wire
        assert got != plain, wire
    forced = text_of(client, model_id, stream, max_tokens=5, temperature=1.0, seed=7, logit_bias={str(yes): 100})
    assert forced == backend.tokenizer.decode([yes] * 5)


@pytest.mark.parametrize(("params", "param", "code"), [
    ({"tools": TOOLS}, "tools", "unsupported_parameter"),
    ({"tools": TOOLS, "tool_choice": "required"}, "tool_choice", "unsupported_value"),
    ({"response_format": {"type": "json_object"}}, "response_format", "unsupported_value"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}},
     "response_format", "unsupported_value"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "modalities",
     "unsupported_value"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_what_the_model_cannot_do_is_a_400(client: openai.OpenAI, model_id: str, params: dict[str, Any],
                                           param: str, code: str, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        text_of(client, model_id, stream, max_tokens=4, **params)
    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert error["message"].startswith(f"Unsupported {'parameter' if code == 'unsupported_parameter' else 'value'}")


def test_what_asks_for_nothing_unsupported_is_served(client: openai.OpenAI, model_id: str) -> None:
    reply = client.chat.completions.create(
        model=model_id, messages=MESSAGES, max_tokens=4, temperature=0, tools=TOOLS, tool_choice="none",
        response_format={"type": "text"}, modalities=["text"])
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content == text_of(client, model_id, False, max_tokens=4, temperature=0)


@pytest.mark.parametrize(("params", "param", "words"), [
    ({"logit_bias": {"99999999": 5}}, "logit_bias", "not in the model's vocabulary"),
    ({"logit_bias": {"ten": 5}}, "logit_bias", "token ids"),
    ({"logit_bias": {"10": 101}}, "logit_bias.10", "less than or equal to 100"),
    ({"frequency_penalty": -2.5}, "frequency_penalty", "greater than or equal to -2"),
    ({"top_logprobs": 2}, "top_logprobs", "requires logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "less than or equal to 20"),
    # a union's errors name the member the value is: a list of five is too long, not "not a string"
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 items"),
    ({"stop": 5}, "stop", "a valid string or a valid array"),
])
def test_bad_adjustments_and_stops_say_what_is_wrong(client: openai.OpenAI, model_id: str, params: dict[str, Any],
                                                     param: str, words: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=4, **params)
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == param
    assert words in error["message"]


def test_an_image_part_is_refused_at_its_type(client: openai.OpenAI, model_id: str) -> None:
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "https://x"}}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": content}])
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "messages.0.content.1.type"
    assert error["message"].startswith("Invalid value for 'messages.0.content.1.type': Input should be 'text'")


@pytest.mark.parametrize("stream", [False, True])
def test_log_probabilities_are_the_models_for_each_reply_token(client: openai.OpenAI, model_id: str,
                                                               backend: OnnxBackend, stream: bool) -> None:
    params: dict[str, Any] = {"max_tokens": 16, "temperature": 0.8, "seed": 5, "logprobs": True, "top_logprobs": 3}
    if not stream:
        reply = client.chat.completions.create(model=model_id, messages=MESSAGES, **params)
        text = reply.choices[0].message.content or ""
        assert reply.choices[0].logprobs is not None
        tokens = reply.choices[0].logprobs.content or []
        count = reply.usage.completion_tokens if reply.usage else 0
    else:
        chunks = list(client.chat.completions.create(model=model_id, messages=MESSAGES, stream=True,
                                                     stream_options={"include_usage": True}, **params))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []]
        count = chunks[-1].usage.completion_tokens if chunks[-1].usage else 0
    # THEN one entry per reply token (the end-of-sequence token has none), whose bytes make the text
    local = backend.generate([ChatMessage("user", MESSAGES[0]["content"])],
                             GenerationParams(max_tokens=16, temperature=0.8, seed=5, logprobs=3))
    assert text == local.text and local.logprobs is not None
    assert len(tokens) == len(local.logprobs) in (count, count - 1)
    assert b"".join(bytes(t.bytes or ()) for t in tokens).decode() == text
    for got, want in zip(tokens, local.logprobs, strict=True):
        assert (got.token, got.logprob) == (want.token, pytest.approx(want.logprob))
        assert [top.token for top in got.top_logprobs] == [top.token for top in want.top_logprobs]
        assert len(got.top_logprobs) == 3 and got.logprob <= 0
        values = [top.logprob for top in got.top_logprobs]
        assert values == sorted(values, reverse=True) and got.logprob <= values[0]
    plain = client.chat.completions.create(model=model_id, messages=MESSAGES, **{**params, "logprobs": None,
                                                                                   "top_logprobs": None})
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == text  # same sampling


@pytest.mark.parametrize("stream", [False, True])
def test_a_replayed_answer_has_its_log_probabilities(http: httpx.Client, model_id: str, stream: bool) -> None:
    body = {"model": model_id, "messages": MESSAGES, "max_tokens": 8, "temperature": 1.0, "logprobs": True,
            "top_logprobs": 1, "stream": stream}
    headers = {"idempotency-key": str(uuid.uuid4())}

    def tokens() -> tuple[list[tuple[str, float]], str | None]:
        response = http.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text
        if not stream:
            content = response.json()["choices"][0]["logprobs"]["content"]
        else:
            chunks = [json.loads(line[6:]) for line in response.text.splitlines()
                      if line.startswith("data: {")]
            content = [t for c in chunks if c["choices"] and c["choices"][0]["logprobs"]
                       for t in c["choices"][0]["logprobs"]["content"]]
        return [(t["token"], t["logprob"]) for t in content], response.headers.get("idempotent-replayed")

    first, replayed_first = tokens()
    again, replayed_again = tokens()  # sampled at temperature 1: a second run would differ
    assert first and again == first
    assert (replayed_first, replayed_again) == (None, "true")


def test_n_choices_are_samples_of_one_prompt(client: openai.OpenAI, model_id: str, backend: OnnxBackend) -> None:
    reply = client.chat.completions.create(model=model_id, messages=MESSAGES, n=3, max_tokens=10, temperature=1.0,
                                           seed=21, logprobs=True)
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    # THEN choice i is the engine's sample with seed 21 + i: reproducible, and not three copies of one answer
    local = [backend.generate([ChatMessage("user", MESSAGES[0]["content"])],
                              GenerationParams(max_tokens=10, temperature=1.0, seed=21 + index, logprobs=0))
             for index in range(3)]
    assert [choice.message.content for choice in reply.choices] == [c.text for c in local]
    assert len({c.text for c in local}) > 1
    assert [len(choice.logprobs.content or []) for choice in reply.choices if choice.logprobs] == \
        [len(c.logprobs or ()) for c in local]
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == local[0].prompt_tokens  # the prompt counted once, as OpenAI counts it
    assert reply.usage.completion_tokens == sum(c.completion_tokens for c in local)


@pytest.mark.parametrize("extra", [{"stream": True}, {"user": "someone"}, {"extra_headers": {"x-session-id": "s1"}}])
def test_n_choices_need_a_stateless_unstreamed_request(client: openai.OpenAI, model_id: str,
                                                       extra: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model_id, messages=MESSAGES, n=2, max_tokens=4, **extra)
    error = caught.value.body
    assert isinstance(error, dict) and (error["param"], error["code"]) == ("n", "unsupported_value")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("stop", [" of the", "time", "lot of"])
def test_log_probabilities_end_with_the_text_a_stop_string_cuts(client: openai.OpenAI, model_id: str,
                                                                stream: bool, stop: str) -> None:
    # GIVEN a greedy reply ("I'm a lot of the time ...") cut by a stop string
    params: dict[str, Any] = {"max_tokens": 24, "temperature": 0, "stop": [stop], "logprobs": True}
    if stream:
        chunks = list(client.chat.completions.create(model=model_id, messages=REPEATING, stream=True, **params))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []]
    else:
        reply = client.chat.completions.create(model=model_id, messages=REPEATING, **params)
        text = reply.choices[0].message.content or ""
        assert reply.choices[0].logprobs is not None
        tokens = reply.choices[0].logprobs.content or []
    assert stop not in text and tokens
    # THEN the tokens reported are those that begin inside the reply: none lies wholly in the stop string
    joined = b"".join(bytes(t.bytes or ()) for t in tokens)
    last_start = len(joined) - len(bytes(tokens[-1].bytes or ()))
    assert joined.startswith(text.encode()) and last_start < len(text.encode())
