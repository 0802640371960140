"""All runtime configuration, read from ``CLAWDBOT_*`` environment variables.

One validated object instead of ``os.environ`` lookups scattered through the code: a typo'd or out-of-range
value fails at start-up with a message naming the variable, not at the first request.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The small model this repository ships (see MODEL.md); the default for ``clawdbot serve`` and the tests.
REPO_ROOT = Path(__file__).resolve().parents[4]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "clawdbot-tiny-chat"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLAWDBOT_", extra="ignore")

    # --- storage
    session_store: Literal["sqlite", "dynamodb", "redis"] = "sqlite"
    data_dir: Path = Path(".clawdbot")
    session_ttl_seconds: int | None = Field(default=24 * 3600, ge=60)
    dynamodb_table: str = "clawdbot-sessions"
    redis_url: str | None = None

    # --- inference
    inference: Literal["local", "sagemaker"] = "local"
    model_dir: Path = DEFAULT_MODEL_DIR
    model_name: str | None = None
    sagemaker_endpoint: str | None = None
    #: Largest completion when the client sets no max_tokens.
    default_max_tokens: int = Field(default=256, ge=1)
    #: Prepended to every conversation when the client sends no system message ("" for none).
    system_prompt: str = ""

    # --- API limits
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_messages: int = Field(default=256, ge=1)
    #: History entries considered when building a session's context (newest first).
    history_window: int = Field(default=64, ge=2)

    # --- queued turns (SQS worker; see docs/queue.md)
    #: The FIFO queue ``POST /v1/sessions/{id}/turns`` enqueues on; unset disables queued turns.
    queue_url: str | None = None
    #: How long a processed turn id is remembered: a redelivery within this window makes no second turn.
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    #: SNS topic ARNs a queued turn may name as its reply target (comma-separated); empty allows none.
    reply_topic_arns: str = ""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process (cold start); tests build ``Settings(...)`` directly instead."""
    return Settings()
