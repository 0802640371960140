"""AWS clients for the traffic engines, created on first use by each engine (which keeps its own).

botocore finds a local endpoint (DynamoDB Local) through its own ``AWS_ENDPOINT_URL_DYNAMODB`` variable.
"""

from __future__ import annotations

from typing import Any

from clawdbot.aws_clients import LazyClient


def _dynamodb_config() -> Any:
    """Short timeouts: a key check or a rate-limit bucket sits in front of every request."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=5)


def lazy_dynamodb_client(client: Any = None) -> LazyClient:
    """A traffic engine's DynamoDB client: ``client`` if given, else made on first use."""
    return LazyClient("dynamodb", _dynamodb_config, client=client)


_secrets = LazyClient("secretsmanager")


def read_secret(secret_id: str) -> str:
    """A Secrets Manager secret's string (the deploy's API key: ``clawdbot.traffic.deploy_key``)."""
    return str(_secrets.get().get_secret_value(SecretId=secret_id)["SecretString"])
