"""The DynamoDB session store: one table, one item per transcript entry.

Key layout (``pk``/``sk`` strings, schema in ``sessions.factory.ensure_dynamodb_table`` and the CDK stack)::

    pk = SESSION#<id>   sk = META                      created_at, updated_at, next_seq, gen, owner?,
                                                       expires_at?, attrs (map: attribute name -> JSON)
    pk = SESSION#<id>   sk = TURN#<seq, 12 digits>     seq, role, content | content_z, created_at, gen,
                                                       turn_id?, attributes (JSON), expires_at?

Why this shape:

* Item per entry: no session approaches the 400 KB item limit however long it gets, and a turn costs the same
  whatever the history length (the context window is one ``Query``, newest first, ``Limit`` = window).
* Append = one ``TransactWriteItems``: update META with ``next_seq = :expected`` as its condition and put each TURN
  item with ``attribute_not_exists``. Two racing turns can never take the same sequence; the loser re-reads META
  (from the cancellation reason, no extra read) and retries with jittered backoff, then fails with
  ``AppendConflictError``. Threads of one process take a striped lock per session first, so the retries are
  spent only on writers in other processes.
* ``gen`` (a random token per incarnation of a session id) keeps a re-created session (after delete or expiry)
  from ever seeing, or being blocked for long by, entries of the previous one while those are being removed.
* TTL: META's ``expires_at`` slides on every use (the base class hides expired sessions at once; DynamoDB's TTL
  deletes them within days). Rewriting every TURN item's TTL on each turn would make turns O(history), so TURN
  items carry a fixed ``expires_at`` = written + ``retention_seconds`` and a session's sliding expiry is capped at
  ``created_at + retention_seconds``: every entry outlives its session, and DynamoDB removes all of them.
* Large entries are stored zlib-compressed (``content_z``); one that cannot fit an item even then is refused with
  a 400 rather than a 500 from DynamoDB.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
import zlib
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from clawdbot.aws_clients import LazyClient
from clawdbot.exceptions import InvalidRequestError
from clawdbot.sessions.base import SessionStore, StoreConfig
from clawdbot.sessions.exceptions import (
    AppendConflictError,
    SessionExistsError,
    SessionNotFoundError,
    StoreUnavailableError,
)
from clawdbot.sessions.types import EntryPage, SessionMeta, TranscriptEntry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from clawdbot.sessions.types import NewEntry

logger = logging.getLogger(__name__)

META_SK = "META"
TURN_PREFIX = "TURN#"
SEQ_DIGITS = 12
#: TransactWriteItems takes 100 items; one of them is META.
MAX_ENTRIES_PER_APPEND = 99
#: Entries above this size are compressed (saves write units too: they are billed per KB).
COMPRESS_OVER_BYTES = 4096
#: DynamoDB's item limit is 400 KB including attribute names; keep a margin for the other attributes.
MAX_ITEM_BYTES = 390_000
#: A transaction may carry at most 4 MB.
MAX_TRANSACTION_BYTES = 4_000_000
DEFAULT_RETENTION_SECONDS = 30 * 24 * 3600
_APPEND_LOCK_STRIPES = 64

_UNAVAILABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "ResourceNotFoundException", "ThrottlingError",
})


def _pk(session_id: str) -> dict[str, str]:
    return {"S": f"SESSION#{session_id}"}


def _sk(seq: int) -> dict[str, str]:
    return {"S": f"{TURN_PREFIX}{seq:0{SEQ_DIGITS}d}"}


def _n(value: float | int) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _meta_from_item(session_id: str, item: dict[str, Any]) -> SessionMeta:
    return SessionMeta(
        session_id=session_id,
        created_at=float(item["created_at"]["N"]),
        updated_at=float(item["updated_at"]["N"]),
        next_seq=int(item["next_seq"]["N"]),
        owner=item["owner"]["S"] if "owner" in item else None,
        expires_at=int(item["expires_at"]["N"]) if "expires_at" in item else None,
        attributes={k: json.loads(v["S"]) for k, v in item.get("attrs", {}).get("M", {}).items()},
    )


def _entry_from_item(item: dict[str, Any]) -> TranscriptEntry:
    packed = item.get("content_z")
    content = zlib.decompress(packed["B"]).decode() if packed else item["content"]["S"]
    return TranscriptEntry(
        seq=int(item["seq"]["N"]),
        role=item["role"]["S"],
        content=content,
        created_at=float(item["created_at"]["N"]),
        turn_id=item["turn_id"]["S"] if "turn_id" in item else None,
        attributes=json.loads(item["attributes"]["S"]),
    )


def _item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's size rule: attribute names plus values (strings and binaries by length, numbers ~21 B)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        if "S" in value:
            size += len(value["S"].encode())
        elif "B" in value:
            size += len(value["B"])
        elif "N" in value:
            size += 21
        else:
            size += len(_dumps(value).encode())
    return size


def _client_config() -> Any:
    """One pooled connection per request thread (up to 64), a read timeout well above a transaction's latency."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10,
                  max_pool_connections=64)


class DynamoDBSessionStore(SessionStore):
    """Sessions in a DynamoDB table (see the module docstring for the item layout).

    ``client`` is a botocore (or boto3) DynamoDB client (created on first use from the environment when omitted:
    region, credentials and ``AWS_ENDPOINT_URL_DYNAMODB`` follow the SDK's own conventions).
    """

    def __init__(self, table_name: str, config: StoreConfig | None = None, *, client: Any | None = None,
                 retention_seconds: int | None = DEFAULT_RETENTION_SECONDS, max_attempts: int = 100,
                 retry_budget_s: float = 10.0, backoff_base_s: float = 0.005, backoff_cap_s: float = 0.25) -> None:
        super().__init__(config)
        self.table_name = table_name
        self._client = LazyClient("dynamodb", _client_config, client=client)  # made on first use, not at import
        self.retention_seconds = retention_seconds
        #: A losing append retries until either bound is reached, then raises ``AppendConflictError``.
        self.max_attempts = max_attempts
        self.retry_budget_s = retry_budget_s
        # Appends to one session from threads of this process queue here instead of racing through DynamoDB:
        # optimistic retries are for writers in other processes (Lambdas), and 50 threads retrying against
        # each other would waste most of their transactions. Striped, so memory stays bounded.
        self._append_locks = [threading.Lock() for _ in range(_APPEND_LOCK_STRIPES)]
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s

    @property
    def client(self) -> Any:
        return self._client.get()

    def prime(self) -> None:
        self._client.get()

    # ----------------------------------------------------------------- errors
    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Throttling, an unreachable endpoint or a missing table become a 503, not a 500."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _UNAVAILABLE_CODES:
                raise StoreUnavailableError(f"DynamoDB table {self.table_name} unavailable: {code}") from exc
            raise
        except BotoCoreError as exc:  # connection refused, timeouts, no credentials
            raise StoreUnavailableError(f"DynamoDB unreachable: {type(exc).__name__}") from exc

    # ----------------------------------------------------------------- helpers
    def _capped_expiry(self, expires_at: int | None, created_at: float) -> int | None:
        """The sliding expiry, never past ``created_at + retention`` (when every TURN item is deleted)."""
        if expires_at is None or self.retention_seconds is None:
            return expires_at
        return min(expires_at, int(created_at) + self.retention_seconds)

    def _turn_expiry(self, now: float) -> int | None:
        if self.config.ttl_seconds is None or self.retention_seconds is None:
            return None
        return int(now) + self.retention_seconds

    def _get_item(self, session_id: str) -> dict[str, Any] | None:
        with self._errors():
            resp = self.client.get_item(TableName=self.table_name, Key={"pk": _pk(session_id), "sk": {"S": META_SK}},
                                        ConsistentRead=True)
        return resp.get("Item")

    def _meta_item(self, session_id: str, owner: str | None, attributes: dict[str, Any], now: float,
                   expires_at: int | None) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": _pk(session_id), "sk": {"S": META_SK},
            "created_at": _n(now), "updated_at": _n(now), "next_seq": _n(0),
            "gen": {"S": secrets.token_hex(6)},
            "attrs": {"M": {k: {"S": _dumps(v)} for k, v in attributes.items()}},
        }
        if owner is not None:
            item["owner"] = {"S": owner}
        if expires_at is not None:
            item["expires_at"] = _n(self._capped_expiry(expires_at, now) or expires_at)
        return item

    def _turn_item(self, session_id: str, gen: str, seq: int, entry: NewEntry, now: float) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": _pk(session_id), "sk": _sk(seq), "seq": _n(seq), "gen": {"S": gen},
            "role": {"S": entry.role}, "created_at": _n(now), "attributes": {"S": _dumps(entry.attributes)},
        }
        raw = entry.content.encode()
        if len(raw) > COMPRESS_OVER_BYTES:
            item["content_z"] = {"B": zlib.compress(raw, 6)}
        else:
            item["content"] = {"S": entry.content}
        if entry.turn_id is not None:
            item["turn_id"] = {"S": entry.turn_id}
        turn_expiry = self._turn_expiry(now)
        if turn_expiry is not None:
            item["expires_at"] = _n(turn_expiry)
        if _item_bytes(item) > MAX_ITEM_BYTES:
            raise InvalidRequestError(
                f"A message is too large to store ({len(raw)} bytes, {_item_bytes(item)} compressed).",
                param="messages", code="entry_too_large")
        return item

    def _purge(self, session_id: str, gen: str | None) -> int:
        """Delete the TURN items of one incarnation (``gen``; all of them when None). O(entries): only run when
        a session is deleted or an expired id is reused."""
        pk = _pk(session_id)
        keys: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :turn)",
            "ExpressionAttributeValues": {":pk": pk, ":turn": {"S": TURN_PREFIX}},
            "ProjectionExpression": "pk, sk, gen",
            "ConsistentRead": True,
        }
        with self._errors():
            while True:
                resp = self.client.query(**kwargs)
                keys.extend({"pk": i["pk"], "sk": i["sk"]} for i in resp["Items"]
                            if gen is None or i.get("gen", {}).get("S") == gen)
                if "LastEvaluatedKey" not in resp:
                    break
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
            for start in range(0, len(keys), 25):
                pending = {self.table_name: [{"DeleteRequest": {"Key": k}} for k in keys[start:start + 25]]}
                for attempt in range(10):
                    resp = self.client.batch_write_item(RequestItems=pending)
                    pending = resp.get("UnprocessedItems") or {}
                    if not pending:
                        break
                    self._sleep(attempt)
                else:
                    raise StoreUnavailableError("DynamoDB kept throttling the deletion of a session's entries")
        logger.debug("purged %d entries of session %s (gen %s)", len(keys), session_id, gen)
        return len(keys)

    def _sleep(self, attempt: int) -> None:
        """Full-jitter exponential backoff: racing writers spread out instead of colliding again."""
        time.sleep(random.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2 ** attempt)))

    def _refresh(self, session_id: str) -> dict[str, Any] | None:
        """Slide a live session's expiry (a read counts as use) and return its metadata; None if missing or
        expired. One UpdateItem (1 write unit), no read."""
        now = time.time()
        item = None
        if self.config.ttl_seconds is not None:
            new_expiry = self._expiry(now)
            condition = "attribute_exists(pk) AND expires_at > :now"
            values: dict[str, Any] = {":now": _n(int(now)), ":exp": _n(new_expiry or 0)}
            if self.retention_seconds is not None:  # never past created_at + retention (see module docstring)
                condition += " AND created_at >= :oldest"
                values[":oldest"] = _n((new_expiry or 0) - self.retention_seconds)
            from botocore.exceptions import ClientError

            try:
                with self._errors():
                    item = self.client.update_item(
                        TableName=self.table_name, Key={"pk": _pk(session_id), "sk": {"S": META_SK}},
                        UpdateExpression="SET expires_at = :exp", ConditionExpression=condition,
                        ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
                    )["Attributes"]
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
        if item is None:  # no TTL, missing, expired, or at its retention cap: read it plainly
            item = self._get_item(session_id)
            if item is None:
                return None
        return None if self._expired(_meta_from_item(session_id, item), now) else item

    def _query_turns(self, session_id: str, gen: str, limit: int, *, newest_first: bool,
                     after: int | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` TURN items of incarnation ``gen``, following pages past DynamoDB's 1 MB per call."""
        lo = TURN_PREFIX + "0" * SEQ_DIGITS if after is None else _sk(after + 1)["S"]
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {":pk": _pk(session_id), ":lo": {"S": lo},
                                          ":hi": {"S": TURN_PREFIX + "9" * SEQ_DIGITS}},
            "ScanIndexForward": not newest_first,
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        with self._errors():
            while len(items) < limit:
                kwargs["Limit"] = limit - len(items)
                resp = self.client.query(**kwargs)
                items.extend(i for i in resp["Items"] if i["gen"]["S"] == gen)
                if "LastEvaluatedKey" not in resp:
                    break
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return items[:limit]

    # ----------------------------------------------------------------- engine primitives
    def _create(self, session_id: str, owner: str | None, attributes: dict[str, Any], now: float,
                expires_at: int | None) -> SessionMeta:
        from botocore.exceptions import ClientError

        old = self._get_item(session_id)
        if old is not None:
            if not self._expired(_meta_from_item(session_id, old), now):
                raise SessionExistsError(f"Session '{session_id}' already exists.", param="session_id")
            self._purge(session_id, old["gen"]["S"])
        item = self._meta_item(session_id, owner, attributes, now, expires_at)
        # Replace nothing but the expired incarnation just purged.
        condition: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(pk)"} if old is None
            else {"ConditionExpression": "gen = :old", "ExpressionAttributeValues": {":old": old["gen"]}}
        )
        try:
            with self._errors():
                self.client.put_item(TableName=self.table_name, Item=item, **condition)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise SessionExistsError(f"Session '{session_id}' already exists.", param="session_id") from exc
            raise
        return _meta_from_item(session_id, item)

    def _get_meta(self, session_id: str) -> SessionMeta | None:
        item = self._get_item(session_id)
        return None if item is None else _meta_from_item(session_id, item)

    def _append(self, session_id: str, entries: list[NewEntry], now: float, expires_at: int | None,
                create: bool, owner: str | None) -> list[TranscriptEntry]:
        if len(entries) > MAX_ENTRIES_PER_APPEND:
            raise InvalidRequestError(
                f"At most {MAX_ENTRIES_PER_APPEND} messages can be stored in one turn.", param="messages",
                code="too_many_messages")
        with self._append_locks[hash(session_id) % _APPEND_LOCK_STRIPES]:
            return self._append_optimistic(session_id, entries, now, expires_at, create, owner)

    def _append_optimistic(self, session_id: str, entries: list[NewEntry], now: float, expires_at: int | None,
                           create: bool, owner: str | None) -> list[TranscriptEntry]:
        from botocore.exceptions import ClientError

        item = self._get_item(session_id)
        deadline = time.monotonic() + self.retry_budget_s
        for attempt in range(self.max_attempts):
            if attempt and time.monotonic() > deadline:
                break
            meta = None if item is None else _meta_from_item(session_id, item)
            fresh = meta is None or self._expired(meta, now)
            if fresh:
                if not create:
                    raise SessionNotFoundError(f"No session with id '{session_id}'.", param="session_id")
                if item is not None:  # an expired incarnation: its entries go before the id is reused
                    self._purge(session_id, item["gen"]["S"])
                meta_item = self._meta_item(session_id, owner, {}, now, expires_at)
                gen, start, created_at = meta_item["gen"]["S"], 0, now
                meta_item["next_seq"] = _n(len(entries))
                meta_op: dict[str, Any] = {"Put": {
                    "TableName": self.table_name, "Item": meta_item,
                    "ConditionExpression": "attribute_not_exists(pk)" if item is None else "gen = :old",
                    **({} if item is None else {"ExpressionAttributeValues": {":old": item["gen"]}}),
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }}
            else:
                assert meta is not None and item is not None
                gen, start, created_at = item["gen"]["S"], meta.next_seq, meta.created_at
                new_expiry = self._capped_expiry(expires_at, created_at)
                values: dict[str, Any] = {":expected": _n(start), ":next": _n(start + len(entries)),
                                          ":now": _n(now), ":gen": {"S": gen}}
                update = "SET next_seq = :next, updated_at = :now"
                if new_expiry is not None:
                    update += ", expires_at = :exp"
                    values[":exp"] = _n(new_expiry)
                meta_op = {"Update": {
                    "TableName": self.table_name, "Key": {"pk": _pk(session_id), "sk": {"S": META_SK}},
                    "UpdateExpression": update, "ConditionExpression": "next_seq = :expected AND gen = :gen",
                    "ExpressionAttributeValues": values, "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }}
            turn_items = [self._turn_item(session_id, gen, start + i, e, now) for i, e in enumerate(entries)]
            if sum(map(_item_bytes, turn_items)) > MAX_TRANSACTION_BYTES:
                raise InvalidRequestError("The messages of this turn are too large to store together.",
                                          param="messages", code="entry_too_large")
            ops = [meta_op] + [{"Put": {"TableName": self.table_name, "Item": t,
                                        "ConditionExpression": "attribute_not_exists(pk)"}} for t in turn_items]
            try:
                with self._errors():
                    self.client.transact_write_items(TransactItems=ops)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                reasons = exc.response.get("CancellationReasons") or []
                codes = [r.get("Code", "None") for r in reasons]
                if "ThrottlingError" in codes:
                    raise StoreUnavailableError("DynamoDB is throttling appends") from exc
                logger.debug("append to %s lost a race (attempt %d): %s", session_id, attempt + 1, codes)
                if reasons and codes[0] == "ConditionalCheckFailed" and "Item" in reasons[0]:
                    item = reasons[0]["Item"]  # the winner's META, from the failure itself: no extra read
                elif reasons and codes[0] == "ConditionalCheckFailed":
                    item = None  # META vanished (deleted) under us
                else:
                    if any(c == "ConditionalCheckFailed" for c in codes[1:]):
                        # A TURN slot is still held by a deleted/expired incarnation: clear its leftovers.
                        self._purge_stale(session_id, gen)
                    item = self._get_item(session_id)
                self._sleep(attempt)
                continue
            return [
                TranscriptEntry(seq=start + i, role=e.role, content=e.content, created_at=now, turn_id=e.turn_id,
                                attributes=dict(e.attributes))
                for i, e in enumerate(entries)
            ]
        raise AppendConflictError(
            f"Too many concurrent writes to session '{session_id}'; retry the request.", param="session_id")

    def _purge_stale(self, session_id: str, current_gen: str) -> None:
        stale = self._query_stale_gens(session_id, current_gen)
        for gen in stale:
            self._purge(session_id, gen)

    def _query_stale_gens(self, session_id: str, current_gen: str) -> set[str]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :turn)",
            "ExpressionAttributeValues": {":pk": _pk(session_id), ":turn": {"S": TURN_PREFIX}},
            "ProjectionExpression": "gen", "ConsistentRead": True,
        }
        gens: set[str] = set()
        with self._errors():
            while True:
                resp = self.client.query(**kwargs)
                gens.update(i["gen"]["S"] for i in resp["Items"])
                if "LastEvaluatedKey" not in resp:
                    break
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        gens.discard(current_gen)
        return gens

    def _read(self, session_id: str, after: int | None, limit: int) -> EntryPage:
        meta_item = self._refresh(session_id)
        if meta_item is None:
            return EntryPage(entries=[], next_after=None)
        items = self._query_turns(session_id, meta_item["gen"]["S"], limit + 1, newest_first=False, after=after)
        page = [_entry_from_item(i) for i in items[:limit]]
        return EntryPage(entries=page, next_after=page[-1].seq if len(items) > limit else None)

    def _read_recent(self, session_id: str, limit: int) -> list[TranscriptEntry]:
        meta_item = self._refresh(session_id)
        if meta_item is None:
            return []
        items = self._query_turns(session_id, meta_item["gen"]["S"], limit, newest_first=True)
        return [_entry_from_item(i) for i in reversed(items)]

    def _delete(self, session_id: str) -> bool:
        with self._errors():
            old = self.client.delete_item(
                TableName=self.table_name, Key={"pk": _pk(session_id), "sk": {"S": META_SK}}, ReturnValues="ALL_OLD",
            ).get("Attributes")
        if old is None:
            return False
        self._purge(session_id, old["gen"]["S"])
        return not self._expired(_meta_from_item(session_id, old))

    def _update_attributes(self, session_id: str, attributes: dict[str, Any], now: float) -> SessionMeta:
        from botocore.exceptions import ClientError

        if not attributes:
            return self.get(session_id)
        names = {f"#a{i}": k for i, k in enumerate(attributes)}
        values: dict[str, Any] = {f":a{i}": {"S": _dumps(v)} for i, v in enumerate(attributes.values())}
        values[":now"] = _n(now)
        sets = ", ".join(f"attrs.#a{i} = :a{i}" for i in range(len(attributes)))
        condition = "attribute_exists(pk)"
        if self.config.ttl_seconds is not None:
            condition += " AND expires_at > :nowi"
            values[":nowi"] = _n(int(now))
        try:
            with self._errors():
                item = self.client.update_item(
                    TableName=self.table_name, Key={"pk": _pk(session_id), "sk": {"S": META_SK}},
                    UpdateExpression=f"SET {sets}, updated_at = :now", ConditionExpression=condition,
                    ExpressionAttributeNames=names, ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
                )["Attributes"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise SessionNotFoundError(f"No session with id '{session_id}'.", param="session_id") from exc
            raise
        return _meta_from_item(session_id, item)
