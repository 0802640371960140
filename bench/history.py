"""Scaling with history: store operations and latency per chat turn on sessions of 10, 100 and 1,000 turns, for
SQLite, Redis (redis-server) and DynamoDB (DynamoDB Local), all on loopback.

A turn is the chat service's whole turn (``ChatService.prepare`` + ``complete``: session check, context window
read, context fitting, the append) with the instant backend (``bench.instant``), so what grows with history, if
anything, is the store's work and the context built from it. Sessions of every size live side by side in one
store and take their turns in rotation, so background load hits all sizes alike.

Counted per turn, at the client, without touching our code: SQLite statements (the connections' trace callback),
Redis commands sent (the client's ``execute_command``), DynamoDB API calls and the items they returned (botocore's
event hooks). Flat means the same count at 1,000 turns as at 10 (O(1) per turn) and a latency ratio near 1.

    python -m bench.history [--turns 30] [--engines sqlite,redis,dynamodb]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from clawdbot.sessions.base import SessionStore

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "history.json"
SIZES = (10, 100, 1000)
ENGINES = ("sqlite", "redis", "dynamodb")
TABLE = "clawdbot-bench-history"


class OpCounter:
    """Store operations seen at the client, by name."""

    def __init__(self) -> None:
        self.ops: dict[str, int] = {}
        self.items = 0

    def add(self, name: str, items: int = 0) -> None:
        self.ops[name] = self.ops.get(name, 0) + 1
        self.items += items

    def total(self) -> int:
        return sum(self.ops.values())


@contextlib.contextmanager
def _sqlite(scratch: Path, counter: OpCounter) -> Iterator[tuple[SessionStore, Callable[[], None]]]:
    from clawdbot.sessions.sqlite import SQLiteSessionStore

    store = SQLiteSessionStore(scratch / "sqlite")
    traced: set[int] = set()

    def trace(statement: str) -> None:
        counter.add(statement.split(None, 1)[0].upper())

    def hook() -> None:  # connections are pooled and made on demand: trace any new one before each turn
        for conn in list(store._all):
            if id(conn) not in traced:
                conn.set_trace_callback(trace)
                traced.add(id(conn))

    try:
        yield store, hook
    finally:
        store.close()


@contextlib.contextmanager
def _redis(scratch: Path, counter: OpCounter) -> Iterator[tuple[SessionStore, Callable[[], None]]]:
    from clawdbot.sessions.redis import RedisSessionStore
    from tests.fixtures.servers import run_redis_server

    with run_redis_server(scratch) as url:
        store = RedisSessionStore.from_url(url)
        client: Any = store.client
        execute = client.execute_command

        def counted(*args: Any, **kwargs: Any) -> Any:
            counter.add(str(args[0]).upper())
            return execute(*args, **kwargs)

        client.execute_command = counted  # the third-party client's entry point, on this instance only
        try:
            yield store, lambda: None
        finally:
            store.close()


@contextlib.contextmanager
def _dynamodb(scratch: Path, counter: OpCounter) -> Iterator[tuple[SessionStore, Callable[[], None]]]:
    import boto3
    from botocore.config import Config

    from clawdbot.sessions.dynamodb import DynamoDBSessionStore
    from clawdbot.sessions.factory import ensure_dynamodb_table
    from tests.fixtures.servers import FAKE_AWS_ENV, run_dynamodb_local

    with run_dynamodb_local(scratch) as endpoint:
        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name=FAKE_AWS_ENV["AWS_REGION"],
                              aws_access_key_id="bench", aws_secret_access_key="bench",
                              config=Config(retries={"mode": "standard"}))
        ensure_dynamodb_table(client, TABLE)

        def after_call(model: Any, parsed: dict[str, Any], **_: Any) -> None:
            counter.add(model.name, int(parsed.get("Count", 0)) + (1 if "Item" in parsed else 0))

        client.meta.events.register("after-call.dynamodb", after_call)
        yield DynamoDBSessionStore(TABLE, client=client), lambda: None


def _fill(store: SessionStore, session_id: str, turns: int) -> None:
    from bench.instant import REPLY
    from bench.overhead import USER_MESSAGE
    from clawdbot.sessions.types import NewEntry

    store.create(session_id)
    entries = [NewEntry(role, text) for _ in range(turns)
               for role, text in (("user", USER_MESSAGE), ("assistant", REPLY))]
    for start in range(0, len(entries), 98):  # DynamoDB's transaction bound (99 entries + META)
        store.append(session_id, entries[start:start + 98])


def measure_engine(engine: str, turns: int, scratch: Path) -> dict[str, Any]:
    from bench.instant import InstantBackend
    from bench.overhead import USER_MESSAGE
    from clawdbot.chat.service import ChatService, TurnRequest
    from clawdbot.config.settings import Settings
    from clawdbot.inference.types import ChatMessage

    counter = OpCounter()
    opener = {"sqlite": _sqlite, "redis": _redis, "dynamodb": _dynamodb}[engine]
    results: dict[str, Any] = {}
    with opener(scratch / engine, counter) as (store, hook):
        chat = ChatService(store, InstantBackend(), Settings(data_dir=scratch / engine))
        sessions = {size: f"sess_bench_{engine}_{size}" for size in SIZES}
        for size, session_id in sessions.items():
            _fill(store, session_id, size)
        latencies: dict[int, list[float]] = {size: [] for size in SIZES}
        ops: dict[int, list[int]] = {size: [] for size in SIZES}
        items: dict[int, list[int]] = {size: [] for size in SIZES}
        kinds: dict[int, dict[str, int]] = {}
        for index in range(turns + 2):  # two warm-up rounds
            for size in SIZES if index % 2 else reversed(SIZES):
                hook()
                before_ops, before_items, before_kinds = counter.total(), counter.items, dict(counter.ops)
                started = time.perf_counter()
                chat.complete(chat.prepare(TurnRequest(messages=[ChatMessage("user", USER_MESSAGE)], max_tokens=64,
                                                       session_id=sessions[size])))
                elapsed = time.perf_counter() - started
                if index >= 2:
                    latencies[size].append(elapsed)
                    ops[size].append(counter.total() - before_ops)
                    items[size].append(counter.items - before_items)
                    kinds[size] = {k: v - before_kinds.get(k, 0) for k, v in counter.ops.items()
                                   if v - before_kinds.get(k, 0)}
        for size in SIZES:
            results[f"{engine}_h{size}_turn_p50_ms"] = round(statistics.median(latencies[size]) * 1000, 3)
            results[f"{engine}_h{size}_turn_p90_ms"] = round(
                sorted(latencies[size])[int(0.9 * (len(latencies[size]) - 1))] * 1000, 3)
            results[f"{engine}_h{size}_store_ops_per_turn"] = statistics.median(ops[size])
            if engine == "dynamodb":
                results[f"{engine}_h{size}_items_read_per_turn"] = statistics.median(items[size])
            for kind, count in sorted(kinds[size].items()):  # one flat key per kind of call (``..._GetItem``)
                results[f"{engine}_h{size}_store_ops_per_turn_{kind}"] = count
        paired = [a / b for a, b in zip(latencies[1000], latencies[10], strict=True)]
        results[f"{engine}_latency_ratio_1000_vs_10"] = round(statistics.median(paired), 3)
        paired = [a / b for a, b in zip(latencies[1000], latencies[100], strict=True)]
        results[f"{engine}_latency_ratio_1000_vs_100"] = round(statistics.median(paired), 3)
        results[f"{engine}_store_ops_1000_minus_10"] = (results[f"{engine}_h1000_store_ops_per_turn"]
                                                        - results[f"{engine}_h10_store_ops_per_turn"])
    print(f"{engine}: " + ", ".join(f"{size} turns {results[f'{engine}_h{size}_turn_p50_ms']} ms / "
                                    f"{results[f'{engine}_h{size}_store_ops_per_turn']} ops" for size in SIZES),
          flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=30, help="measured turns per session size")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    results: dict[str, Any] = {"history_sizes_turns": list(SIZES), "turns_measured": args.turns}
    with tempfile.TemporaryDirectory(prefix="clawdbot-bench-history-") as scratch:
        for engine in args.engines.split(","):
            (Path(scratch) / engine).mkdir()
            results |= measure_engine(engine, args.turns, Path(scratch))
    results = {"python_version": platform.python_version(), "cpus_available": len(os.sched_getaffinity(0)),
               "load_average_1min_start": round(load_start, 2), "load_average_1min_end": round(os.getloadavg()[0], 2),
               "wall_s": round(time.perf_counter() - started, 1), **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
