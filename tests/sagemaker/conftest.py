"""Fixtures for the SageMaker path: the real container process, the loopback router, the boto3-backed backend.

``container`` starts ``functions/inference/serve`` exactly as SageMaker would (model folder from
``SM_MODEL_DIR``, port from ``SAGEMAKER_BIND_TO_PORT``) on a free loopback port, running the configured model
(``CLAWDBOT_MODEL_DIR``, by default the shipped ``models/clawdbot-tiny-chat``) through ONNX Runtime.
``router`` puts a fresh :class:`SageMakerRouter` in front of it for each test, and ``backend`` is a
:class:`SageMakerBackend` whose boto3 client reaches the router through ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import pytest

from clawdbot.config.settings import REPO_ROOT, Settings
from tests.fixtures.servers import free_port
from tests.sagemaker.router import SageMakerRouter

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from clawdbot.inference.sagemaker import SageMakerBackend

SERVE = REPO_ROOT / "functions" / "inference" / "serve"
ENDPOINT = "clawdbot-test-endpoint"
START_TIMEOUT_S = 60.0




@dataclass
class Container:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: /ping statuses seen while waiting for the model (0: nothing listening yet).
    ping_statuses: list[int] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_container(model_dir: Path, log_path: Path, *extra_args: str, env: dict[str, str] | None = None,
                    wait: bool = True) -> Container:
    """Run the ``serve`` entry point on a free port; with ``wait``, return once ``/ping`` answers 200."""
    port = free_port()
    process_env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), "SM_MODEL_DIR": str(model_dir),
                   "CLAWDBOT_INFERENCE_THREADS": "1", **(env or {})}
    log = log_path.open("wb")
    process = subprocess.Popen([sys.executable, str(SERVE), "--host", "127.0.0.1", *extra_args],
                               env=process_env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    container = Container(f"http://127.0.0.1:{port}", process, log_path)
    if wait:
        wait_ready(container)
    return container


def wait_ready(container: Container) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if container.process.poll() is not None:
            raise AssertionError(f"the container exited with {container.process.returncode}:\n{container.log()}")
        try:
            status = httpx.get(f"{container.url}/ping", timeout=2).status_code
        except httpx.TransportError:
            status = 0
        if not container.ping_statuses or container.ping_statuses[-1] != status:
            container.ping_statuses.append(status)
        if status == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"the container was not ready within {START_TIMEOUT_S} s:\n{container.log()}")


def stop_container(container: Container) -> int:
    container.process.terminate()
    try:
        return container.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        container.process.kill()
        return container.process.wait()


@pytest.fixture(scope="session")
def model_dir() -> Path:
    path = Settings().model_dir
    assert (path / "model.onnx").is_file(), f"no model at {path} (set CLAWDBOT_MODEL_DIR or ship the model)"
    return path


@pytest.fixture(scope="session")
def bundle_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the chat Lambda ships: the model's tokenizer bundle, under the model's own folder name."""
    from clawdbot.inference.tokenizer_bundle import copy_bundle

    return copy_bundle(model_dir, tmp_path_factory.mktemp("lambda-bundle") / model_dir.resolve().name)


@pytest.fixture(scope="package")
def container(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    started = start_container(model_dir, tmp_path_factory.mktemp("container") / "serve.log")
    yield started
    stop_container(started)


@pytest.fixture(scope="package")
def aws_env(container: Container) -> Iterator[SageMakerRouter]:
    """One router for these tests, and boto3's own configuration pointed at it: dummy credentials, a region,
    ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``. Package-wide: the boto3 client (slow to build) is built once, and the
    environment is restored before other test packages run."""
    with SageMakerRouter(container.url) as router, pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        patch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", router.url)
        yield router


@pytest.fixture
def router(aws_env: SageMakerRouter) -> SageMakerRouter:
    """The session's router with no faults, no recorded requests and the container's own chunking."""
    aws_env.reset()
    aws_env.part_size = None
    return aws_env


def make_backend(bundle_dir: Path, **config: object) -> SageMakerBackend:
    from clawdbot.inference.sagemaker import SageMakerBackend, SageMakerConfig

    return SageMakerBackend(ENDPOINT, bundle_dir, config=SageMakerConfig(**config))


@pytest.fixture(scope="package")
def session_backend(aws_env: SageMakerRouter, bundle_dir: Path) -> Iterator[SageMakerBackend]:
    created = make_backend(bundle_dir, max_attempts=1, read_timeout=30)
    yield created
    created.close()


@pytest.fixture
def backend(session_backend: SageMakerBackend, router: SageMakerRouter) -> SageMakerBackend:
    """No retries unless a test asks otherwise: a fault surfaces at once. Requests go to ``router``."""
    return session_backend
