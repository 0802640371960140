"""Servers the benchmarks talk to, each in its own process on a free loopback port, as ``clawdbot serve`` runs.

- ``api``: ``create_app`` with the SQLite store and keys in a data folder, on uvicorn with the options of
  ``clawdbot serve``; the backend is the instant one (``--backend instant``) or the shipped model (``onnx``).
- ``direct``: the same uvicorn serving a bare ASGI callable that parses the request and calls the same backend's
  ``generate`` directly: the baseline that gateway overhead is measured against (transport and backend are in
  both; everything the gateway adds is in one only).

``python -m bench.serving KIND --port P --data-dir D [--backend instant|onnx]`` runs one in the foreground;
:func:`serve` starts one as a subprocess for the duration of a ``with`` block.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from clawdbot.inference.base import InferenceBackend

REPO = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    from tests.fixtures.servers import free_port as pick

    return pick()


def _backend(kind: str, model_dir: Path) -> InferenceBackend:
    if kind == "instant":
        from bench.instant import InstantBackend

        return InstantBackend(model_dir)
    from clawdbot.config.settings import Settings
    from clawdbot.inference.onnx import OnnxBackend

    return OnnxBackend.from_settings(Settings(model_dir=model_dir))  # CLAWDBOT_PREFIX_CACHE_MB applies


def direct_app(backend: InferenceBackend) -> Any:
    """A bare ASGI app: JSON body in, ``backend.generate`` on its messages, the reply as JSON out."""
    from clawdbot.inference.types import ChatMessage, GenerationParams

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = json.loads(body)
        messages = [ChatMessage(m["role"], m["content"]) for m in request["messages"]]
        completion = backend.generate(messages, GenerationParams(max_tokens=request.get("max_tokens"),
                                                                 temperature=request.get("temperature", 1.0)))
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": completion.text}}],
                              "usage": {"completion_tokens": completion.completion_tokens}}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    return app


#: The bare decode loop, served next to the app by a benchmark server started with ``bare_route=True``.
BARE_PATH = "/bench/bare"
#: Work without a model, served beside it: a worker thread busy for a given time with the GIL released, as a
#: generation is (:func:`busy`).
BUSY_PATH = "/bench/busy"
#: Bytes hashed per step of :func:`busy`: over 2 KiB, ``hashlib`` releases the GIL while it hashes.
_BUSY_CHUNK = bytes(64 * 1024)


def busy(seconds: float) -> float:
    """Keep this thread's core busy for ``seconds`` the way ONNX Runtime does, outside the GIL (SHA-256 of 64 KiB
    at a time); returns the time it really took."""
    import hashlib

    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        hashlib.sha256(_BUSY_CHUNK)
    return time.perf_counter() - started


def with_bare_route(app: Any, backend: Any) -> Any:
    """``app``, plus ``POST BARE_PATH`` (JSON ``prompt_ids``, ``tokens``, ``seed``): the engine's own decode loop
    in this process, on this backend, timed here (seconds to the first and the last token, CPU seconds); and
    ``POST BUSY_PATH`` (JSON ``busy_s``): :func:`busy` on a worker thread, its time as taken (``busy_s``).

    A bare loop in another process is not the same baseline: the same model runs up to ~10% faster or slower
    from one process to the next (weights placed differently in memory; measured on a 21 M-parameter model), a
    difference that stays for the process's life and would show as API efficiency."""
    import asyncio

    def bare(request: dict[str, Any]) -> dict[str, float]:
        from clawdbot.inference.onnx import Sampler

        cpu_before = time.process_time()  # the server is otherwise idle: one generation at a time
        started = time.perf_counter()
        first = 0.0
        count = 0
        for _ in backend.engine.generate(request["prompt_ids"], max_new_tokens=request["tokens"],
                                         sampler=Sampler(1.0, 1.0, request["seed"])):
            count += 1
            if count == 1:
                first = time.perf_counter() - started
        return {"first_s": first, "total_s": time.perf_counter() - started, "tokens": count,
                "cpu_s": time.process_time() - cpu_before}

    def work(request: dict[str, Any]) -> dict[str, float]:
        return {"busy_s": busy(request["busy_s"])}

    routes = {BARE_PATH: bare, BUSY_PATH: work}

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        handler = routes.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            await app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        payload = json.dumps(await asyncio.to_thread(handler, json.loads(body))).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    return wrapped


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    backend = _backend(args.backend, args.model_dir)
    if args.kind == "direct":
        app = direct_app(backend)
    else:
        from clawdbot.api.app import create_app
        from clawdbot.config.settings import Settings

        app = create_app(Settings(data_dir=args.data_dir, model_dir=args.model_dir), backend=backend)
    if args.bare_route:
        app = with_bare_route(app, backend)
    # The options of ``clawdbot serve`` (clawdbot/cli/serve.py), quieter.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


@dataclass(frozen=True)
class Server:
    """A running benchmark server: its port and process id."""

    port: int
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (:func:`process_cpu_seconds`)."""
        return process_cpu_seconds(self.pid)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far (Linux ``/proc``; 0.0 elsewhere).

    CPU time per turn is the steadiest figure on a shared machine: other processes' load stretches wall times,
    not the CPU a request costs.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def serve(kind: str, data_dir: Path, *, backend: str = "instant", model_dir: Path | None = None,
          env: dict[str, str] | None = None, bare_route: bool = False) -> Iterator[Server]:
    """Run a ``kind`` server until the block ends (``bare_route``: with :func:`with_bare_route`)."""
    from bench.instant import MODEL_DIR

    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"{kind}-server.log"
    cmd = [sys.executable, "-m", "bench.serving", kind, "--port", str(port), "--data-dir", str(data_dir),
           "--backend", backend, "--model-dir", str(model_dir or MODEL_DIR), *(["--bare-route"] if bare_route else [])]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield Server(port, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    from bench.instant import MODEL_DIR

    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("api", "direct"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--backend", choices=("instant", "onnx"), default="instant")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--bare-route", action="store_true", help=f"also serve the bare decode loop at {BARE_PATH}")
    return _run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
