"""The app's routes are its own (``clawdbot.api.routes.add_routes``), not branches of included routers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from clawdbot.api.app import create_app
from clawdbot.config.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path


def test_every_route_is_the_apps_own_and_each_path_is_served_once(tmp_path: Path, model_dir: Path) -> None:
    """An included router would build its routes a second time on its first request and add a branch to every
    request's walk: a new ``include_router`` fails here, so that it is a choice, not a slip."""
    app = create_app(Settings(data_dir=tmp_path, model_dir=model_dir))
    branches = [route for route in app.routes if not isinstance(route, (APIRoute, Route, Mount))]
    assert not branches, branches
    served = [(route.path, method) for route in app.routes if isinstance(route, APIRoute)
              for method in sorted(route.methods)]
    assert len(served) == len(set(served)), served
    paths = {path for path, _ in served}
    for expected in ("/v1/chat/completions", "/v1/sessions", "/v1/sessions/{session_id}",
                     "/v1/sessions/{session_id}/turns", "/v1/sessions/{session_id}/feedback", "/healthz", "/"):
        assert expected in paths, sorted(paths)
