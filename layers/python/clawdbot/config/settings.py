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

from clawdbot.traffic.ab import VariantConfig

#: The small model this repository ships (see MODEL.md); the default for ``clawdbot serve`` and the tests.
REPO_ROOT = Path(__file__).resolve().parents[4]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "clawdbot-tiny-chat"
#: MiB of KV caches the local engine keeps for the next turn by default (``CLAWDBOT_PREFIX_CACHE_MB``, the
#: container's ``--prefix-cache-mb``): the shipped model's whole context is 3 MiB, so this holds the last turn of
#: ~80 full conversations.
DEFAULT_PREFIX_CACHE_MB = 256


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLAWDBOT_", extra="ignore")

    # --- storage
    session_store: Literal["sqlite", "dynamodb", "redis"] = "sqlite"
    data_dir: Path = Path(".clawdbot")
    session_ttl_seconds: int | None = Field(default=24 * 3600, ge=60)
    dynamodb_table: str = "clawdbot-sessions"
    #: Create the sessions table if it is missing (a DescribeTable at start). Unset: only against a local
    #: endpoint (DynamoDB Local), never against AWS, where the table belongs to the stack.
    dynamodb_create_table: bool | None = None
    redis_url: str | None = None

    # --- inference
    inference: Literal["local", "sagemaker"] = "local"
    model_dir: Path = DEFAULT_MODEL_DIR
    model_name: str | None = None
    #: MiB of finished turns' KV caches the local engine keeps, so a session's next turn computes only its new
    #: tokens, not its whole history again (``clawdbot.inference.onnx.prefix_cache``); 0 turns it off.
    prefix_cache_mb: int = Field(default=DEFAULT_PREFIX_CACHE_MB, ge=0)
    #: Generations the local engine runs at once, and chat turns the local server admits at once; more wait their
    #: turn (unset: one per usable CPU, at least 2: past that they only contend for the cores,
    #: ``clawdbot.inference.onnx.runtime.default_generations``, ``clawdbot.traffic.concurrency``).
    generation_concurrency: int | None = Field(default=None, ge=1)
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
    #: When a session no longer fits the context, drop this share of the window more than needed (of the prompt
    #: budget and of ``history_window``), so its next turns start at the same entry and each prompt continues the
    #: last one (which the engine's prefix cache then reuses); 0 keeps the longest tail every turn.
    context_slack: float = Field(default=0.25, ge=0, lt=1)

    # --- queued turns (SQS worker; see docs/queue.md)
    #: The FIFO queue ``POST /v1/sessions/{id}/turns`` enqueues on; unset disables queued turns.
    queue_url: str | None = None
    #: How long a processed turn id is remembered: a redelivery within this window makes no second turn.
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    #: How long a request with an ``Idempotency-Key`` holds its key: a retry meanwhile gets 409, and after a crash
    #: the key frees up this long after the request began (it must outlast the slowest turn).
    idempotency_lock_seconds: int = Field(default=300, ge=1)
    #: SNS topic ARNs a queued turn may name as its reply target (comma-separated); empty allows none.
    reply_topic_arns: str = ""

    # --- traffic control, A/B tests, metrics (docs/traffic.md)
    #: ``auto``: keys are required once any key exists, or from the start when a deploy key is configured or
    #: the server is bound beyond loopback; ``required``: always.
    auth: Literal["auto", "required"] = "auto"
    #: The address the local server binds (``clawdbot serve --host`` sets it); ``auth=auto`` looks at it.
    bind_host: str = "127.0.0.1"
    #: How long a process trusts what it read about a key; a revocation takes at most this long to apply.
    key_cache_seconds: float = Field(default=10.0, ge=0)
    #: SHA-256 (hex) of the deploy's API key, stored as the first key when first presented (idempotent).
    bootstrap_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    #: Secrets Manager secret holding the deploy's API key (plaintext), imported the same way (by its hash).
    api_key_secret_arn: str | None = None
    #: Local server: requests in flight at once (0 = no cap; on Lambda reserved concurrency caps instead).
    max_concurrency: int = Field(default=64, ge=0)
    #: Requests allowed to wait for a slot; beyond that, or after queue_timeout_seconds, 503.
    max_queue: int = Field(default=256, ge=0)
    queue_timeout_seconds: float = Field(default=30.0, ge=0)
    #: A/B arms, as JSON: ``[{"name": "a", "weight": 1}, {"name": "b", "weight": 1, "temperature": 0.7}]``.
    ab_variants: list[VariantConfig] = Field(default_factory=list)
    #: Salt of the assignment hash: a new experiment name reshuffles sessions.
    ab_experiment: str = "default"
    #: A conversation idle this long (with at least one reply) counts as completed.
    conversation_idle_seconds: int = Field(default=1800, ge=60)
    #: Latency guard: this many consecutive turns slower than the threshold emit ``LatencyBreach``.
    latency_threshold_ms: float = Field(default=10_000.0, gt=0)
    latency_breach_turns: int = Field(default=5, ge=1)
    #: ``auto``: Powertools EMF on Lambda, Prometheus (``/metrics``) elsewhere.
    metrics: Literal["auto", "prometheus", "emf", "off"] = "auto"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process (cold start); tests build ``Settings(...)`` directly instead."""
    return Settings()
