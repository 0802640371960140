"""``SageMakerBackend`` end to end: boto3 -> HTTP -> router -> container -> ONNX Runtime, and every error back."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from clawdbot.exceptions import ClawdbotError, InvalidRequestError, ServiceUnavailableError
from clawdbot.inference.exceptions import (
    ContextLengthExceededError,
    UpstreamError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
)
from clawdbot.inference.types import ChatMessage, GenerationParams, StreamDelta
from tests.sagemaker.conftest import ENDPOINT, make_backend
from tests.sagemaker.router import (
    Fault,
    model_error,
    model_timeout,
    throttling,
    validation_error,
)

if TYPE_CHECKING:
    from pathlib import Path

    from clawdbot.inference.sagemaker import SageMakerBackend
    from tests.sagemaker.router import SageMakerRouter

MESSAGES = [ChatMessage("system", "You are clawdbot."), ChatMessage("user", "Hi! Tell me about cafés 🙂")]
GREEDY = GenerationParams(max_tokens=16, temperature=0)


def collect(backend: SageMakerBackend, messages: list[ChatMessage] = MESSAGES,
            params: GenerationParams = GREEDY) -> list[StreamDelta]:
    return list(backend.stream(messages, params))


def test_full_chat_turn_through_invoke_endpoint(backend: SageMakerBackend, router: SageMakerRouter) -> None:
    completion = backend.generate(MESSAGES, GREEDY)
    assert completion.finish_reason in ("stop", "length") and 1 <= completion.completion_tokens <= 16
    # The contract: the prompt count the session layer plans with is the one the model reports.
    assert completion.prompt_tokens == backend.count_prompt_tokens(MESSAGES)
    (request,) = router.requests
    assert (request.endpoint, request.operation) == (ENDPOINT, "invocations")
    # The container is stateless: the Lambda sends the whole context, in OpenAI's shape.
    assert request.body["messages"] == [{"role": m.role, "content": m.content} for m in MESSAGES]
    assert request.body["stream"] is False and request.body["model"] == backend.model_id


def test_streamed_turn_through_invoke_endpoint_with_response_stream(
        backend: SageMakerBackend, router: SageMakerRouter) -> None:
    whole = backend.generate(MESSAGES, GREEDY)
    # GIVEN a front end that cuts the container's bytes into 1-byte PayloadParts (inside JSON, inside UTF-8)
    router.part_size = 1
    deltas = collect(backend)
    # THEN the deltas rebuild the same answer, only the last one finishes, and it carries the counts
    assert "".join(d.text for d in deltas) == whole.text
    assert [d.finish_reason for d in deltas[:-1]] == [None] * (len(deltas) - 1)
    last = deltas[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == \
        (whole.finish_reason, whole.prompt_tokens, whole.completion_tokens)
    assert router.requests[-1].operation == "invocations-response-stream"
    assert router.requests[-1].body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True])
def test_penalties_and_biases_reach_the_container(backend: SageMakerBackend, router: SageMakerRouter,
                                                  model_dir: Path, stream: bool) -> None:
    from clawdbot.inference.onnx import OnnxBackend

    local = OnnxBackend.from_folder(model_dir)
    (yes,) = local.tokenizer.encode(" yes").ids
    params = GenerationParams(max_tokens=16, temperature=0, frequency_penalty=1.5, presence_penalty=0.5,
                              logit_bias=((yes, 5.0),))
    text = "".join(d.text for d in collect(backend, params=params)) if stream else backend.generate(
        MESSAGES, params).text
    # THEN the container's model answers as the same model in this process with the same adjustments
    assert text == local.generate(MESSAGES, params).text
    assert text != local.generate(MESSAGES, GREEDY).text
    sent = router.requests[-1].body
    assert (sent["frequency_penalty"], sent["presence_penalty"], sent["logit_bias"]) == (1.5, 0.5, {str(yes): 5.0})


@pytest.mark.parametrize("stream", [False, True])
def test_a_bias_outside_the_vocabulary_is_the_clients_error(backend: SageMakerBackend, stream: bool) -> None:
    # The Lambda does not know the model's vocabulary: the container refuses, and its 400 reaches the client as one.
    params = GenerationParams(max_tokens=4, logit_bias=((10**9, 1.0),))
    with pytest.raises(InvalidRequestError) as caught:
        if stream:
            collect(backend, params=params)
        else:
            backend.generate(MESSAGES, params)
    assert caught.value.param == "logit_bias" and "vocabulary" in caught.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_log_probabilities_come_back_from_the_container(backend: SageMakerBackend, router: SageMakerRouter,
                                                        model_dir: Path, stream: bool) -> None:
    from clawdbot.inference.onnx import OnnxBackend

    params = GenerationParams(max_tokens=12, temperature=0.7, seed=2, logprobs=2)
    if stream:
        deltas = collect(backend, params=params)
        logprobs = tuple(entry for d in deltas for entry in d.logprobs or ())
    else:
        logprobs = backend.generate(MESSAGES, params).logprobs or ()
    # THEN the Lambda side has what the same model reports in this process, token for token
    local = OnnxBackend.from_folder(model_dir).generate(MESSAGES, params)
    assert local.logprobs and [(e.token, e.bytes) for e in logprobs] == [(e.token, e.bytes) for e in local.logprobs]
    assert [e.logprob for e in logprobs] == pytest.approx([e.logprob for e in local.logprobs])
    assert router.requests[-1].body["logprobs"] is True and router.requests[-1].body["top_logprobs"] == 2


def test_target_variant_reaches_the_endpoint(router: SageMakerRouter, bundle_dir: Path) -> None:
    backend = make_backend(bundle_dir, max_attempts=1, target_variant="challenger")
    arm = backend.for_variant("champion")
    try:
        backend.generate(MESSAGES, GenerationParams(max_tokens=2))
        collect(arm, params=GenerationParams(max_tokens=2))
        default = backend.for_variant(None)
        default.generate(MESSAGES, GenerationParams(max_tokens=2))
    finally:
        backend.close()
    variants = [r.headers.get("x-amzn-sagemaker-target-variant") for r in router.requests]
    assert variants == ["challenger", "champion", None]
    assert arm.client is backend.client or backend._client is arm._client  # one connection pool for all arms


def test_inference_component_reaches_the_endpoint(router: SageMakerRouter, bundle_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the variable the stack sets when the model is deployed as an inference component
    monkeypatch.setenv("CLAWDBOT_SAGEMAKER_INFERENCE_COMPONENT", "clawdbot-chat-model")
    backend = make_backend(bundle_dir, max_attempts=1)
    try:
        backend.generate(MESSAGES, GenerationParams(max_tokens=2))
        collect(backend, params=GenerationParams(max_tokens=2))
    finally:
        backend.close()
    assert [r.headers.get("x-amzn-sagemaker-inference-component") for r in router.requests] == \
        ["clawdbot-chat-model"] * 2


def test_concurrent_streams_each_get_their_own_answer(backend: SageMakerBackend) -> None:
    conversations = [[ChatMessage("user", f"Question number {i}?")] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda m: collect(backend, m, GenerationParams(max_tokens=8, temperature=0)),
                                conversations))
    for messages, deltas in zip(conversations, results, strict=True):
        assert deltas[-1].finish_reason is not None
        assert deltas[-1].prompt_tokens == backend.count_prompt_tokens(messages)
        assert deltas[-1].completion_tokens >= 1


# ------------------------------------------------------------------------------------------------- errors
ERRORS = [
    pytest.param(throttling(), UpstreamThrottledError, 429, "upstream_throttled", id="throttling"),
    pytest.param(Fault("error", "ModelNotReadyException", 429, "Model is loading"), UpstreamThrottledError, 429,
                 "upstream_throttled", id="model-not-ready"),
    pytest.param(validation_error("1 validation error detected: Value at 'body' failed"), InvalidRequestError, 400,
                 "upstream_validation_error", id="validation"),
    pytest.param(validation_error(f"Endpoint {ENDPOINT} of account 123456789012 not found."), UpstreamError, 502,
                 "endpoint_not_found", id="endpoint-not-found"),
    pytest.param(model_error(500, '{"error": {"message": "boom", "type": "server_error"}}'), UpstreamError, 502,
                 "upstream_error", id="model-error-500"),
    pytest.param(model_timeout(), UpstreamTimeoutError, 504, "upstream_timeout", id="model-timeout"),
    pytest.param(Fault("error", "ServiceUnavailable", 503, "Service unavailable"), ServiceUnavailableError, 503,
                 "service_unavailable", id="service-unavailable"),
    pytest.param(Fault("error", "InternalFailure", 500, "Internal failure"), UpstreamError, 502, "upstream_error",
                 id="internal-failure"),
]


@pytest.mark.parametrize("streaming", [False, True], ids=["invoke", "stream"])
@pytest.mark.parametrize(("fault", "error", "status", "code"), ERRORS)
def test_sagemaker_errors_map_to_api_errors(backend: SageMakerBackend, router: SageMakerRouter, fault: Fault,
                                            error: type[ClawdbotError], status: int, code: str,
                                            streaming: bool) -> None:
    router.fail_next(fault)
    with pytest.raises(error) as caught:
        if streaming:
            collect(backend)
        else:
            backend.generate(MESSAGES, GREEDY)
    assert (caught.value.status_code, caught.value.code) == (status, code)
    if status in (429, 503):
        assert caught.value.headers["Retry-After"] == "2"
    assert "123456789012" not in caught.value.message  # SageMaker's account/log details stay in our logs
    assert len(router.requests) == 1  # max_attempts=1: no retry hid the fault


def test_retry_after_from_sagemaker_is_passed_on(backend: SageMakerBackend, router: SageMakerRouter) -> None:
    router.fail_next(throttling(headers={"Retry-After": "7"}))
    with pytest.raises(UpstreamThrottledError) as caught:
        backend.generate(MESSAGES, GREEDY)
    assert caught.value.headers == {"Retry-After": "7"}


@pytest.mark.parametrize("streaming", [False, True], ids=["invoke", "stream"])
def test_prompt_too_long_is_the_containers_400(backend: SageMakerBackend, router: SageMakerRouter,
                                               streaming: bool) -> None:
    # GIVEN a prompt the container refuses (SageMaker wraps its 400 in a ModelError)
    too_long = [ChatMessage("user", "hello " * 5000)]
    with pytest.raises(ContextLengthExceededError) as caught:
        if streaming:
            backend.stream(too_long, GenerationParams(max_tokens=4))  # raised by the call, as the engine does
        else:
            backend.generate(too_long, GenerationParams(max_tokens=4))
    # THEN the client gets the container's own 400 and message
    assert caught.value.status_code == 400 and "maximum context length" in caught.value.message


def test_throttling_is_retried_by_botocore(router: SageMakerRouter, bundle_dir: Path) -> None:
    backend = make_backend(bundle_dir, max_attempts=2)
    router.fail_next(throttling())
    try:
        completion = backend.generate(MESSAGES, GenerationParams(max_tokens=2))
    finally:
        backend.close()
    assert completion.completion_tokens >= 1
    assert len(router.requests) == 2


def test_model_errors_are_not_retried(router: SageMakerRouter, bundle_dir: Path) -> None:
    backend = make_backend(bundle_dir, max_attempts=3)
    router.fail_next(model_error(500, "boom"))
    try:
        with pytest.raises(UpstreamError):
            backend.generate(MESSAGES, GREEDY)
    finally:
        backend.close()
    assert len(router.requests) == 1  # a failing model is not hammered three times


@pytest.mark.parametrize("streaming", [False, True], ids=["invoke", "stream"])
def test_read_timeout_is_504(router: SageMakerRouter, bundle_dir: Path, streaming: bool) -> None:
    backend = make_backend(bundle_dir, max_attempts=1, read_timeout=0.5)
    router.fail_next(Fault("delay", seconds=1.5))
    try:
        with pytest.raises(UpstreamTimeoutError):
            if streaming:
                collect(backend)
            else:
                backend.generate(MESSAGES, GREEDY)
    finally:
        backend.close()


def test_stream_going_silent_midway_is_504(router: SageMakerRouter, bundle_dir: Path) -> None:
    backend = make_backend(bundle_dir, max_attempts=1, read_timeout=0.5)
    router.fail_next(Fault("stall", seconds=1.5, after_parts=2))
    received: list[StreamDelta] = []
    try:
        with pytest.raises(UpstreamTimeoutError):
            for delta in backend.stream(MESSAGES, GREEDY):
                received.append(delta)
    finally:
        backend.close()
    assert received and all(d.finish_reason is None for d in received)  # text arrived, then the silence


@pytest.mark.parametrize(("code", "message", "error", "status"), [
    ("ModelStreamError", "Model invocation time exceeded (ModelInvocationTimeExceeded)", UpstreamTimeoutError, 504),
    ("ModelStreamError", "The stream was broken (StreamBroken)", UpstreamError, 502),
    ("InternalStreamFailure", "Internal stream failure", UpstreamError, 502),
])
def test_stream_errors_midway_map_to_api_errors(backend: SageMakerBackend, router: SageMakerRouter, code: str,
                                                message: str, error: type[ClawdbotError], status: int) -> None:
    router.fail_next(Fault("stream_error", code, message=message, after_parts=2))
    received: list[StreamDelta] = []
    with pytest.raises(error) as caught:
        for delta in backend.stream(MESSAGES, GREEDY):
            received.append(delta)
    assert caught.value.status_code == status
    assert received and received[-1].finish_reason is None


def test_a_stream_ending_without_done_is_an_upstream_error(backend: SageMakerBackend,
                                                           router: SageMakerRouter) -> None:
    # GIVEN a front end that ends the event stream cleanly but early (no exception event, no [DONE])
    router.fail_next(Fault("truncate", after_parts=2))
    with pytest.raises(UpstreamError, match="broke off"):
        collect(backend)


def test_bundle_counts_agree_with_the_engine(model_dir: Path, bundle_dir: Path) -> None:
    from clawdbot.inference.onnx import OnnxBackend
    from clawdbot.inference.tokenizer_bundle import TokenizerBundle

    engine, bundle = OnnxBackend(model_dir), TokenizerBundle(bundle_dir)
    try:
        assert (bundle.model_id, bundle.context_length) == (engine.model_id, engine.context_length)
        for conversation in (MESSAGES, [ChatMessage("user", "日本語 Grüße 🎉")],
                             [ChatMessage("user", "a"), ChatMessage("assistant", "b"), ChatMessage("user", "c")]):
            assert bundle.encode_prompt(conversation) == engine.encode_prompt(conversation)
    finally:
        engine.close()
    assert json.loads((bundle_dir / "config.json").read_text()) == json.loads((model_dir / "config.json").read_text())
    assert not list(bundle_dir.glob("*.onnx*"))  # no weights in the Lambda's bundle


def test_lambda_side_needs_neither_onnxruntime_nor_numpy(bundle_dir: Path) -> None:
    # GIVEN a fresh interpreter (the Lambda's cold start); WHEN the backend is built and counts a prompt
    code = (
        "import sys\n"
        "from clawdbot.inference.sagemaker import SageMakerBackend\n"
        "from clawdbot.inference.types import ChatMessage\n"
        f"backend = SageMakerBackend('ep', {str(bundle_dir)!r})\n"
        "assert backend.count_prompt_tokens([ChatMessage('user', 'hi')]) > 0\n"
        "print(sorted(m for m in ('numpy', 'onnxruntime', 'boto3', 'botocore') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # THEN the Lambda layer's missing heavy packages are never needed, and boto3 waits for the first call
    assert result.stdout.strip() == "[]"
