"""The deploy's API key: imported into the key store the first time it is presented, not at every cold start.

The stack gives ``chat_api`` its key as a Secrets Manager secret (``CLAWDBOT_API_KEY_SECRET_ARN``); a server may
be given its SHA-256 instead (``CLAWDBOT_BOOTSTRAP_KEY_SHA256``). Importing it at init cost every cold start a
Secrets Manager client, a ``GetSecretValue`` and a DynamoDB ``GetItem`` (the key is there after the first one),
for a key that is almost always already stored. Here it is looked at only when a presented key is not in the
store: if that key is the deploy's, it is imported (``KeyStore.import_hash``: idempotent, and a revoked deploy key
stays revoked) and admitted. So an environment whose callers' keys are all stored never reads the secret.

The secret's hash is kept for ``refresh_seconds``: a key rotated in Secrets Manager (a redeploy with a new key
changes only the secret, not the function) is accepted by running environments within that long, and a flood of
unknown keys reads the secret at most once per period. A failed read is retried after ``RETRY_SECONDS``; until
then unknown keys are answered 503 (whether one is the deploy's cannot be told), not 401.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from clawdbot.exceptions import ServiceUnavailableError
from clawdbot.traffic.keys import hash_key, hashes_match, looks_like_sha256

if TYPE_CHECKING:
    from collections.abc import Callable

    from clawdbot.traffic.keys import ApiKey
    from clawdbot.traffic.keystore.base import KeyStore

logger = logging.getLogger(__name__)

#: The name the deploy's key is stored under (``clawdbot keys list``).
DEPLOY_KEY_NAME = "deploy"
#: How long a read of the secret is trusted.
REFRESH_SECONDS = 60.0
#: How long after a failed read of the secret the next one is tried.
RETRY_SECONDS = 5.0


class DeployKey:
    """The deploy key's expected hashes (the given one, the secret's), and its import on first presentation.

    Thread-safe: lookups run on request threads; one of them reads the secret while the others wait for it.
    """

    def __init__(self, *, key_hash: str | None = None, secret_arn: str | None = None,
                 read_secret: Callable[[str], str] | None = None, refresh_seconds: float = REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if key_hash is None and secret_arn is None:
            raise ValueError("a deploy key needs its hash or its secret")
        self.key_hash = key_hash.strip().lower() if key_hash else None
        if self.key_hash is not None and not looks_like_sha256(self.key_hash):  # a deployment mistake: fail at start
            raise ValueError("CLAWDBOT_BOOTSTRAP_KEY_SHA256 must be the key's SHA-256: 64 hex characters")
        self.secret_arn = secret_arn
        self.refresh_seconds = refresh_seconds
        self._read_secret = read_secret
        self._clock = clock
        self._lock = threading.Lock()
        self._secret_hash: str | None = None
        self._read_at = -float("inf")
        self._failed_at = -float("inf")

    def admit(self, keys: KeyStore, plaintext: str) -> ApiKey | None:
        """The stored record of ``plaintext`` if it is the deploy key (imported now if missing) and active;
        ``None`` for any other key. Call it for a key the store does not have."""
        presented = hash_key(plaintext)
        # The given hash first: a key that matches it never waits for (or fails with) the secret.
        if self.key_hash is not None and hashes_match(self.key_hash, presented):
            return self._import(keys, self.key_hash)
        if self.secret_arn is not None and hashes_match(expected := self._secret(), presented):
            return self._import(keys, expected)
        return None

    def forget(self) -> None:
        """Drop the secret's hash read so far (after a SnapStart restore: the secret may have changed since)."""
        with self._lock:
            self._secret_hash = None
            self._read_at = self._failed_at = -float("inf")

    @staticmethod
    def _import(keys: KeyStore, key_hash: str) -> ApiKey | None:
        record = keys.import_hash(key_hash, name=DEPLOY_KEY_NAME)
        return record if record.active else None

    def _secret(self) -> str:
        with self._lock:
            now = self._clock()
            if self._secret_hash is not None and now - self._read_at < self.refresh_seconds:
                return self._secret_hash
            if now - self._failed_at < RETRY_SECONDS:
                raise self._unavailable()
            try:
                plaintext = self._reader()(self.secret_arn or "")
            except Exception as exc:
                self._failed_at = now
                logger.warning("the deploy key's secret cannot be read", exc_info=True)
                raise self._unavailable() from exc
            self._secret_hash, self._read_at = hash_key(plaintext.strip()), now
            logger.info("deploy key read from its secret")
            return self._secret_hash

    def _reader(self) -> Callable[[str], str]:
        if self._read_secret is None:
            from clawdbot.traffic.aws import read_secret

            self._read_secret = read_secret
        return self._read_secret

    @staticmethod
    def _unavailable() -> ServiceUnavailableError:
        return ServiceUnavailableError("API keys cannot be checked right now; please retry shortly.",
                                       code="traffic_control_unavailable",
                                       headers={"retry-after": str(int(RETRY_SECONDS))})
