"""Settings from environment variables (``CLAWDBOT_*``), validated once with pydantic."""

from clawdbot.config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
