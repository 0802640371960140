"""The deploy's key: imported the first time it is presented (on every key store engine), read from a real
Secrets Manager (moto's server) at most once per refresh period, and a rotated secret accepted after it."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import boto3
import pytest

from clawdbot.exceptions import ServiceUnavailableError
from clawdbot.traffic import aws as traffic_aws
from clawdbot.traffic.deploy_key import DEPLOY_KEY_NAME, RETRY_SECONDS, DeployKey
from clawdbot.traffic.keys import hash_key
from tests.fixtures.servers import FAKE_AWS_ENV

if TYPE_CHECKING:
    from collections.abc import Iterator

    from clawdbot.traffic.keystore.base import KeyStore

DEPLOY = "cb-operator-chosen-deploy-key-0123456789"


class Clock:
    """A monotonic clock the test moves by hand (the refresh and retry periods)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_deploy_key_is_stored_only_once_presented_and_a_revoked_one_stays_revoked(key_store: KeyStore) -> None:
    deploy = DeployKey(key_hash=hash_key(DEPLOY))
    # GIVEN a store without the deploy key: another key presented is refused and stores nothing
    assert deploy.admit(key_store, "cb-someone-else-0123456789") is None
    assert key_store.list(include_revoked=True) == []
    # WHEN the deploy key is presented
    record = deploy.admit(key_store, DEPLOY)
    # THEN it is admitted and stored under the name "deploy", once
    assert record is not None and record.active and record.name == DEPLOY_KEY_NAME
    assert key_store.authenticate(DEPLOY) == record
    assert deploy.admit(key_store, DEPLOY) == record
    assert [k.key_id for k in key_store.list()] == [record.key_id]
    # AND once revoked, presenting it again does not bring it back
    key_store.revoke(record.key_id)
    assert deploy.admit(key_store, DEPLOY) is None
    assert key_store.authenticate(DEPLOY) is None and not key_store.list()


@pytest.fixture
def secret(sqs_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[str]:
    """A deploy key secret in moto's Secrets Manager, read by the library's own client (its endpoint from
    ``AWS_ENDPOINT_URL_SECRETS_MANAGER``, as boto3 finds any)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", sqs_server)
    client = boto3.client("secretsmanager", endpoint_url=sqs_server, region_name=FAKE_AWS_ENV["AWS_REGION"])
    arn = client.create_secret(Name=f"clawdbot-deploy-{request.node.name[:40]}", SecretString=DEPLOY)["ARN"]
    traffic_aws._secrets.close()  # the library's client is made from the environment above
    try:
        yield arn
    finally:
        traffic_aws._secrets.close()
        client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        client.close()


def test_a_secret_is_read_once_per_period_and_a_rotated_key_is_accepted_after_it(
        secret: str, sqs_server: str, key_store: KeyStore) -> None:
    reads: list[str] = []

    def read(arn: str) -> str:
        reads.append(arn)
        return traffic_aws.read_secret(arn)

    clock = Clock()
    deploy = DeployKey(secret_arn=secret, read_secret=read, refresh_seconds=60.0, clock=clock)
    # GIVEN the deploy key admitted from its secret, and a flood of unknown keys: one read of the secret
    assert deploy.admit(key_store, DEPLOY) is not None
    for n in range(20):
        assert deploy.admit(key_store, f"cb-unknown-{n:04d}-0123456789") is None
    assert reads == [secret]
    # WHEN the operator rotates the key in the secret
    rotated = "cb-rotated-deploy-key-9876543210"
    with contextlib.closing(boto3.client("secretsmanager", endpoint_url=sqs_server,
                                         region_name=FAKE_AWS_ENV["AWS_REGION"])) as client:
        client.put_secret_value(SecretId=secret, SecretString=rotated)
    # THEN the new key is refused until the period is over, then read and admitted
    assert deploy.admit(key_store, rotated) is None
    clock.now += 61
    record = deploy.admit(key_store, rotated)
    assert record is not None and record.name == DEPLOY_KEY_NAME and len(reads) == 2
    assert key_store.authenticate(rotated) == record


def test_an_unreadable_secret_is_a_503_and_is_not_read_again_at_once(key_store: KeyStore) -> None:
    reads: list[str] = []

    def unreachable(arn: str) -> str:
        reads.append(arn)
        raise ConnectionError("Secrets Manager is down")

    clock = Clock()
    deploy = DeployKey(secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:gone", read_secret=unreachable,
                       clock=clock)
    for _ in range(5):
        with pytest.raises(ServiceUnavailableError) as raised:
            deploy.admit(key_store, DEPLOY)
        assert raised.value.headers["retry-after"] == str(int(RETRY_SECONDS))
    assert len(reads) == 1 and key_store.list(include_revoked=True) == []
    clock.now += RETRY_SECONDS
    with pytest.raises(ServiceUnavailableError):
        deploy.admit(key_store, DEPLOY)
    assert len(reads) == 2


def test_with_a_hash_and_a_secret_the_hash_never_waits_for_the_secret(key_store: KeyStore) -> None:
    reads: list[str] = []

    def unreachable(arn: str) -> str:
        reads.append(arn)
        raise ConnectionError("Secrets Manager is down")

    deploy = DeployKey(key_hash=hash_key(DEPLOY), secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:x",
                       read_secret=unreachable)
    # the key given by its hash is admitted without reading the secret, even while the secret cannot be read
    record = deploy.admit(key_store, DEPLOY)
    assert record is not None and record.name == DEPLOY_KEY_NAME and reads == []
    # another key may be the secret's: that one needs the secret, and says it is unavailable
    with pytest.raises(ServiceUnavailableError):
        deploy.admit(key_store, "cb-maybe-the-secrets-key-0123456789")
    assert len(reads) == 1


def test_a_deploy_key_needs_its_hash_or_its_secret_and_a_hash_must_be_one() -> None:
    with pytest.raises(ValueError, match="hash or its secret"):
        DeployKey()
    with pytest.raises(ValueError, match="64 hex characters"):
        DeployKey(key_hash="not-a-sha256")
    assert DeployKey(key_hash=hash_key(DEPLOY).upper()).key_hash == hash_key(DEPLOY)
