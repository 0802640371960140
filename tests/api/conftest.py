"""Fixtures for the API tests: the real server (``clawdbot serve`` in a subprocess) and in-process apps.

Both run the shipped model (``models/clawdbot-tiny-chat``) through the real ONNX engine and the embedded SQLite
store in a temporary data directory: nothing here is a stand-in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest

from clawdbot.config.settings import DEFAULT_MODEL_DIR
from tests.fixtures.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path




@pytest.fixture(scope="session")
def model_dir() -> Path:
    assert (DEFAULT_MODEL_DIR / "model.onnx").exists(), f"the shipped model is missing at {DEFAULT_MODEL_DIR}"
    return DEFAULT_MODEL_DIR


@dataclass
class LiveServer:
    base_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"


@pytest.fixture(scope="session")
def live_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``clawdbot serve`` exactly as a user starts it, on a free loopback port."""
    data_dir = tmp_path_factory.mktemp("serve-data")
    port = free_port()
    env = {**os.environ, "CLAWDBOT_DATA_DIR": str(data_dir), "CLAWDBOT_MODEL_DIR": str(model_dir)}
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "clawdbot.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {(data_dir / 'server.log').read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("server did not become healthy in 60 s")
        time.sleep(0.1)
    yield LiveServer(base_url, data_dir, process)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="session")
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def model_id(http: httpx.Client) -> str:
    return http.get("/v1/models").json()["data"][0]["id"]
