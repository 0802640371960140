"""AWS clients for the traffic engines, created on first use by each engine (which keeps its own).

botocore finds a local endpoint (DynamoDB Local) through its own ``AWS_ENDPOINT_URL_DYNAMODB`` variable.
"""

from __future__ import annotations

from typing import Any

from clawdbot.aws_clients import make_client


def dynamodb_client() -> Any:
    from botocore.config import Config

    return make_client("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 3},
                                                 connect_timeout=2, read_timeout=5))


def read_secret(secret_id: str) -> str:
    """A Secrets Manager secret's string (the deploy's API key); read at cold start, and after a SnapStart restore."""
    return str(make_client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])
