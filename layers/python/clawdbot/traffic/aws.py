"""AWS clients for the traffic engines, created on first use by each engine (which keeps its own).

boto3 finds a local endpoint (DynamoDB Local) through its own ``AWS_ENDPOINT_URL_DYNAMODB`` variable.
"""

from __future__ import annotations

from typing import Any


def dynamodb_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 3},
                                                  connect_timeout=2, read_timeout=5))


def read_secret(secret_id: str) -> str:
    """A Secrets Manager secret's string (the deploy's API key); read at cold start, and after a SnapStart restore."""
    import boto3

    return str(boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])
