"""The OpenAI wire codec both ends of the SageMaker path share, and the router's event-stream framing."""

from __future__ import annotations

import itertools
import json

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from clawdbot.exceptions import InvalidRequestError
from clawdbot.inference.exceptions import ContextLengthExceededError, UpstreamError, UpstreamThrottledError
from clawdbot.inference.logprobs import TokenLogprob, TopLogprob
from clawdbot.inference.openai_wire import (
    SSE_DONE,
    SSEDecoder,
    chat_request_body,
    chunk_body,
    completion_body,
    error_body,
    error_from_body,
    parse_chat_request,
    parse_chunk,
    parse_completion_body,
    sse_event,
    usage_body,
)
from clawdbot.inference.types import ChatMessage, Completion, GenerationParams
from tests.sagemaker.router import encode_event_message, payload_part, stream_exception

IDS = {"completion_id": "chatcmpl-1", "model": "m", "created": 1}


def test_request_body_round_trips_through_the_parser() -> None:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Grüß dich 👋")]
    params = GenerationParams(max_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop=("\n\n", "END"),
                              presence_penalty=0.5, frequency_penalty=-1.0, logit_bias=((2, -100.0), (17, 3.5)),
                              logprobs=3)
    request = parse_chat_request(json.loads(json.dumps(chat_request_body(messages, params, model="m",
                                                                         stream=True))))
    assert request.messages == tuple(messages)
    assert request.params == params
    assert request.stream and request.include_usage and request.model == "m"


def test_parser_accepts_openai_variants() -> None:
    request = parse_chat_request({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "max_completion_tokens": 5, "stop": "x", "n": 1, "logit_bias": {}, "user": "u",
    })
    assert request.messages == (ChatMessage("user", "ab"),)
    assert request.params.max_tokens == 5 and request.params.stop == ("x",)
    assert not request.stream


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": [{"content": "no role"}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "top_p": "1"}, "top_p"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ({"messages": [{"role": "user", "content": "x"}], "seed": 1.5}, "seed"),
    ({"messages": [{"role": "user", "content": "x"}], "presence_penalty": -2.5}, "presence_penalty"),
    ({"messages": [{"role": "user", "content": "x"}], "frequency_penalty": "1"}, "frequency_penalty"),
    ({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"a": 1}}, "logit_bias"),
    ({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"-1": 1}}, "logit_bias"),
    ({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 100.5}}, "logit_bias"),
    ({"messages": [{"role": "user", "content": "x"}], "logit_bias": [1]}, "logit_bias"),
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": "yes"}, "logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),  # without logprobs
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
])
def test_parser_names_the_bad_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat_request(body)
    assert caught.value.param == param


TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(("extra", "param", "code"), [
    ({"response_format": {"type": "json_object"}}, "response_format", "unsupported_value"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format",
     "unsupported_value"),
    ({"tools": TOOLS}, "tools", "unsupported_parameter"),
    ({"tools": TOOLS, "tool_choice": "auto"}, "tool_choice", "unsupported_value"),
    ({"tools": TOOLS, "tool_choice": "required"}, "tool_choice", "unsupported_value"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "lookup"}}}, "tool_choice",
     "unsupported_value"),
    ({"functions": [{"name": "lookup"}]}, "functions", "unsupported_parameter"),
    ({"function_call": "auto"}, "function_call", "unsupported_value"),
    ({"modalities": ["text", "audio"]}, "modalities", "unsupported_value"),
    ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio", "unsupported_parameter"),
])
def test_what_the_model_cannot_do_is_refused_not_ignored(extra: dict[str, object], param: str, code: str) -> None:
    # Ignored, each would answer prose where the client asked for JSON, a tool call or log probabilities.
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat_request({"messages": [{"role": "user", "content": "x"}], **extra})
    assert (caught.value.param, caught.value.code) == (param, code)
    assert caught.value.message.startswith("Unsupported ")


def test_what_asks_for_nothing_the_model_cannot_do_is_accepted() -> None:
    request = parse_chat_request({
        "messages": [{"role": "user", "content": "x"}], "logprobs": False, "top_logprobs": None,
        "response_format": {"type": "text"}, "tools": TOOLS, "tool_choice": "none", "functions": [],
        "function_call": "none", "modalities": ["text"], "audio": None, "parallel_tool_calls": False,
    })
    assert request.messages == (ChatMessage("user", "x"),)


def test_bodies_match_openai_sdk_types() -> None:
    # GIVEN the bodies the container writes; THEN the openai SDK's own models accept them unchanged.
    completion = Completion(text="hi", finish_reason="length", prompt_tokens=4, completion_tokens=1)
    parsed = ChatCompletion.model_validate(completion_body(completion, **IDS))
    assert parsed.choices[0].message.content == "hi" and parsed.usage and parsed.usage.total_tokens == 5
    assert parse_completion_body(completion_body(completion, **IDS)) == completion
    for chunk in (chunk_body(delta={"role": "assistant", "content": ""}, include_usage=True, **IDS),
                  chunk_body(delta={}, finish_reason="stop", **IDS),
                  chunk_body(usage=usage_body(4, 1), **IDS)):
        ChatCompletionChunk.model_validate(chunk)


LOGPROBS = (TokenLogprob("caf", -0.25, (99, 97, 102), (TopLogprob("caf", -0.25, (99, 97, 102)),
                                                      TopLogprob(" tea", -2.5, (32, 116, 101, 97)))),
            TokenLogprob("\\xc3", -0.5, (195,), ()), TokenLogprob("\\xa9", -0.01, (169,), ()))


def test_log_probabilities_cross_the_wire_in_openai_shape() -> None:
    # GIVEN a completion whose tokens include the two halves of one UTF-8 character ("é" = c3 a9)
    completion = Completion(text="café", finish_reason="length", prompt_tokens=4, completion_tokens=3,
                            logprobs=LOGPROBS)
    body = completion_body(completion, **IDS)
    # THEN the openai SDK reads them, their bytes join to the text, and the Lambda's parser gets them back
    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].logprobs is not None and parsed.choices[0].logprobs.content is not None
    assert b"".join(bytes(t.bytes or ()) for t in parsed.choices[0].logprobs.content).decode() == "café"
    assert parsed.choices[0].logprobs.content[0].top_logprobs[1].token == " tea"
    assert parse_completion_body(body) == completion
    chunk = chunk_body(delta={"content": "café"}, logprobs=LOGPROBS, **IDS)
    ChatCompletionChunk.model_validate(chunk)
    assert parse_chunk(json.dumps(chunk)).logprobs == LOGPROBS
    assert parse_chunk(json.dumps(chunk_body(delta={"content": "x"}, **IDS))).logprobs is None


def test_chunks_decode_to_stream_pieces() -> None:
    assert parse_chunk(json.dumps(chunk_body(delta={"content": "é"}, **IDS))).text == "é"
    assert parse_chunk(json.dumps(chunk_body(delta={}, finish_reason="length", **IDS))).finish_reason == "length"
    usage = parse_chunk(json.dumps(chunk_body(usage=usage_body(3, 2), **IDS)))
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 2)
    assert parse_chunk("[DONE]") is None
    with pytest.raises(UpstreamError):
        parse_chunk('{"choices": [{"delta": {}, "finish_reason": "banana"}]}')
    with pytest.raises(ContextLengthExceededError):
        parse_chunk(json.dumps(error_body(ContextLengthExceededError("too long"))))


def test_errors_survive_the_wire() -> None:
    for exc in (ContextLengthExceededError("long", param="messages"), UpstreamThrottledError("slow")):
        back = error_from_body(exc.status_code, error_body(exc))
        assert (type(back), back.message, back.param) == (type(exc), exc.message, exc.param)
    assert error_from_body(400, error_body(InvalidRequestError("bad", param="top_p"))).status_code == 400
    assert error_from_body(500, {"detail": "boom"}).status_code == 502


STREAM = b"".join([
    sse_event(chunk_body(delta={"role": "assistant", "content": ""}, **IDS)),
    sse_event(chunk_body(delta={"content": "naïve 🐙 café"}, **IDS)),
    b"data: {\"multi\":\ndata: 1}\r\n\r\n",
    SSE_DONE,
])


@given(cuts=st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), unique=True, max_size=12))
def test_sse_decoder_reassembles_events_cut_anywhere(cuts: list[int]) -> None:
    # GIVEN the stream cut at arbitrary byte offsets (inside JSON, inside a 4-byte emoji, between \r and \n)
    bounds = [0, *sorted(cuts), len(STREAM)]
    decoder = SSEDecoder()
    payloads = [p for a, b in itertools.pairwise(bounds) for p in decoder.feed(STREAM[a:b])]
    payloads += list(decoder.close())
    # THEN the events come out whole and in order
    assert [json.loads(p)["choices"][0]["delta"].get("content") for p in payloads[:2]] == ["", "naïve 🐙 café"]
    assert payloads[2:] == ['{"multi":\n1}', "[DONE]"]


def test_event_stream_frames_decode_with_botocore() -> None:
    # GIVEN frames built by the router's encoder, fed to botocore's decoder a few bytes at a time
    frames = payload_part("data: é\n\n".encode()) + stream_exception("ModelStreamError", "boom", "StreamBroken")
    frames += encode_event_message({":message-type": "event", ":event-type": "PayloadPart"}, b"")
    buffer = EventStreamBuffer()
    messages = []
    for i in range(0, len(frames), 5):
        buffer.add_data(frames[i:i + 5])
        messages.extend(buffer)
    # THEN every header, payload and CRC checks out
    assert [m.headers[":message-type"] for m in messages] == ["event", "exception", "event"]
    assert messages[0].headers[":event-type"] == "PayloadPart" and messages[0].payload == "data: é\n\n".encode()
    assert json.loads(messages[1].payload) == {"Message": "boom", "ErrorCode": "StreamBroken"}
    assert messages[2].payload == b""
