"""DynamoDB-specific behaviour, against DynamoDB Local: item shape, Query paging past 1 MB, the conditional-write
race, capacity per turn, limits and error mapping."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config

from clawdbot.config.settings import Settings
from clawdbot.exceptions import InvalidRequestError
from clawdbot.sessions import NewEntry
from clawdbot.sessions.base import StoreConfig
from clawdbot.sessions.dynamodb import DEFAULT_RETENTION_SECONDS, DynamoDBSessionStore
from clawdbot.sessions.exceptions import AppendConflictError, StoreUnavailableError
from clawdbot.sessions.factory import build_store, local_dynamodb_endpoint
from tests.fixtures.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

READS = {"GetItem", "Query"}
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}


class Meter:
    """Counts a client's calls and the capacity units DynamoDB reports for them (by asking for them)."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.read_units = 0.0
        self.write_units = 0.0
        client.meta.events.register("provide-client-params.dynamodb.*", self._ask)
        client.meta.events.register("after-call.dynamodb.*", self._count)

    @staticmethod
    def _ask(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in READS | WRITES:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _count(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls[model.name] += 1
        consumed = parsed.get("ConsumedCapacity") or []
        units = sum(c["CapacityUnits"] for c in (consumed if isinstance(consumed, list) else [consumed]))
        if model.name in READS:
            self.read_units += units
        else:
            self.write_units += units

    def reset(self) -> None:
        self.calls.clear()
        self.read_units = self.write_units = 0.0


@pytest.fixture
def client(dynamodb_local: str) -> Any:
    """A client of its own per test, so event hooks never leak into other tests."""
    return boto3.client("dynamodb", endpoint_url=dynamodb_local, config=Config(max_pool_connections=32))


@pytest.fixture
def ddb(client: Any, dynamodb_table: tuple[Any, str]) -> Iterator[DynamoDBSessionStore]:
    store = DynamoDBSessionStore(dynamodb_table[1], client=client)
    yield store
    store.close()


def turn(i: int, size: int = 0) -> list[NewEntry]:
    pad = "·" * size
    return [NewEntry("user", f"question {i}{pad}", turn_id=f"t{i}"),
            NewEntry("assistant", f"answer {i}{pad}", turn_id=f"t{i}", attributes={"completion_tokens": 7})]


def turn_items(client: Any, table: str, session_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "KeyConditionExpression": "pk = :pk AND begins_with(sk, :t)",
                              "ExpressionAttributeValues": {":pk": {"S": f"SESSION#{session_id}"},
                                                            ":t": {"S": "TURN#"}}}
    while True:
        resp = client.query(**kwargs)
        items += resp["Items"]
        if "LastEvaluatedKey" not in resp:
            return items
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


# ----------------------------------------------------------------------------------------- table and items
def test_table_has_the_stack_schema(client: Any, dynamodb_table: tuple[Any, str]) -> None:
    table = client.describe_table(TableName=dynamodb_table[1])["Table"]

    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {("pk", "HASH"), ("sk", "RANGE")}
    assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
        ("pk", "S"), ("sk", "S")}
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = client.describe_time_to_live(TableName=dynamodb_table[1])["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_item_per_entry_layout(ddb: DynamoDBSessionStore, client: Any) -> None:
    meta = ddb.create("shape-1", owner="key_7", attributes={"variant": "b"})
    ddb.append("shape-1", [NewEntry("user", "short"), NewEntry("assistant", "long " * 2000, turn_id="t")])

    raw_meta = client.get_item(TableName=ddb.table_name,
                               Key={"pk": {"S": "SESSION#shape-1"}, "sk": {"S": "META"}})["Item"]
    turns = turn_items(client, ddb.table_name, "shape-1")

    assert raw_meta["next_seq"] == {"N": "2"} and raw_meta["owner"] == {"S": "key_7"}
    assert raw_meta["attrs"] == {"M": {"variant": {"S": '"b"'}}}
    assert meta.expires_at is not None and int(raw_meta["expires_at"]["N"]) >= meta.expires_at  # slid by append
    assert [t["sk"]["S"] for t in turns] == ["TURN#000000000000", "TURN#000000000001"]
    assert turns[0]["content"] == {"S": "short"} and "content_z" not in turns[0]
    assert "content" not in turns[1] and len(turns[1]["content_z"]["B"]) < 500  # 10 KB stored compressed
    assert {t["gen"]["S"] for t in turns} == {raw_meta["gen"]["S"]}
    # Entries outlive any session they belong to: written + retention >= the session's capped expiry.
    for t in turns:
        assert int(t["expires_at"]["N"]) == int(float(t["created_at"]["N"])) + DEFAULT_RETENTION_SECONDS


def test_session_expiry_is_capped_by_entry_retention(client: Any, dynamodb_table: tuple[Any, str]) -> None:
    # GIVEN entries kept 100 s and an idle TTL of one day
    store = DynamoDBSessionStore(dynamodb_table[1], StoreConfig(ttl_seconds=86_400), client=client,
                                 retention_seconds=100)

    meta = store.create()
    store.append(meta.session_id, turn(0))

    # THEN the session never outlives its entries, however recently used
    got = store.get(meta.session_id)
    assert got.expires_at is not None and got.expires_at <= int(meta.created_at) + 100
    assert len(store.read_recent(meta.session_id, 10)) == 2  # a capped session still reads
    assert store.get(meta.session_id).expires_at == got.expires_at


def test_delete_removes_every_item(ddb: DynamoDBSessionStore, client: Any) -> None:
    sid = ddb.create().session_id
    for i in range(30):
        ddb.append(sid, turn(i))

    assert ddb.delete(sid) is True

    assert turn_items(client, ddb.table_name, sid) == []


# ----------------------------------------------------------------------------------------- paging past 1 MB
def test_reads_follow_query_pages_past_one_megabyte(ddb: DynamoDBSessionStore, client: Any) -> None:
    # GIVEN 12 entries of ~150 KB that do not compress: 1.8 MB, more than one Query response may carry
    sid = ddb.create().session_id
    blobs = [secrets.token_urlsafe(150_000)[:200_000] for _ in range(12)]
    for i in range(0, 12, 3):
        ddb.append(sid, [NewEntry("user", b) for b in blobs[i:i + 3]])
    meter = Meter(client)

    # WHEN the whole window and the whole listing are read
    window = ddb.read_recent(sid, 12)
    queries_for_window = meter.calls["Query"]
    page = ddb.read(sid, limit=50)

    # THEN nothing is cut short, and DynamoDB did need several pages to deliver it
    assert [e.content for e in window] == blobs
    assert [e.content for e in page.entries] == blobs and page.next_after is None
    assert queries_for_window >= 2
    assert meter.calls["Query"] - queries_for_window >= 2


# ----------------------------------------------------------------------------------------- optimistic concurrency
def race_once(store: DynamoDBSessionStore, rival: DynamoDBSessionStore, session_id: str) -> None:
    """Make ``store``'s next transaction lose: just before it is sent, ``rival`` appends a turn."""
    fired = []

    def interfere(**_: Any) -> None:
        if not fired:
            fired.append(True)
            rival.append(session_id, turn(99))

    store.client.meta.events.register("before-call.dynamodb.TransactWriteItems", interfere)


def test_a_racing_append_is_never_overwritten(ddb: DynamoDBSessionStore, dynamodb_local: str,
                                              dynamodb_table: tuple[Any, str]) -> None:
    rival = DynamoDBSessionStore(dynamodb_table[1], client=boto3.client("dynamodb", endpoint_url=dynamodb_local))
    sid = ddb.create().session_id
    ddb.append(sid, turn(0))
    race_once(ddb, rival, sid)
    meter = Meter(ddb.client)

    mine = ddb.append(sid, turn(1))
    calls = Counter(meter.calls)

    # The rival's turn kept seqs 2-3; ours moved to 4-5 after one retry that needed no extra read: the failed
    # condition itself returned the winner's META.
    assert [e.seq for e in mine] == [4, 5]
    assert calls == Counter({"GetItem": 1, "TransactWriteItems": 2})
    stored = ddb.read(sid).entries
    assert [(e.seq, e.content) for e in stored] == [
        (0, "question 0"), (1, "answer 0"), (2, "question 99"), (3, "answer 99"), (4, "question 1"), (5, "answer 1")]


def test_losing_every_retry_fails_cleanly(client: Any, dynamodb_local: str,
                                          dynamodb_table: tuple[Any, str]) -> None:
    store = DynamoDBSessionStore(dynamodb_table[1], client=client, max_attempts=1)
    rival = DynamoDBSessionStore(dynamodb_table[1], client=boto3.client("dynamodb", endpoint_url=dynamodb_local))
    sid = store.create().session_id
    race_once(store, rival, sid)

    with pytest.raises(AppendConflictError) as info:
        store.append(sid, turn(1))

    assert info.value.status_code == 409
    assert [e.content for e in store.read(sid).entries] == ["question 99", "answer 99"]  # nothing half-written
    assert store.get(sid).next_seq == 2


def test_writers_in_separate_processes_race_without_loss(dynamodb_local: str,
                                                         dynamodb_table: tuple[Any, str]) -> None:
    # GIVEN 10 independent writers (as 10 Lambda environments: own client, own process-local state), 4 turns each,
    # all released at once on one session: only DynamoDB's conditional writes stand between them
    writers = [DynamoDBSessionStore(dynamodb_table[1], client=boto3.client("dynamodb", endpoint_url=dynamodb_local))
               for _ in range(10)]
    meters = [Meter(w.client) for w in writers]
    sid = writers[0].create().session_id
    barrier = threading.Barrier(len(writers))

    def run(w: int) -> None:
        barrier.wait()
        for k in range(4):
            writers[w].append(sid, turn(w * 10 + k))

    with ThreadPoolExecutor(max_workers=len(writers)) as pool:
        list(pool.map(run, range(len(writers))))

    # THEN all 40 turns are stored once, pairwise, gap-free, although transactions did collide
    stored = writers[0].read(sid, limit=500).entries
    assert [e.seq for e in stored] == list(range(80))
    assert all(stored[i].turn_id == stored[i + 1].turn_id for i in range(0, 80, 2))
    assert sorted(e.content for e in stored[::2]) == sorted(f"question {w * 10 + k}" for w in range(10)
                                                           for k in range(4))
    assert sum(m.calls["TransactWriteItems"] for m in meters) > 40  # the race really happened


# ----------------------------------------------------------------------------------------- cost per turn
def test_a_turn_costs_the_same_whatever_the_history_length(ddb: DynamoDBSessionStore, client: Any) -> None:
    # GIVEN two sessions with 198 and 1980 entries of ~200 bytes (both longer than the window)
    short, long_ = ddb.create().session_id, ddb.create().session_id
    for sid, batches in ((short, 2), (long_, 20)):
        for b in range(batches):
            ddb.append(sid, [NewEntry("user", f"{b}-{i}" + "x" * 200) for i in range(99)])
    meter = Meter(client)

    def one_turn(sid: str) -> tuple[float, float, Counter[str]]:
        # what the chat service does per turn: check the session, read the context window, append the turn
        meter.reset()
        ddb.get(sid)
        ddb.read_recent(sid, 64)
        ddb.append(sid, turn(1, size=100))
        return meter.read_units, meter.write_units, Counter(meter.calls)

    # THEN reads, writes and calls are identical: O(1) in history length
    assert one_turn(short) == one_turn(long_)
    reads, writes, calls = one_turn(long_)
    assert calls == Counter({"GetItem": 2, "Query": 1, "UpdateItem": 1, "TransactWriteItems": 1})
    print(f"\nDynamoDB units per turn (64-entry window of ~220 B entries): read={reads} write={writes}")


# ----------------------------------------------------------------------------------------- limits and errors
def test_oversized_input_is_a_client_error_and_stores_nothing(ddb: DynamoDBSessionStore) -> None:
    sid = ddb.create().session_id

    with pytest.raises(InvalidRequestError) as too_many:
        ddb.append(sid, [NewEntry("user", str(i)) for i in range(100)])
    with pytest.raises(InvalidRequestError) as too_big:
        ddb.append(sid, [NewEntry("user", secrets.token_urlsafe(600_000))])

    assert (too_many.value.status_code, too_many.value.code) == (400, "too_many_messages")
    assert (too_big.value.status_code, too_big.value.code) == (400, "entry_too_large")
    assert ddb.get(sid).next_seq == 0


def test_unreachable_endpoint_is_store_unavailable(aws_test_env: None) -> None:
    dead = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{free_port()}",
                        config=Config(connect_timeout=1, retries={"max_attempts": 1}))
    store = DynamoDBSessionStore("clawdbot-sessions", client=dead)

    with pytest.raises(StoreUnavailableError) as info:
        store.append("s", turn(0), create=True)

    assert info.value.status_code == 503


def test_missing_table_is_store_unavailable(client: Any) -> None:
    store = DynamoDBSessionStore("no-such-table", client=client)

    with pytest.raises(StoreUnavailableError):
        store.get_optional("s")


def test_factory_creates_the_table_on_a_local_endpoint(dynamodb_endpoint_env: str, client: Any) -> None:
    # GIVEN only boto3's own endpoint variable pointing at DynamoDB Local, and a table that does not exist
    settings = Settings(session_store="dynamodb", dynamodb_table="factory-made", session_ttl_seconds=3600)

    store = build_store(settings)  # a local endpoint: the missing table is created, as `clawdbot serve` needs
    store.append("via-factory", turn(0), create=True)

    assert isinstance(store, DynamoDBSessionStore)
    assert client.describe_table(TableName="factory-made")["Table"]["TableStatus"] == "ACTIVE"
    assert [e.seq for e in store.read_recent("via-factory", 5)] == [0, 1]
    assert build_store(settings).get("via-factory").next_seq == 2  # idempotent


def test_a_table_is_never_created_when_configured_so(dynamodb_endpoint_env: str, client: Any) -> None:
    # GIVEN DynamoDB Local and CLAWDBOT_DYNAMODB_CREATE_TABLE=false (a table made by other means, as on AWS)
    settings = Settings(session_store="dynamodb", dynamodb_table="never-made", dynamodb_create_table=False)

    store = build_store(settings)

    # THEN no table was made: the first use is the store's 503, as against a missing table on AWS
    assert "never-made" not in client.list_tables()["TableNames"]
    with pytest.raises(StoreUnavailableError):
        store.get_optional("s")


@pytest.mark.parametrize(("env", "local"), [
    ({"AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:8000"}, True),
    ({"AWS_ENDPOINT_URL": "http://dynamodb-local:8000"}, True),
    ({"AWS_ENDPOINT_URL_DYNAMODB": "https://dynamodb.eu-west-1.amazonaws.com"}, False),
    ({}, False),
])
def test_only_local_endpoints_get_a_table_created(env: dict[str, str], local: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert (local_dynamodb_endpoint() is not None) is local
