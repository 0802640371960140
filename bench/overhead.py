"""Gateway overhead per chat turn: the whole API path vs. calling the same backend directly, side by side.

Two servers run at once on loopback, each one uvicorn process as ``clawdbot serve`` runs it, both with the
instant backend (``bench.instant``: real prompt-token counting, canned reply):

- ``api``: the full path — API key (created first and sent), rate limit, request metrics, concurrency cap,
  request validation, session read (meta + context window), context fitting, the turn append, turn metrics and
  rate-limit charging, JSON serialization — on a SQLite store whose sessions already hold ``--history`` turns;
- ``direct``: uvicorn + a bare ASGI callable that calls ``backend.generate`` (``bench.serving``).

What is the same in both (loopback TCP, uvicorn, the client) cancels out; the difference is the gateway.

Phases, each alternating api/direct so background load on a shared machine hits both alike:

1. ``sequential``: one client, one request at a time: the added latency with no queueing at all;
2. ``c64_load``: 64 clients (one session each) sending a Poisson stream of ``--rate`` turns/s in total: the
   added p50/p99 at a fixed offered load, what a user of a busy server sees;
3. ``c64_capacity``: 64 clients sending back to back (closed loop): turns/s of each server, and the gateway's
   cost per turn derived from it, ``1000/api_turns_per_s - 1000/direct_turns_per_s`` (ms of one server process
   per turn).

    python -m bench.overhead [--history 32] [--rate 100] [--seconds 5] [--clients 64] [--sequential 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.loadgen import Connection, LoadResult, median, percentile, run_load

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "overhead.json"
USER_MESSAGE = "Hi! I'm planning a trip to the mountains next week. What should I pack for three days?"


def prepare_data(data_dir: Path, sessions: int, history_turns: int) -> tuple[str, list[str]]:
    """An API key (generous limits: the limiter does its work but never refuses) and sessions with history."""
    from bench.instant import REPLY
    from clawdbot.sessions.sqlite import SQLiteSessionStore
    from clawdbot.sessions.types import NewEntry
    from clawdbot.traffic.keys import Limits
    from clawdbot.traffic.keystore.sqlite import SQLiteKeyStore

    keys = SQLiteKeyStore(data_dir)
    record, plaintext = keys.create("bench", limits=Limits(requests_per_minute=10**9, tokens_per_minute=10**12))
    keys.close()
    store = SQLiteSessionStore(data_dir)
    ids = []
    for i in range(sessions):
        meta = store.create(f"sess_bench_{i:03d}", owner=record.key_id)
        entries = []
        for _ in range(history_turns):
            entries += [NewEntry("user", USER_MESSAGE), NewEntry("assistant", REPLY)]
        for start in range(0, len(entries), 98):
            store.append(meta.session_id, entries[start:start + 98])
        ids.append(meta.session_id)
    store.close()
    return plaintext, ids


def api_request(model: str, key: str, session_id: str) -> Callable[[Connection], bytes]:
    body = json.dumps({"model": model, "max_tokens": 64,
                       "messages": [{"role": "user", "content": USER_MESSAGE}]}).encode()
    headers = {"authorization": f"Bearer {key}", "x-session-id": session_id}
    return lambda conn: conn.encode("POST", "/v1/chat/completions", body, headers)


def direct_request(model: str) -> Callable[[Connection], bytes]:
    body = json.dumps({"model": model, "max_tokens": 64,
                       "messages": [{"role": "user", "content": USER_MESSAGE}]}).encode()
    return lambda conn: conn.encode("POST", "/", body)


async def _sequential(api_port: int, direct_port: int, api_req: Callable[[Connection], bytes],
                      direct_req: Callable[[Connection], bytes], count: int) -> tuple[list[float], list[float]]:
    api, direct = Connection("127.0.0.1", api_port), Connection("127.0.0.1", direct_port)
    api_s: list[float] = []
    direct_s: list[float] = []
    try:
        for i in range(count + 20):  # 20 warm-up pairs
            for conn, req, out in ((api, api_req, api_s), (direct, direct_req, direct_s))[:: 1 if i % 2 else -1]:
                response = await conn.send(req(conn))
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {response.body[:300]!r}")
                if i >= 20:
                    out.append(response.total_s)
    finally:
        api.close()
        direct.close()
    return api_s, direct_s


def _check(result: LoadResult, what: str) -> None:
    bad = {s: n for s, n in result.statuses.items() if s != 200}
    if bad or not result.completed:
        raise RuntimeError(f"{what}: unexpected answers {result.statuses}")


def _merge(results: list[LoadResult]) -> LoadResult:
    merged = LoadResult()
    for r in results:
        merged.latencies += r.latencies
        merged.window_s += r.window_s
        merged.dropped += r.dropped
        for status, n in r.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + n
    return merged


def measure(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    from bench.instant import InstantBackend
    from bench.serving import serve

    model = InstantBackend().model_id
    data_dir = scratch / "api"
    key, sessions = prepare_data(data_dir, args.clients + 1, args.history)
    results: dict[str, Any] = {}
    with serve("api", data_dir) as api, serve("direct", scratch / "direct") as direct:
        api_port, direct_port = api.port, direct.port
        api_reqs = [api_request(model, key, sid) for sid in sessions[1:]]
        direct_reqs = [direct_request(model)] * args.clients

        api_s, direct_s = asyncio.run(_sequential(api_port, direct_port, api_request(model, key, sessions[0]),
                                                  direct_request(model), args.sequential))
        added = sorted(a - d for a, d in zip(api_s, direct_s, strict=True))
        results |= {
            "sequential_requests": args.sequential,
            "sequential_api_p50_ms": round(median(api_s) * 1000, 3),
            "sequential_api_p99_ms": round(percentile(api_s, 99) * 1000, 3),
            "sequential_direct_p50_ms": round(median(direct_s) * 1000, 3),
            "sequential_direct_p99_ms": round(percentile(direct_s, 99) * 1000, 3),
            "sequential_overhead_p50_ms": round((median(api_s) - median(direct_s)) * 1000, 3),
            "sequential_overhead_p99_ms": round((percentile(api_s, 99) - percentile(direct_s, 99)) * 1000, 3),
            "sequential_paired_overhead_p50_ms": round(median(added) * 1000, 3),
        }
        print(f"sequential: api p50 {results['sequential_api_p50_ms']} ms, direct p50 "
              f"{results['sequential_direct_p50_ms']} ms", flush=True)

        cpu = {"api": [0.0, 0], "direct": [0.0, 0]}  # server CPU seconds and requests, over the load phases

        def phase(rate: float | None) -> tuple[LoadResult, LoadResult]:
            api_runs: list[LoadResult] = []
            direct_runs: list[LoadResult] = []
            for round_index in range(args.rounds):
                order = (("api", api, api_reqs, api_runs), ("direct", direct, direct_reqs, direct_runs))
                for name, server, reqs, out in order[:: 1 if round_index % 2 == 0 else -1]:
                    cpu_before = server.cpu_seconds()
                    result = asyncio.run(run_load("127.0.0.1", server.port, reqs, duration_s=args.seconds,
                                                  rate_per_s=rate, seed=round_index))
                    cpu[name][0] += server.cpu_seconds() - cpu_before
                    cpu[name][1] += result.sent
                    _check(result, name)
                    out.append(result)
            return _merge(api_runs), _merge(direct_runs)

        load_api, load_direct = phase(args.rate)
        results |= {
            "c64_clients": args.clients,
            "c64_load_offered_turns_per_s": args.rate,
            "c64_load_api_turns_per_s": round(load_api.throughput, 1),
            "c64_load_api_p50_ms": round(load_api.percentile_ms(50), 3),
            "c64_load_api_p99_ms": round(load_api.percentile_ms(99), 3),
            "c64_load_direct_p50_ms": round(load_direct.percentile_ms(50), 3),
            "c64_load_direct_p99_ms": round(load_direct.percentile_ms(99), 3),
            "c64_load_dropped_requests": load_api.dropped + load_direct.dropped,
            "overhead_p50_ms": round(load_api.percentile_ms(50) - load_direct.percentile_ms(50), 3),
            "overhead_p99_ms": round(load_api.percentile_ms(99) - load_direct.percentile_ms(99), 3),
        }
        print(f"64 clients at {args.rate:g} turns/s: api p50/p99 {results['c64_load_api_p50_ms']}/"
              f"{results['c64_load_api_p99_ms']} ms, direct {results['c64_load_direct_p50_ms']}/"
              f"{results['c64_load_direct_p99_ms']} ms", flush=True)

        cap_api, cap_direct = phase(None)
        results |= {
            "c64_capacity_api_turns_per_s": round(cap_api.throughput, 1),
            "c64_capacity_direct_turns_per_s": round(cap_direct.throughput, 1),
            "c64_capacity_api_p50_ms": round(cap_api.percentile_ms(50), 2),
            "c64_capacity_api_p99_ms": round(cap_api.percentile_ms(99), 2),
            "c64_capacity_direct_p50_ms": round(cap_direct.percentile_ms(50), 2),
            "c64_capacity_direct_p99_ms": round(cap_direct.percentile_ms(99), 2),
            "c64_capacity_ratio_api_vs_direct": round(cap_api.throughput / cap_direct.throughput, 3),
            "overhead_per_turn_server_ms": round(1000 / cap_api.throughput - 1000 / cap_direct.throughput, 3),
            "api_server_cpu_ms_per_turn": round(cpu["api"][0] / cpu["api"][1] * 1000, 3),
            "direct_server_cpu_ms_per_turn": round(cpu["direct"][0] / cpu["direct"][1] * 1000, 3),
            "overhead_cpu_ms_per_turn": round((cpu["api"][0] / cpu["api"][1]
                                               - cpu["direct"][0] / cpu["direct"][1]) * 1000, 3),
        }
        print(f"64 clients back to back: api {results['c64_capacity_api_turns_per_s']} turns/s, direct "
              f"{results['c64_capacity_direct_turns_per_s']} turns/s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=32, help="turns already in each session")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rate", type=float, default=100.0, help="offered turns/s in the c64_load phase")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per server and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sequential", type=int, default=300, help="requests per server, one at a time")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="clawdbot-bench-overhead-") as scratch:
        results = measure(args, Path(scratch))
    results = {
        "history_turns": args.history,
        "cpus_available": len(os.sched_getaffinity(0)),
        "python_version": platform.python_version(),
        "load_average_1min_start": round(load_start, 2),
        "load_average_1min_end": round(os.getloadavg()[0], 2),
        "wall_s": round(time.perf_counter() - started, 1),
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"gateway overhead at {args.clients} clients, {args.rate:g} turns/s: p50 {results['overhead_p50_ms']} "
          f"ms, p99 {results['overhead_p99_ms']} ms (targets 2 / 10); per turn at capacity "
          f"{results['overhead_per_turn_server_ms']} ms; results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
