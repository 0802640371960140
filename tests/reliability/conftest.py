"""Fixtures for the reliability suite: ``clawdbot serve`` processes on every session store, stores to check them
with, and the figures the suite reports.

Everything is real: the server is the ``clawdbot serve`` a user starts (shipped model, ONNX Runtime), talking to
SQLite, redis-server or DynamoDB Local from ``tests.fixtures.servers``; faults come from proxies and process kills
(``tests.reliability.faults``), never from patching our own code.

Figures: tests add counts to the session's ``figures`` (turns attempted and stored, faults injected and survived,
fuzz cases run); with ``CLAWDBOT_RELIABILITY_FIGURES=<path>`` they are written there as JSON when the session
ends (``python -m bench.reliability`` does that and publishes them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from clawdbot.config.settings import DEFAULT_MODEL_DIR
from tests.fixtures.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from clawdbot.sessions.base import SessionStore

#: The session stores every race and fault runs on.
STORES = ("sqlite", "redis", "dynamodb")
#: Redis database the suite's servers use: other suites' servers create API keys in database 0, which would
#: close ours (keys become mandatory once one exists).
REDIS_DB = 9
FIGURES_ENV = "CLAWDBOT_RELIABILITY_FIGURES"
START_TIMEOUT_S = 90.0


# ------------------------------------------------------------------------------------------------ figures
class Figures:
    """Counters the suite reports (``docs/reliability.md``); merged into one JSON document per run."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.values: dict[str, Any] = {}

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount

    def set(self, name: str, value: Any) -> None:
        self.values[name] = value

    def to_dict(self) -> dict[str, Any]:
        return {**dict(sorted(self.counts.items())), **self.values}


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    collected = Figures()
    yield collected
    target = os.environ.get(FIGURES_ENV)
    if target:
        Path(target).write_text(json.dumps(collected.to_dict(), indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------------------ servers
@pytest.fixture(scope="session")
def model_dir() -> Path:
    path = Path(os.environ.get("CLAWDBOT_MODEL_DIR", DEFAULT_MODEL_DIR))
    assert (path / "model.onnx").exists(), f"the shipped model is missing at {path}"
    return path


@dataclass
class Serve:
    """One ``clawdbot serve`` process."""

    base_url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    port: int
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, key: str | None = None, timeout: float = 120) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        made = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self.clients.append(made)
        return made

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as when a machine or a container dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        for made in self.clients:
            made.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_serve(env: dict[str, str], log: Path, *, port: int | None = None, log_level: str | None = None) -> Serve:
    """``clawdbot serve`` with ``env`` on a free (or the given) loopback port, once ``/healthz`` answers."""
    port = port or free_port()
    args = [sys.executable, "-m", "clawdbot.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if log_level:
        args += ["--log-level", log_level]
    with log.open("ab") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Serve(f"http://127.0.0.1:{port}", env, process, log, port)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"clawdbot serve exited with {process.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"clawdbot serve did not become healthy:\n{server.log_text()}")
        time.sleep(0.1)


@dataclass
class Backing:
    """A session store kind as one test uses it: the server's environment, and a store client on the same data."""

    kind: str
    env: dict[str, str]
    make_store: Callable[[], SessionStore]


def base_env(data_dir: Path, model_dir: Path) -> dict[str, str]:
    """A server's environment: no inherited ``CLAWDBOT_*``, a private data dir, the shipped model, short replies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWDBOT_")}
    env.update({"CLAWDBOT_DATA_DIR": str(data_dir), "CLAWDBOT_MODEL_DIR": str(model_dir),
                "CLAWDBOT_DEFAULT_MAX_TOKENS": "8", "CLAWDBOT_KEY_CACHE_SECONDS": "0"})
    return env


def direct_store(kind: str, data_dir: Path, *, redis_url: str | None = None, dynamodb_endpoint: str | None = None,
                 table: str | None = None, create_table: bool = False) -> SessionStore:
    """The store a server of ``kind`` writes to, opened directly (never through a fault proxy), to check what was
    stored; shared with ``bench.reliability``'s soak."""
    from clawdbot.sessions.base import StoreConfig

    if kind == "sqlite":
        from clawdbot.sessions.sqlite import SQLiteSessionStore

        return SQLiteSessionStore(data_dir, StoreConfig())
    if kind == "redis":
        from clawdbot.sessions.redis import RedisSessionStore

        return RedisSessionStore.from_url(str(redis_url), StoreConfig(), cluster=False)
    if kind == "dynamodb":
        import boto3

        from clawdbot.sessions.dynamodb import DynamoDBSessionStore
        from clawdbot.sessions.factory import ensure_dynamodb_table
        from tests.fixtures.servers import FAKE_AWS_ENV

        client = boto3.client("dynamodb", endpoint_url=dynamodb_endpoint, region_name=FAKE_AWS_ENV["AWS_REGION"],
                              aws_access_key_id="direct", aws_secret_access_key="direct")
        if create_table:
            ensure_dynamodb_table(client, str(table))
        return DynamoDBSessionStore(str(table), StoreConfig(), client=client)
    raise ValueError(kind)


def backing_for(kind: str, request: pytest.FixtureRequest, data_dir: Path, model_dir: Path, *,
                redis_url: str | None = None, dynamodb_url: str | None = None) -> Backing:
    """The environment for ``kind`` (``redis_url``/``dynamodb_url`` route the server through a proxy), and how to
    open the same store directly (never through the proxy) to check what was stored."""
    env = base_env(data_dir, model_dir)
    env["CLAWDBOT_SESSION_STORE"] = kind
    direct: dict[str, Any] = {}
    if kind == "redis":
        direct["redis_url"] = request.getfixturevalue("redis_server").rsplit("/", 1)[0] + f"/{REDIS_DB}"
        env["CLAWDBOT_REDIS_URL"] = ((redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}") if redis_url
                                     else direct["redis_url"])
    elif kind == "dynamodb":
        endpoint = request.getfixturevalue("dynamodb_local")
        direct |= {"dynamodb_endpoint": endpoint, "table": f"clawdbot-reliability-{uuid.uuid4().hex[:12]}",
                   "create_table": True}
        env.update({"CLAWDBOT_DYNAMODB_TABLE": direct["table"], "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url or endpoint})
    elif kind != "sqlite":
        raise ValueError(kind)
    return Backing(kind, env, lambda: direct_store(kind, data_dir, **direct))


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    """Start ``clawdbot serve`` processes for one test; all are stopped after it."""
    started: list[Serve] = []

    def start(env: dict[str, str], **options: Any) -> Serve:
        server = start_serve(env, tmp_path / f"serve-{len(started)}.log", **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def stores() -> Iterator[list[SessionStore]]:
    """Store clients a test opened, closed after it."""
    opened: list[SessionStore] = []
    yield opened
    for store in opened:
        store.close()


@pytest.fixture(params=STORES)
def backing(request: pytest.FixtureRequest, tmp_path: Path, model_dir: Path, aws_test_env: None,
            stores: list[SessionStore]) -> Backing:
    """Each session store in turn (a fresh SQLite file, Redis database, DynamoDB table)."""
    made = backing_for(request.param, request, tmp_path / "data", model_dir)
    make = made.make_store

    def tracked() -> SessionStore:
        store = make()
        stores.append(store)
        return store

    made.make_store = tracked
    return made


@pytest.fixture
def sqlite_backing(request: pytest.FixtureRequest, tmp_path: Path, model_dir: Path,
                   stores: list[SessionStore]) -> Backing:
    """The embedded store alone: for cases whose engine-specific part other tests already cover."""
    made = backing_for("sqlite", request, tmp_path / "data", model_dir)
    make = made.make_store

    def tracked() -> SessionStore:
        store = make()
        stores.append(store)
        return store

    made.make_store = tracked
    return made


@pytest.fixture(scope="session")
def model_id(model_dir: Path) -> str:
    from clawdbot.inference.tokenizer_bundle import TokenizerBundle

    return TokenizerBundle(model_dir).model_id
