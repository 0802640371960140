"""Fixtures for traffic control: every key-store and rate-limiter engine, and real ``clawdbot serve`` processes.

Engines run against the real servers of ``tests.fixtures.servers`` (redis-server, DynamoDB Local), requested
lazily so the SQLite/in-process cases start nothing. ``serve`` starts the server exactly as a user does, with
the shipped model and whatever ``CLAWDBOT_*`` environment a test gives it; ``cli`` runs ``clawdbot`` commands
against the same configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from clawdbot.config.settings import DEFAULT_MODEL_DIR
from tests.fixtures.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from clawdbot.traffic.keystore.base import KeyStore
    from clawdbot.traffic.ratelimit.base import RateLimiter

ENGINES = ("sqlite", "redis", "dynamodb")
LIMITERS = ("memory", "redis", "dynamodb")
TABLE = "clawdbot-traffic-test"




@pytest.fixture(scope="session")
def traffic_table(dynamodb_local: str) -> str:
    """The sessions table (the stack's schema) in DynamoDB Local; keys and buckets share it with sessions."""
    import boto3

    from clawdbot.sessions.factory import ensure_dynamodb_table

    ensure_dynamodb_table(boto3.client("dynamodb", endpoint_url=dynamodb_local), TABLE)
    return TABLE


def _dynamodb_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("dynamodb", endpoint_url=endpoint)


@pytest.fixture(params=ENGINES)
def key_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    """A fresh, empty key store of each engine."""
    if request.param == "sqlite":
        from clawdbot.traffic.keystore.sqlite import SQLiteKeyStore

        store: KeyStore = SQLiteKeyStore(tmp_path)
    elif request.param == "redis":
        from clawdbot.traffic.keystore.redis import RedisKeyStore

        url = request.getfixturevalue("redis_server")
        store = RedisKeyStore.from_url(url, hash_name=f"test:apikeys:{uuid.uuid4().hex}")
    else:
        from clawdbot.traffic.keystore.dynamodb import DynamoDBKeyStore

        endpoint = request.getfixturevalue("dynamodb_local")
        store = DynamoDBKeyStore(request.getfixturevalue("traffic_table"), client=_dynamodb_client(endpoint),
                                 partition=f"test#apikeys#{uuid.uuid4().hex}")
    yield store
    store.close()


@pytest.fixture(params=LIMITERS)
def make_limiter(request: pytest.FixtureRequest) -> Iterator[Callable[[], RateLimiter]]:
    """Build limiters of one engine that share their backing state (as two server processes would)."""
    built: list[RateLimiter] = []
    shared_memory: list[RateLimiter] = []

    def make() -> RateLimiter:
        limiter: RateLimiter
        if request.param == "memory":
            from clawdbot.traffic.ratelimit.memory import MemoryRateLimiter

            if not shared_memory:  # in-process state is per process: "sharing" means the same object
                shared_memory.append(MemoryRateLimiter())
            return shared_memory[0]
        if request.param == "redis":
            from clawdbot.traffic.ratelimit.redis import RedisRateLimiter

            limiter = RedisRateLimiter.from_url(request.getfixturevalue("redis_server"))
        else:
            from clawdbot.traffic.ratelimit.dynamodb import DynamoDBRateLimiter

            limiter = DynamoDBRateLimiter(request.getfixturevalue("traffic_table"),
                                          client=_dynamodb_client(request.getfixturevalue("dynamodb_local")))
        built.append(limiter)
        return limiter

    yield make
    for limiter in built + shared_memory:
        limiter.close()


@pytest.fixture
def key_id() -> str:
    """A key id nobody used before (limiter state is keyed by it)."""
    return "key_" + uuid.uuid4().hex[:16]


# ------------------------------------------------------------------------------------ real servers
@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The shipped model, unless ``CLAWDBOT_MODEL_DIR`` names another (as for ``clawdbot serve`` itself)."""
    path = Path(os.environ.get("CLAWDBOT_MODEL_DIR", DEFAULT_MODEL_DIR))
    assert (path / "model.onnx").exists(), f"the shipped model is missing at {path}"
    return path


@dataclass
class Server:
    base_url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=60)
        self.clients.append(client)
        return client


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``clawdbot ARGS`` in a fresh process with ``env``; fails the test on a non-zero exit."""
    done = subprocess.run([sys.executable, "-m", "clawdbot.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"clawdbot {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def gauge(client: httpx.Client, name: str) -> float:
    """A gauge's value on the server's ``/metrics`` (Prometheus text)."""
    from tests.fixtures.probes import metric_samples

    for (sample, _), value in metric_samples(client.get("/metrics").text).items():
        if sample == name:
            return value
    raise AssertionError(f"{name} not exposed")


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds (30 s at most): for states another thread or process reaches."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def create_key(env: dict[str, str], name: str, *options: str) -> str:
    """``clawdbot keys create``: the key is the last line of its output."""
    return run_cli(env, "keys", "create", "--name", name, *options).stdout.strip().splitlines()[-1]


@pytest.fixture
def server_env(tmp_path: Path, model_dir: Path) -> dict[str, str]:
    """Environment of a server and its CLI: private data dir, the shipped model, no inherited CLAWDBOT_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWDBOT_")}
    env.update({"CLAWDBOT_DATA_DIR": str(tmp_path / "data"), "CLAWDBOT_MODEL_DIR": str(model_dir),
                "CLAWDBOT_KEY_CACHE_SECONDS": "0"})
    return env


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start ``clawdbot serve`` processes (``env``, ``host``); all are stopped after the test."""
    servers: list[Server] = []

    def start(env: dict[str, str], host: str = "127.0.0.1") -> Server:
        port = free_port()
        log = tmp_path / f"server-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "clawdbot.cli.main", "serve", "--host", host, "--port", str(port),
                 "--log-level", "warning"], env=env, stdout=out, stderr=subprocess.STDOUT)
        server = Server(f"http://127.0.0.1:{port}", env, process, log)
        servers.append(server)
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()}")
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not become healthy:\n{log.read_text()}")
            time.sleep(0.1)

    yield start
    for server in servers:
        for client in server.clients:
            client.close()
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
