"""Where API keys live: the contract (``base``) and one module per engine, imported explicitly.

``clawdbot.traffic.keystore.sqlite`` (the embedded default), ``.dynamodb`` and ``.redis`` (the serverless path)
follow the configured session store, so keys live wherever sessions do.
"""

from clawdbot.traffic.keystore.base import KeyStore

__all__ = ["KeyStore"]
