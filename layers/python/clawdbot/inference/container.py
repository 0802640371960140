"""The SageMaker model container: SageMaker's hosting contract around any :class:`InferenceBackend`.

SageMaker starts the image as ``docker run IMAGE serve``, unpacks the model's ``model.tar.gz`` into
``/opt/ml/model`` and talks HTTP to port 8080 (or ``SAGEMAKER_BIND_TO_PORT``):

- ``GET /ping`` is the health check: 503 while the model loads, 200 once it can answer. The server binds at
  once and loads the model in a background thread, so SageMaker sees a live container that is not ready yet
  rather than a refused connection; a model that fails to load stops the process (exit status 1) so the
  endpoint fails fast with the reason in its CloudWatch log instead of waiting out the health-check timeout.
- ``POST /invocations`` takes an OpenAI chat completion request and answers an OpenAI chat completion; with
  ``"stream": true`` it answers OpenAI's server-sent events, which SageMaker relays, cut into ``PayloadPart``
  events, to ``InvokeEndpointWithResponseStream`` callers. The container is stateless: the caller sends the whole
  context (``messages``) each time; sessions are the chat API's job. A call that asks for a *model session*
  (``SessionId="NEW_SESSION"``, SageMaker's stateful-session routing) gets one in the
  ``X-Amzn-SageMaker-New-Session-Id`` header, a body of ``{"open_session": true}`` only that: the id is a routing
  key that brings a conversation's turns back to this instance's prefix cache, and nothing is kept per session
  (:mod:`clawdbot.inference.model_session`).
- ``GET /execution-parameters`` tells Batch Transform how many requests to send at once.

Generation runs on a pool of ``max_concurrency`` threads (the backend is thread-safe by contract); requests past
that wait their turn in the pool, so a burst queues instead of thrashing the CPU cores the engine already uses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from clawdbot.exceptions import ClawdbotError, InvalidRequestError, ServiceUnavailableError
from clawdbot.inference.cancellation import watching
from clawdbot.inference.exceptions import GenerationCancelledError, InferenceError
from clawdbot.inference.model_session import (
    DEFAULT_TTL_SECONDS,
    NEW_SESSION,
    NEW_SESSION_HEADER,
    SESSION_HEADER,
    new_session,
)
from clawdbot.inference.openai_wire import (
    SSE_DONE,
    chunk_body,
    completion_body,
    error_body,
    parse_chat_request,
    sse_event,
    usage_body,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from starlette.requests import Request

    from clawdbot.inference.base import InferenceBackend
    from clawdbot.inference.openai_wire import ChatRequest
    from clawdbot.inference.types import StreamDelta

logger = logging.getLogger(__name__)

#: Where SageMaker unpacks ``model.tar.gz``.
SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")
DEFAULT_PORT = 8080
#: Longer than any load balancer idle timeout in front of the container, so the server is never the side that
#: closes a kept-alive connection a request is about to use.
KEEP_ALIVE_SECONDS = 75
#: SageMaker sends SIGKILL 30 s after SIGTERM; finish in-flight requests within that.
GRACEFUL_SHUTDOWN_SECONDS = 25


# --------------------------------------------------------------------------------------------- model folder
def resolve_model_dir(explicit: str | Path | None = None) -> Path:
    """The model folder: ``explicit`` > ``$SM_MODEL_DIR`` > ``/opt/ml/model``.

    A ``model.tar.gz`` packed with its folder at the top (``tar -czf model.tar.gz clawdbot-tiny-chat``) unpacks
    to ``/opt/ml/model/clawdbot-tiny-chat/``; such a single sub-folder is used, so both ways of packing work.
    """
    root = Path(explicit or os.environ.get("SM_MODEL_DIR") or SAGEMAKER_MODEL_DIR)
    if root.is_dir() and not (root / "config.json").exists():
        children = [p for p in root.iterdir() if not p.name.startswith(".")]
        if len(children) == 1 and children[0].is_dir() and (children[0] / "config.json").exists():
            return children[0]
    return root


# --------------------------------------------------------------------------------------------- model slot
class ModelSlot:
    """Holds the backend once a background thread has loaded it; ``/ping`` reads its state."""

    def __init__(self, loader: Callable[[], InferenceBackend],
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self._loader = loader
        self._on_error = on_error
        self.backend: InferenceBackend | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            backend = self._loader()
        except BaseException as exc:
            self.error = exc
            logger.exception("model failed to load")
            if self._on_error is not None:
                self._on_error(exc)
            return
        self.backend = backend
        logger.info("model %s loaded in %.2f s", backend.model_id, time.perf_counter() - started)


# --------------------------------------------------------------------------------------------- the app
@dataclass(frozen=True, slots=True)
class _Failure:
    exc: BaseException


_END = object()


def error_response(exc: ClawdbotError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=exc.status_code, headers=exc.headers or None)


def _internal(exc: BaseException) -> ClawdbotError:
    if isinstance(exc, ClawdbotError):
        return exc
    logger.error("generation failed", exc_info=exc)
    return InferenceError("The model failed while generating; see the container log.")


def create_app(loader: Callable[[], InferenceBackend], *, max_concurrency: int,
               on_load_error: Callable[[BaseException], None] | None = None,
               session_ttl_seconds: int = DEFAULT_TTL_SECONDS) -> Starlette:
    """The ASGI app. ``loader`` builds the backend (in a background thread, at start-up); a model session it
    opens is routed here for ``session_ttl_seconds``."""
    slot = ModelSlot(loader, on_load_error)
    executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="generate")

    async def ping(request: Request) -> Response:
        if slot.backend is not None:
            return JSONResponse({"status": "ok", "model": slot.backend.model_id})
        if slot.error is not None:
            return JSONResponse({"status": "failed", "error": str(slot.error)}, status_code=500)
        return JSONResponse({"status": "loading"}, status_code=503)

    async def execution_parameters(request: Request) -> Response:
        return JSONResponse(
            {"MaxConcurrentTransforms": max_concurrency, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 6}
        )

    async def invocations(request: Request) -> Response:
        backend = slot.backend
        if backend is None:
            return error_response(ServiceUnavailableError("The model is still loading."))
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return error_response(InvalidRequestError("The request body is not valid JSON."))
        # A new model session's id for the response header: this instance is where SageMaker sends its next calls.
        session = (new_session(session_ttl_seconds).header()
                   if request.headers.get(SESSION_HEADER) == NEW_SESSION else None)
        headers = {NEW_SESSION_HEADER: session} if session else {}
        if isinstance(body, dict) and body.get("open_session") is True:
            if session is None:
                return error_response(InvalidRequestError(
                    f"open_session needs the {SESSION_HEADER} header {NEW_SESSION} (SessionId in the SDKs).",
                    param="open_session"))
            return JSONResponse({"model_session": session}, headers=headers)
        try:
            chat = parse_chat_request(body)
        except ClawdbotError as exc:
            return error_response(exc)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if chat.stream:
            return await _stream(backend, chat, completion_id, created, headers)
        loop = asyncio.get_running_loop()
        try:
            # A caller that hangs up (the chat API's read timeout) stops the model at its next token.
            async with watching(request.receive):
                completion = await loop.run_in_executor(executor, contextvars.copy_context().run, backend.generate,
                                                        chat.messages, chat.params)
        except GenerationCancelledError as exc:
            logger.info("%s", exc.message)
            return error_response(exc)
        except Exception as exc:
            return error_response(_internal(exc))
        return JSONResponse(
            completion_body(completion, completion_id=completion_id, model=backend.model_id, created=created),
            headers=headers,
        )

    async def _stream(backend: InferenceBackend, chat: ChatRequest, completion_id: str,
                      created: int, headers: dict[str, str]) -> Response:
        """Start generating and wait for the first delta before answering.

        Errors the contract raises before the first delta (the prompt does not fit) become a plain HTTP error
        (which SageMaker reports as ModelError with the original status); later ones become an OpenAI error
        event in the stream, since the 200 status has been sent by then.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()
        executor.submit(_produce, lambda: backend.stream(chat.messages, chat.params), queue, loop, cancelled)
        try:
            first = await queue.get()
        except asyncio.CancelledError:  # the server is going away while the request waited for a thread
            cancelled.set()
            raise
        if isinstance(first, _Failure):
            await queue.get()  # the producer's _END: it has finished with the iterator
            return error_response(_internal(first.exc))
        model = backend.model_id
        ids = {"completion_id": completion_id, "model": model, "created": created,
               "include_usage": chat.include_usage}

        async def events() -> AsyncIterator[bytes]:
            try:
                yield sse_event(chunk_body(delta={"role": "assistant", "content": ""}, **ids))
                item = first
                while item is not _END:
                    if isinstance(item, _Failure):
                        yield sse_event(error_body(_internal(item.exc)))
                        return
                    item = cast("StreamDelta", item)
                    if item.text or item.logprobs:
                        yield sse_event(chunk_body(delta={"content": item.text}, logprobs=item.logprobs, **ids))
                    if item.finish_reason is not None:
                        yield sse_event(chunk_body(delta={}, finish_reason=item.finish_reason, **ids))
                        if chat.include_usage:
                            usage = usage_body(item.prompt_tokens, item.completion_tokens, item.cached_tokens)
                            yield sse_event(chunk_body(usage=usage, **ids))
                    item = await queue.get()
                yield SSE_DONE
            finally:
                cancelled.set()  # a client that went away stops the generation at the next token

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers}
        )

    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        slot.start()
        try:
            yield
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    app = Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/execution-parameters", execution_parameters, methods=["GET"]),
        ],
        lifespan=asynccontextmanager(lifespan),
    )
    app.state.slot = slot
    return app


def _produce(start: Callable[[], Iterator[StreamDelta]], queue: asyncio.Queue[object],
             loop: asyncio.AbstractEventLoop, cancelled: threading.Event) -> None:
    """Drive a backend stream on a pool thread, handing deltas to the event loop.

    The whole stream runs on this one thread so that a cancelled request can close the generator from the
    thread that runs it (closing a generator another thread is advancing is an error).
    """
    iterator: Iterator[StreamDelta] | None = None
    try:
        iterator = start()
        for delta in iterator:
            loop.call_soon_threadsafe(queue.put_nowait, delta)
            if cancelled.is_set():
                logger.debug("stream cancelled by the client")
                break
    except BaseException as exc:
        loop.call_soon_threadsafe(queue.put_nowait, _Failure(exc))
    finally:
        close = getattr(iterator, "close", None) if iterator is not None else None
        if close is not None:
            close()
        loop.call_soon_threadsafe(queue.put_nowait, _END)


# --------------------------------------------------------------------------------------------- serve
def load_onnx_backend(model_dir: Path, *, model_id: str | None = None, threads: int | None = None,
                      prefix_cache_mb: int | None = None, max_generations: int | None = None) -> InferenceBackend:
    """The shipped engine: ONNX Runtime on the model folder (imported here: it pulls in onnxruntime/numpy).

    Threads default to the CPUs the container may use (cgroup-aware); the provider is CUDA when the image has
    onnxruntime-gpu and the instance a GPU, else CPU. The prefix cache (CPU only) keeps the last turns' KV caches
    for prompts that continue them: a session's next turn reaches the same instance often enough to matter.
    """
    from clawdbot.inference.onnx import OnnxBackend, RuntimeOptions
    from clawdbot.inference.onnx.runtime import DEFAULT_PREFIX_CACHE_MB

    megabytes = DEFAULT_PREFIX_CACHE_MB if prefix_cache_mb is None else prefix_cache_mb
    return OnnxBackend(model_dir, model_id=model_id,
                       options=RuntimeOptions(threads=threads, prefix_cache_bytes=megabytes << 20,
                                              max_generations=max_generations))


def default_concurrency() -> int:
    """One generation per CPU the container may use (cgroup-aware), at least two (the engine's own default,
    ``clawdbot.inference.onnx.runtime.default_generations``; docs/sagemaker.md has the measurements).

    A small decoder's step is too short for ONNX Runtime to spread over many cores, so throughput comes from
    running requests side by side rather than from more intra-op threads.
    """
    from clawdbot.inference.onnx.runtime import default_generations

    return default_generations()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serve", description="Serve a clawdbot model under SageMaker's hosting contract."
    )
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="model folder (default: $SM_MODEL_DIR, else /opt/ml/model)")
    parser.add_argument("--host", default=os.environ.get("SAGEMAKER_BIND_TO_HOST", "0.0.0.0"),
                        help="address to bind (default 0.0.0.0: SageMaker connects from outside the container)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT)),
                        help="port (default: $SAGEMAKER_BIND_TO_PORT, else 8080)")
    parser.add_argument("--model-name", default=os.environ.get("CLAWDBOT_MODEL_NAME") or None,
                        help="model id in responses (default: $CLAWDBOT_MODEL_NAME, else the folder's name)")
    parser.add_argument("--threads", type=int, default=_env_int("CLAWDBOT_INFERENCE_THREADS"),
                        help="engine threads (default: $CLAWDBOT_INFERENCE_THREADS, else the CPUs available)")
    parser.add_argument("--max-concurrency", type=int, default=_env_int("CLAWDBOT_CONTAINER_CONCURRENCY"),
                        help="generations run at once "
                             "(default: $CLAWDBOT_CONTAINER_CONCURRENCY, else the CPUs available, at least 2)")
    parser.add_argument("--prefix-cache-mb", type=int, default=_env_int("CLAWDBOT_PREFIX_CACHE_MB"),
                        help="MiB of finished turns' KV caches kept for prompts that continue them, 0 for none "
                             "(default: $CLAWDBOT_PREFIX_CACHE_MB, else 256)")
    parser.add_argument("--session-ttl-seconds", type=int, default=_env_int("CLAWDBOT_MODEL_SESSION_TTL_SECONDS"),
                        help="how long a model session opened here routes a conversation's turns to this "
                             f"instance (default: $CLAWDBOT_MODEL_SESSION_TTL_SECONDS, else {DEFAULT_TTL_SECONDS})")
    parser.add_argument("serve", nargs="?", help=argparse.SUPPRESS)  # `docker run IMAGE serve` with an ENTRYPOINT
    return parser


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``functions/inference/serve``: bind, load the model in the background, serve."""
    import uvicorn

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("CLAWDBOT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    model_dir = resolve_model_dir(args.model_dir)
    max_concurrency = args.max_concurrency or default_concurrency()
    logger.info("serving %s on %s:%d (threads=%s, max_concurrency=%d)",
                model_dir, args.host, args.port, args.threads or "auto", max_concurrency)

    server: uvicorn.Server | None = None

    def stop(exc: BaseException) -> None:
        if server is not None:
            server.should_exit = True

    if args.prefix_cache_mb is not None and args.prefix_cache_mb < 0:
        parser.error("--prefix-cache-mb must be 0 or more")
    if args.session_ttl_seconds is not None and args.session_ttl_seconds < 1:
        parser.error("--session-ttl-seconds must be 1 or more")
    app = create_app(lambda: load_onnx_backend(model_dir, model_id=args.model_name, threads=args.threads,
                                               prefix_cache_mb=args.prefix_cache_mb,
                                               max_generations=max_concurrency),
                     max_concurrency=max_concurrency,
                     on_load_error=stop,
                     session_ttl_seconds=args.session_ttl_seconds or DEFAULT_TTL_SECONDS)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, lifespan="on", access_log=False, log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_SECONDS, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = uvicorn.Server(config)
    server.run()
    return 1 if app.state.slot.error is not None else 0


__all__ = ["ModelSlot", "create_app", "error_response", "main", "resolve_model_dir"]
