"""AWS clients for the traffic engines, created on first use.

The engines of one app or worker (key store, rate limiter, latency guard) share one DynamoDB client
(:func:`traffic_dynamodb`): they have the same configuration, and one client is one connection pool, so a cold
start makes one client for them instead of three and its first request opens one connection to DynamoDB for the
key and the limit, not one each. The session store keeps its own (longer timeouts, a bigger pool).

botocore finds a local endpoint (DynamoDB Local) through its own ``AWS_ENDPOINT_URL_DYNAMODB`` variable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clawdbot.aws_clients import LazyClient

if TYPE_CHECKING:
    from clawdbot.config.settings import Settings


def _dynamodb_config() -> Any:
    """Short timeouts: a key check or a rate-limit bucket sits in front of every request."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=5)


def lazy_dynamodb_client(client: Any = None) -> LazyClient:
    """A traffic engine's DynamoDB client: ``client`` if given (a shared :class:`LazyClient` is used as it is),
    else its own, made on first use."""
    if isinstance(client, LazyClient):
        return client
    return LazyClient("dynamodb", _dynamodb_config, client=client)


def traffic_dynamodb(settings: Settings) -> LazyClient | None:
    """The DynamoDB client the traffic engines of one app or worker share; ``None`` when they are not on
    DynamoDB."""
    return lazy_dynamodb_client() if settings.session_store == "dynamodb" else None


_secrets = LazyClient("secretsmanager")


def read_secret(secret_id: str) -> str:
    """A Secrets Manager secret's string (the deploy's API key: ``clawdbot.traffic.deploy_key``)."""
    return str(_secrets.get().get_secret_value(SecretId=secret_id)["SecretString"])
