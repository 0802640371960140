"""The browser pages served by the app itself: the chat page (``/``) and the operations page (``/ops``)."""

from clawdbot.web.routes import install

__all__ = ["install"]
