"""AWS clients of the library: botocore clients from one botocore session per process, made on first use.

Why botocore and not ``boto3.client``: every AWS call here is a low-level client call, which boto3 hands to botocore
unchanged, but importing boto3 imports s3transfer (its S3 transfer manager) and boto3's resource machinery with it:
~20 ms of a Lambda cold start spent on code no handler runs (``bench.coldstart``: chat_api 482 -> 464 ms).
botocore reads the same configuration (``AWS_DEFAULT_REGION``, which Lambda sets, credentials,
``AWS_ENDPOINT_URL_<SERVICE>`` for the local stand-ins), so the clients are the ones ``boto3.client`` would give.

Why one session behind a lock: a botocore session caches the service models it loaded (a second DynamoDB client
does not parse the model again) but creating clients from it is not thread-safe, and the stores make theirs from
request threads.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from botocore.config import Config

_lock = threading.Lock()
_session: Any = None


def make_client(service: str, config: Config | None = None, region_name: str | None = None) -> Any:
    """A new botocore client for ``service`` (``"dynamodb"``, ``"sqs"``, ...), configured from the environment."""
    global _session
    import botocore.session

    with _lock:
        if _session is None:
            _session = botocore.session.get_session()
        return _session.create_client(service, region_name=region_name, config=config)


class LazyClient:
    """One client, made on first :meth:`get` (a cold start that never calls the service pays nothing, not even
    botocore's import), once even when threads race for it; or the client given (tests, a caller's own).

    ``config``: a function that returns the client's ``botocore.config.Config``, called when the client is made.
    """

    def __init__(self, service: str, config: Callable[[], Config] | None = None, region_name: str | None = None,
                 client: Any = None) -> None:
        self.service = service
        self._config = config
        self._region_name = region_name
        self._client = client
        self._lock = threading.Lock()

    @property
    def created(self) -> bool:
        """Whether there is a client now (made or given)."""
        return self._client is not None

    def get(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    config = self._config() if self._config is not None else None
                    self._client = make_client(self.service, config, self._region_name)
                client = self._client
        return client

    def close(self) -> None:
        """Close the client's connections and forget it: the next :meth:`get` makes a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()
