"""Fixtures for the browser tests: a real ``clawdbot serve`` with API keys on, and headless Chromium.

The server is the one a user starts (the shipped model, the SQLite store in a temporary data directory), with
two A/B arms and a latency threshold every turn exceeds, so the pages have variants, streaks and breaches to
show. Chromium is Debian's ``chromium`` package (``make test-servers`` installs it), driven by Playwright for
Python through ``executable_path``: Playwright's own browser downloads need an internet connection.

Screenshots land in ``test-artifacts/web/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from clawdbot.config.settings import DEFAULT_MODEL_DIR
from tests.fixtures.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from playwright.sync_api import Browser, Page

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "web"
CHROMIUM = os.environ.get("CLAWDBOT_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
VARIANTS = [{"name": "control", "weight": 1}, {"name": "warm", "weight": 1, "temperature": 0.9}]
#: Every turn is slower than this, so each one extends its variant's streak and, from the second on, breaches.
LATENCY_THRESHOLD_MS = 1
BREACH_TURNS = 2
#: What a card shows before it has a reading (an en dash, as the pages print a missing number).
NO_READING = "\u2013"
#: How long a page may take to show what a test waits for (a turn, an /ops refresh) on a busy 2-core machine.
UI_TIMEOUT_MS = 20_000




def run_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "clawdbot.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"clawdbot {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass
class WebServer:
    base_url: str
    #: The key the tests type into the pages, and a second caller's key.
    key: str
    other_key: str
    env: dict[str, str]

    def api(self, key: str | None = None) -> httpx.Client:
        """A plain HTTP client of the same API (what the tests check the pages against)."""
        return httpx.Client(base_url=self.base_url, timeout=60,
                            headers={"authorization": f"Bearer {key or self.key}"})


def start_server(env: dict[str, str], log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """``clawdbot serve`` on a free loopback port, returned once ``/healthz`` answers."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "clawdbot.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning"], env=env, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return base_url, process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not become healthy:\n{log.read_text()}")
        time.sleep(0.1)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    model_dir = Path(os.environ.get("CLAWDBOT_MODEL_DIR", DEFAULT_MODEL_DIR))
    assert (model_dir / "model.onnx").exists(), f"the shipped model is missing at {model_dir}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWDBOT_")}
    env.update({"CLAWDBOT_DATA_DIR": str(data_dir), "CLAWDBOT_MODEL_DIR": str(model_dir),
                "CLAWDBOT_DEFAULT_MAX_TOKENS": "64", **extra})
    return env


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    data_dir = tmp_path_factory.mktemp("web-data")
    env = server_env(data_dir, CLAWDBOT_AB_VARIANTS=json.dumps(VARIANTS),
                     CLAWDBOT_LATENCY_THRESHOLD_MS=str(LATENCY_THRESHOLD_MS),
                     CLAWDBOT_LATENCY_BREACH_TURNS=str(BREACH_TURNS))
    # Keys exist before the server starts: it requires one from the first request on.
    key = run_cli(env, "keys", "create", "--name", "web", "--tier", "unlimited").strip().splitlines()[-1]
    other = run_cli(env, "keys", "create", "--name", "other", "--tier", "unlimited").strip().splitlines()[-1]
    base_url, process = start_server(env, data_dir / "server.log")
    yield WebServer(base_url, key, other, env)
    stop_server(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one test module. Not longer: Playwright's sync API keeps an asyncio loop running on this
    thread while it is open, and code that runs its own loop (Mangum, in the Lambda tests) cannot start one."""
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: `make test-servers` installs Debian's chromium"
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser: Browser, web_server: WebServer) -> Iterator[Callable[..., Page]]:
    """Pages in fresh browser contexts (own storage), at a viewport size; closed after the test.

    An uncaught JavaScript error in any page of these contexts fails the test; each page made here records the
    URLs it requests in ``page.requested``.
    """
    contexts = []
    errors: list[str] = []

    def make(viewport: dict[str, int] | None = None, base_url: str | None = None) -> Page:
        context = browser.new_context(base_url=base_url or web_server.base_url, viewport=viewport or DESKTOP)
        context.set_default_timeout(UI_TIMEOUT_MS)
        context.on("weberror", lambda error: errors.append(f"{error.page.url if error.page else '?'}: {error.error}"))
        contexts.append(context)
        page = context.new_page()
        page.requested = []  # type: ignore[attr-defined]
        page.on("request", lambda request: page.requested.append(request.url))  # type: ignore[attr-defined]
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
