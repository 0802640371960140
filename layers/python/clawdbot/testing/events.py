"""Sample Lambda events: load one from ``events/`` by name, optionally with a different body, path or method.

Tests and ``clawdbot invoke`` load events through this one helper, so a test and a local invocation of the same
event see exactly the same payload. The files are real API Gateway HTTP API (payload format 2.0) events; the
overrides keep them real: a new body keeps the event's encoding (base64 stays base64) and its ``content-length``
header, a new path updates ``rawPath``, ``requestContext.http.path`` and the query string together.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

logger = logging.getLogger(__name__)

#: ``events/`` at the root of a source checkout (this file is ``layers/python/clawdbot/testing/events.py``).
DEFAULT_EVENTS_DIR = Path(__file__).resolve().parents[4] / "events"


class _Keep:
    """Sentinel type: "leave the body as it is" (``None`` means "no body")."""


KEEP = _Keep()


def event_path(name: str | Path, events_dir: Path | None = None) -> Path:
    """Resolve ``name`` to an event file.

    An existing file path is used as given; otherwise ``name`` is looked up in ``events_dir`` (default:
    the repository's ``events/``), with or without its ``.json`` suffix.
    """
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    folder = events_dir or DEFAULT_EVENTS_DIR
    for path in (folder / candidate, folder / f"{candidate}.json"):
        if path.is_file():
            return path
    raise FileNotFoundError(f"event file not found: {name} (looked in the current folder and {folder})")


def load_event(
    name: str | Path,
    *,
    body: Any = KEEP,
    path: str | None = None,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    events_dir: Path | None = None,
) -> Any:
    """Load a sample event and apply the overrides given.

    ``body``: a ``str`` is sent as is, ``bytes`` are always base64-encoded (binary bodies can only travel that
    way), anything else is serialized as compact JSON; ``None`` removes the body. ``path`` may carry a query
    string (``/v1/models?limit=2``). ``headers`` are merged in, names lower-cased as API Gateway delivers them.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for invalid JSON, or for overrides on an
    event that is not an HTTP API payload 2.0 event.
    """
    file = event_path(name, events_dir)
    try:
        event = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON: {exc}") from exc
    logger.debug("loaded sample event %s", file)

    if body is KEEP and path is None and method is None and not headers:
        return event
    if not (isinstance(event, dict) and event.get("version") == "2.0" and "requestContext" in event):
        raise ValueError(f"{file}: overrides apply to API Gateway HTTP API (payload format 2.0) events only")

    if headers:
        event.setdefault("headers", {}).update({k.lower(): v for k, v in headers.items()})
    if method is not None:
        event["requestContext"]["http"]["method"] = method.upper()
    if path is not None:
        _set_path(event, path)
    if not isinstance(body, _Keep):
        _set_body(event, body)
    return event


def _set_path(event: dict[str, Any], path: str) -> None:
    raw_path, _, query = path.partition("?")
    event["rawPath"] = raw_path
    event["requestContext"]["http"]["path"] = raw_path
    event["rawQueryString"] = query
    # Payload 2.0 joins repeated query parameters with commas (there is no multiValue variant).
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params[key] = f"{params[key]},{value}" if key in params else value
    if params:
        event["queryStringParameters"] = params
    else:
        event.pop("queryStringParameters", None)


def _set_body(event: dict[str, Any], body: Any) -> None:
    headers: dict[str, str] = event.setdefault("headers", {})
    if body is None:
        event.pop("body", None)
        event["isBase64Encoded"] = False
        headers.pop("content-length", None)
        return
    if isinstance(body, bytes):
        raw, as_base64 = body, True
    else:
        text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
        raw, as_base64 = text.encode("utf-8"), bool(event.get("isBase64Encoded"))
    event["body"] = base64.b64encode(raw).decode("ascii") if as_base64 else raw.decode("utf-8")
    event["isBase64Encoded"] = as_base64
    headers["content-length"] = str(len(raw))
