"""The Lambda side of SageMaker hosting: an :class:`InferenceBackend` that calls a SageMaker endpoint.

Generation happens in the endpoint's container (:mod:`clawdbot.inference.container`), which speaks OpenAI's chat
shape; the Lambda sends the whole context each time (the container is stateless) with ``invoke_endpoint``, or
``invoke_endpoint_with_response_stream`` when streaming, and reads the OpenAI answer or server-sent events back.

Model sessions (:mod:`clawdbot.inference.model_session`): a turn names the SageMaker stateful session its
conversation's last turn ran in (``GenerationParams.model_session``), so it runs on the instance that holds that
turn's KV cache; a turn without a usable one opens a session (``SessionId="NEW_SESSION"``; for a streamed turn
with a separate open call first, since ``InvokeEndpointWithResponseStream`` cannot open one) and returns it for the
next turn. A session SageMaker rejects (how it words an expired or unknown session is not documented: a
``ValidationError`` on a call that named one is taken as that) is dropped and the call made once more in a new one.

What the session layer needs before it calls the model - the prompt's token count and the context length - is
computed here, from a *tokenizer bundle* shipped with the function (``tokenizer.json``, ``tokenizer_config.json``,
``config.json``, ``generation_config.json``; no weights), so trimming history costs no round trip.

Timeouts and retries: ``invoke_endpoint`` returns nothing until the whole completion is generated, so the read
timeout must outlast a generation. SageMaker itself stops waiting for a container after 60 s and answers a
``ModelError`` (never retried); a read timeout just above that therefore only fires when the network, not the
model, is stuck - the case worth retrying. When streaming, the read timeout is the longest silence between two
events. Errors are mapped to the API's (see :func:`map_client_error`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from clawdbot.aws_clients import LazyClient
from clawdbot.exceptions import ClawdbotError, InvalidRequestError, ServiceUnavailableError
from clawdbot.inference.base import InferenceBackend
from clawdbot.inference.exceptions import (
    ContextLengthExceededError,
    UpstreamError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
)
from clawdbot.inference.model_session import NEW_SESSION, OPEN_SESSION_BODY, ModelSession, parse_session
from clawdbot.inference.openai_wire import (
    SSEDecoder,
    chat_request_body,
    error_from_body,
    parse_chunk,
    parse_completion_body,
)
from clawdbot.inference.types import Completion, StreamDelta

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from clawdbot.config.settings import Settings
    from clawdbot.inference.tokenizer_bundle import TokenizerBundle
    from clawdbot.inference.types import ChatMessage, FinishReason, GenerationParams

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Error codes SageMaker (and botocore's retry logic) use for "slow down".
_THROTTLING_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException",
    "RequestThrottledException", "ModelNotReadyException",
})
_UNAVAILABLE_CODES = frozenset({"ServiceUnavailable", "ServiceUnavailableException"})


class SageMakerConfig(BaseSettings):
    """Behaviour settings of :class:`SageMakerBackend`, read from ``CLAWDBOT_SAGEMAKER_*``.

    The endpoint name itself is ``CLAWDBOT_SAGEMAKER_ENDPOINT`` in the app's :class:`Settings`.
    """

    model_config = SettingsConfigDict(env_prefix="CLAWDBOT_SAGEMAKER_", extra="ignore", frozen=True)

    #: Production variant to call (A/B tests); ``None`` lets the endpoint's weights choose.
    target_variant: str | None = None
    #: The model's inference component, when it is deployed as one (``InferenceComponentName``).
    inference_component: str | None = None
    #: Seconds to wait for the next bytes: a whole generation for ``invoke_endpoint``, the longest gap between
    #: two events when streaming. Above SageMaker's own 60 s limit (see the module docstring).
    read_timeout: float = Field(default=70.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    #: Total attempts per call, the first included (botocore's ``total_max_attempts``).
    max_attempts: int = Field(default=3, ge=1)
    #: ``standard``: exponential backoff with jitter; ``adaptive`` adds client-side rate limiting on throttling.
    retry_mode: Literal["standard", "adaptive"] = "standard"
    #: ``Retry-After`` (seconds) sent with a 429/503 when SageMaker gives none.
    retry_after_seconds: int = Field(default=2, ge=1)
    region_name: str | None = None
    #: Route a conversation's turns to one instance with SageMaker's stateful sessions (module docstring), where
    #: its prefix cache is; off: every call goes wherever the endpoint sends it.
    model_sessions: bool = True

    def botocore_config(self) -> Any:
        from botocore.config import Config

        return Config(
            read_timeout=self.read_timeout,
            connect_timeout=self.connect_timeout,
            retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
            tcp_keepalive=True,
            user_agent_extra="clawdbot",
        )


class SageMakerBackend(InferenceBackend):
    """Chat with a model served by a SageMaker endpoint running the clawdbot container.

    ``tokenizer_dir`` holds the tokenizer bundle; ``client`` may be injected (tests, custom sessions),
    otherwise a ``sagemaker-runtime`` client is created on first use and cached.
    """

    def __init__(
        self,
        endpoint_name: str,
        tokenizer_dir: str | Path | TokenizerBundle,
        *,
        model_id: str | None = None,
        config: SageMakerConfig | None = None,
        client: Any = None,
    ) -> None:
        from clawdbot.inference.tokenizer_bundle import TokenizerBundle

        self.endpoint_name = endpoint_name
        self.config = config or SageMakerConfig()
        self.tokenizer = (tokenizer_dir if isinstance(tokenizer_dir, TokenizerBundle)
                          else TokenizerBundle(tokenizer_dir))
        self._model_id = model_id or self.tokenizer.model_id
        #: Set when the container refused to open a model session (see :meth:`open_session`).
        self._sessions_refused = False
        # Made on first use: a cold start that never calls the model pays nothing for it.
        self._client = LazyClient("sagemaker-runtime", self.config.botocore_config, self.config.region_name, client)

    def for_variant(self, target_variant: str | None) -> SageMakerBackend:
        """The same endpoint, tokenizer and client, pinned to one production variant (an A/B arm).

        Sharing the tokenizer and the (thread-safe) client means an extra arm costs neither a second bundle load
        nor a second connection pool.
        """
        clone = SageMakerBackend(self.endpoint_name, self.tokenizer, model_id=self._model_id,
                                 config=self.config.model_copy(update={"target_variant": target_variant}))
        clone._client = self._client
        return clone

    @classmethod
    def from_settings(cls, settings: Settings) -> SageMakerBackend:
        if not settings.sagemaker_endpoint:
            raise ServiceUnavailableError(
                "CLAWDBOT_INFERENCE=sagemaker needs CLAWDBOT_SAGEMAKER_ENDPOINT (the endpoint name)."
            )
        return cls(settings.sagemaker_endpoint, settings.model_dir, model_id=settings.model_name)

    # ------------------------------------------------------------------------------------- contract
    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_length(self) -> int:
        return self.tokenizer.context_length

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self.tokenizer.count_prompt_tokens(messages)

    def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        body = json.dumps(chat_request_body(messages, params, model=self.model_id, stream=False)).encode()
        session = self._usable_session(params)

        def invoke(session_id: str | None) -> tuple[dict[str, Any], bytes]:
            response = self.client.invoke_endpoint(
                EndpointName=self.endpoint_name, Body=body, ContentType="application/json",
                Accept="application/json", **self._variant(), **_session_arg(session_id),
            )
            return response, response["Body"].read()

        opening = NEW_SESSION if self._wants_session(params) else None
        try:  # a rejected session: once more, asking for a new one with the turn itself
            (response, payload), session = _in_session(invoke, session, lambda: (None, opening), opening)
        except Exception as exc:
            raise map_error(exc, self.config.retry_after_seconds) from exc
        logger.debug("invoke_endpoint %s answered by variant %s", self.endpoint_name,
                     response.get("InvokedProductionVariant"))
        try:
            completion = parse_completion_body(json.loads(payload))
        except ValueError as exc:
            raise UpstreamError("The model endpoint answered something that is not JSON.") from exc
        opened = parse_session(response.get("NewSessionId"))
        current = opened or session
        return completion if current is None else dataclasses.replace(completion, model_session=current.header())

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Iterator[StreamDelta]:
        """Call the endpoint now (errors before the stream starts - a prompt too long, throttling - raise here,
        as the in-process engine's do) and return the deltas as they arrive."""
        body = json.dumps(chat_request_body(messages, params, model=self.model_id, stream=True)).encode()
        session = self._usable_session(params)

        def invoke(session_id: str | None) -> dict[str, Any]:
            return self.client.invoke_endpoint_with_response_stream(  # type: ignore[no-any-return]
                EndpointName=self.endpoint_name, Body=body, ContentType="application/json",
                Accept="text/event-stream", **self._variant(), **_session_arg(session_id),
            )

        def reopen() -> tuple[ModelSession | None, str | None]:
            opened = self.open_session()
            return opened, opened.session_id if opened else None

        try:
            if session is None and self._wants_session(params):
                session = self.open_session()
            # a rejected session: once more, in a new one opened first (a streamed call cannot open one)
            response, session = _in_session(invoke, session, reopen)
        except Exception as exc:
            raise map_error(exc, self.config.retry_after_seconds) from exc
        return self._read_stream(response["Body"], session)

    def open_session(self) -> ModelSession | None:
        """A new model session, opened by a call that generates nothing (a streamed call cannot open one);
        ``None`` with sessions off, when the call fails (the turn then runs unrouted: a session only saves work,
        and the turn's own call reports what is wrong), and from the time a container refused to open one (an
        image from before model sessions) on, so its turns do not pay a failing call each."""
        if not self.config.model_sessions or self._sessions_refused:
            return None
        try:
            response = self.client.invoke_endpoint(
                EndpointName=self.endpoint_name, Body=json.dumps(OPEN_SESSION_BODY).encode(),
                ContentType="application/json", Accept="application/json", **self._variant(),
                SessionId=NEW_SESSION,
            )
            response["Body"].read()
        except Exception as exc:
            if _refused_by_container(exc):
                logger.warning("the model container does not open model sessions; turns run unrouted")
                self._sessions_refused = True
            else:
                logger.info("opening a model session failed (%s); this turn runs unrouted", type(exc).__name__)
            return None
        return parse_session(response.get("NewSessionId"))

    def _read_stream(self, events: Any, session: ModelSession | None = None) -> Iterator[StreamDelta]:
        try:
            for delta in self._deltas(events):
                if delta.finish_reason is not None and session is not None:
                    delta = dataclasses.replace(delta, model_session=session.header())
                yield delta
        except ClawdbotError:
            raise
        except Exception as exc:
            raise map_error(exc, self.config.retry_after_seconds) from exc
        finally:
            events.close()  # an abandoned stream must not keep the connection (and the container) busy

    def prime(self) -> None:
        self._client.get()

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------------------------- helpers
    @property
    def client(self) -> Any:
        """The ``sagemaker-runtime`` client (created on first use, shared with :meth:`for_variant` clones)."""
        return self._client.get()

    def _wants_session(self, params: GenerationParams) -> bool:
        """Whether this turn runs in a model session: sessions are on and the turn has a conversation to follow."""
        return self.config.model_sessions and params.model_session is not None

    def _usable_session(self, params: GenerationParams) -> ModelSession | None:
        """The conversation's model session, if it runs in one and that one is still routed long enough."""
        if not self._wants_session(params):
            return None
        session = parse_session(params.model_session)
        return session if session is not None and session.usable() else None

    def _variant(self) -> dict[str, str]:
        """Routing parameters: the A/B production variant and/or the inference component."""
        routing: dict[str, str] = {}
        if self.config.target_variant:
            routing["TargetVariant"] = self.config.target_variant
        if self.config.inference_component:
            routing["InferenceComponentName"] = self.config.inference_component
        return routing

    @staticmethod
    def _deltas(events: Any) -> Iterator[StreamDelta]:
        """Turn ``PayloadPart`` events into contract deltas; the last one carries finish reason and usage.

        OpenAI sends the finish reason and the usage in two chunks (usage last, with no choices), so the final
        delta is held back until ``[DONE]``.
        """
        decoder = SSEDecoder()
        finish: FinishReason | None = None
        prompt_tokens = completion_tokens = cached_tokens = 0

        def payloads() -> Iterator[str]:
            for event in events:
                part = event.get("PayloadPart")
                if part is not None:
                    yield from decoder.feed(part.get("Bytes", b""))
            yield from decoder.close()

        for payload in payloads():
            chunk = parse_chunk(payload)
            if chunk is None:  # [DONE]
                if finish is None:
                    raise UpstreamError("The model endpoint ended its stream without a finish reason.")
                yield StreamDelta(text="", finish_reason=finish, prompt_tokens=prompt_tokens,
                                  completion_tokens=completion_tokens, cached_tokens=cached_tokens)
                return
            if chunk.text or chunk.logprobs:
                yield StreamDelta(text=chunk.text, logprobs=chunk.logprobs)
            if chunk.finish_reason is not None:
                finish = chunk.finish_reason
            if chunk.prompt_tokens is not None:
                prompt_tokens, completion_tokens = chunk.prompt_tokens, chunk.completion_tokens or 0
                cached_tokens = chunk.cached_tokens
        raise UpstreamError("The model endpoint's stream broke off before [DONE].")


def _session_arg(session_id: str | None) -> dict[str, str]:
    return {"SessionId": session_id} if session_id else {}


def _in_session(invoke: Callable[[str | None], T], session: ModelSession | None,
                reopen: Callable[[], tuple[ModelSession | None, str | None]],
                without: str | None = None) -> tuple[T, ModelSession | None]:
    """``invoke`` in ``session`` (its id; ``without`` when there is none), and the session the answer belongs
    to. Where SageMaker rejects the session it was given (expired, or its instance gone), the call is made once
    more with what ``reopen`` gives: the session the retry runs in (if known yet) and the id to send."""
    try:
        return invoke(session.session_id if session else without), session
    except Exception as exc:
        if session is None or not _session_rejected(exc):
            raise
        logger.info("model session %s rejected; opening a new one", session.session_id)
    session, session_id = reopen()
    return invoke(session_id), session


def _session_rejected(exc: BaseException) -> bool:
    """Whether SageMaker refused a call for the session it named (a ``ValidationError``, not one about the
    endpoint): the call is worth making again in a new session."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    return error.get("Code") == "ValidationError" and "endpoint" not in str(error.get("Message", "")).lower()


def _refused_by_container(exc: BaseException) -> bool:
    """Whether an open-session call failed because the container answered it with a 4xx (it does not know the
    call), rather than for a reason every call would share (throttling, a missing endpoint)."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError) or exc.response.get("Error", {}).get("Code") != "ModelError":
        return False
    status = exc.response.get("OriginalStatusCode")
    return isinstance(status, int) and 400 <= status < 500


# --------------------------------------------------------------------------------------------- errors
def map_error(exc: BaseException, retry_after_seconds: int = 2) -> ClawdbotError:
    """Map what boto3/botocore/urllib3 raised to the API's error (see ``docs/sagemaker.md`` for the table)."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )
    from urllib3.exceptions import ProtocolError
    from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

    if isinstance(exc, ClawdbotError):
        return exc
    if isinstance(exc, ClientError):
        return map_client_error(exc, retry_after_seconds)
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError | Urllib3ReadTimeout):
        return UpstreamTimeoutError("The model endpoint did not answer in time.")
    if isinstance(exc, EndpointConnectionError | ProtocolError):
        return UpstreamError("Could not reach the model endpoint.")
    logger.debug("unexpected error calling SageMaker", exc_info=exc)
    return UpstreamError(f"Calling the model endpoint failed ({type(exc).__name__}).")


def map_client_error(exc: Any, retry_after_seconds: int = 2) -> ClawdbotError:
    """Map a botocore ``ClientError`` (or mid-stream ``EventStreamError``) from SageMaker Runtime.

    - ``ModelError``: the container answered non-2xx. Its OpenAI error body is kept when it is the client's
      fault (4xx: context too long, bad parameter); SageMaker's own invocation timeout (original status 0,
      "timed out") is a 504; anything else the container reports is a 502.
    - throttling (``ThrottlingException``, ``ModelNotReadyException``...): 429 with ``Retry-After``.
    - ``ValidationError``: 400, except an endpoint that does not exist (our configuration, not the client's
      request): 502.
    - ``ServiceUnavailable``: 503 with ``Retry-After``; mid-stream ``ModelStreamError``: 504 when the model ran
      out of time, else 502; everything else (``InternalFailure``...): 502.
    """
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    logger.debug("SageMaker error %s (HTTP %s): %s", code, status, message)
    if code == "ModelError":
        return _map_model_error(exc.response, message)
    if code in _THROTTLING_CODES or status == 429:
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        retry_after = headers.get("retry-after") or str(retry_after_seconds)
        return UpstreamThrottledError("The model endpoint is busy; retry shortly.",
                                      headers={"Retry-After": retry_after})
    if code == "ValidationError":
        if "not found" in message.lower():
            return UpstreamError("The configured model endpoint does not exist.", code="endpoint_not_found")
        return InvalidRequestError(f"The model endpoint rejected the request: {message}",
                                   code="upstream_validation_error")
    if code in _UNAVAILABLE_CODES or status == 503:
        return ServiceUnavailableError("The model endpoint is unavailable; retry shortly.",
                                       headers={"Retry-After": str(retry_after_seconds)})
    if code == "ModelStreamError":
        if _timed_out(message):
            return UpstreamTimeoutError("The model ran out of time while streaming.")
        return UpstreamError("The model's stream broke off.")
    return UpstreamError(f"The model endpoint failed ({code or status}).")


def _map_model_error(response: dict[str, Any], message: str) -> ClawdbotError:
    original_status = response.get("OriginalStatusCode")
    original = response.get("OriginalMessage") or ""
    if original_status in (None, 0) and _timed_out(message + original):
        return UpstreamTimeoutError("The model did not answer within the endpoint's time limit.")
    try:
        body = json.loads(original)
    except ValueError:
        body = None
    if isinstance(original_status, int) and original_status >= 400 and isinstance(body, dict) and "error" in body:
        mapped = error_from_body(original_status, body)
        if isinstance(mapped, InvalidRequestError | ContextLengthExceededError):
            return mapped
    return UpstreamError(f"The model failed (container status {original_status}).")


#: How SageMaker words "the model ran out of time" (``ModelStreamError``'s error code is not kept by botocore's
#: event-stream parser, only its message).
_TIMEOUT_WORDS = ("timed out", "timeout", "time exceeded", "timeexceeded")


def _timed_out(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in _TIMEOUT_WORDS)


__all__ = ["SageMakerBackend", "SageMakerConfig", "map_client_error", "map_error"]
