"""Serve the pages (``/``, ``/ops``), their assets (``/web/...``) and the JSON the operations page polls.

Everything the browser loads comes from this package — no CDN — because a deployment may have no internet.
The pages carry a Content-Security-Policy of ``'self'`` only, so an asset that slipped in from elsewhere would be
refused by the browser rather than quietly fetched. The pages themselves need no API key (they hold no data);
every call they make for data goes through the API with the key the user typed, like any other client.
"""

from __future__ import annotations

from importlib import resources as package_files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

from clawdbot.api.dependencies import Resources, get_resources
from clawdbot.api.routes import add_routes
from clawdbot.web.summary import AbReportCache, build_summary

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

STATIC_DIR = Path(str(package_files.files("clawdbot.web") / "static"))
#: Where the assets are mounted; the pages refer to them relatively (``web/...``), so a path prefix still works.
ASSETS_PREFIX = "/web"

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {"content-security-policy": CONTENT_SECURITY_POLICY, "cache-control": "no-cache",
                "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}

router = APIRouter()


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get("/", include_in_schema=False)
async def chat_page() -> FileResponse:
    return _page("index.html")


@router.get("/ops", include_in_schema=False)
async def ops_page() -> FileResponse:
    return _page("ops.html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


@router.get("/v1/ops/summary")
async def ops_summary(request: Request, res: Annotated[Resources, Depends(get_resources)]) -> dict[str, Any]:
    """Current metric values, latency guard and A/B report, for the operations page (any valid key)."""
    state = request.app.state
    return await run_in_threadpool(build_summary, res, getattr(state, "metrics", None), state.ab_report_cache)


class _NamedAssets:
    """The assets app, naming its route template as FastAPI's routes do (``scope["route"].path``), so request
    metrics count asset requests under ``/web/{path}`` rather than with the refusals answered before routing."""

    path = ASSETS_PREFIX + "/{path}"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Mount the pages, the assets and the summary route on ``app``."""
    app.state.ab_report_cache = AbReportCache()
    add_routes(app, router)
    app.mount(ASSETS_PREFIX, _NamedAssets(StaticFiles(directory=STATIC_DIR)), name="web")
