"""The HTTP API: FastAPI app, OpenAI-shaped schemas and errors. Build it with :func:`create_app`."""

from clawdbot.api.app import create_app

__all__ = ["create_app"]
