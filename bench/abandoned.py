"""Clients that give up: what a non-streamed turn abandoned by its client costs the server, and what abandoned
turns do to a patient client's latency, against ``clawdbot serve`` on the shipped model.

A client's timeout, a closed tab or a retrying SDK leaves turns nobody will read. Since the fourth session of
2026-12-07 the server stops such a turn's model at its next token (``clawdbot.inference.cancellation``); before,
it ran the turn to its end and stored it. Every long turn here bans the end-of-sequence tokens (``logit_bias``),
so it runs to ``--max-tokens`` unless stopped.

- ``completed_turn_*``: long turns read to their end, one at a time: the server's CPU per turn and the latency.
- ``abandoned_turn_*``: the same turns, the client hanging up ``--give-up-ms`` after sending; the server's CPU per
  turn, counted until it is idle again, and how many it answered with a 499 (the metrics' ``Requests`` by status).
- ``patient_*``: one client sending short turns back to back, alone and then while ``--impatient`` clients send
  long turns and hang up on each after ``--give-up-ms``, at once sending the next (an SDK's retry): its p50 / p99
  latency and turns/s, and how many turns the impatient clients abandoned.

    python -m bench.abandoned [--max-tokens 400] [--give-up-ms 50] [--impatient 4] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
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

from bench.loadgen import Connection, percentile

if TYPE_CHECKING:
    from bench.serving import Server

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "abandoned.json"
MODEL = "clawdbot-tiny-chat"
LONG_PROMPT = "Tell me a long story about the sea."
SHORT_PROMPT = "Hi! How are you today?"
#: Turns measured one at a time, completed and abandoned.
TURNS = 4
#: The labels of the chat turns a server answered 499 (its client hung up) in ``clawdbot_requests_total``.
GONE_LABELS = frozenset({("route", "/v1/chat/completions"), ("status", "499")})


def _long_turn(max_tokens: int, no_end: dict[str, int], seed: int) -> bytes:
    body = {"model": MODEL, "max_tokens": max_tokens, "temperature": 1.0, "seed": seed, "logit_bias": no_end,
            "messages": [{"role": "user", "content": LONG_PROMPT}]}
    return json.dumps(body).encode()


def _short_turn() -> bytes:
    return json.dumps({"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": SHORT_PROMPT}]}
                      ).encode()


async def _hang_up_after(port: int, raw: bytes, seconds: float) -> None:
    """Send ``raw`` on a new connection and close it ``seconds`` later, unread."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    await asyncio.sleep(seconds)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def _wait_idle(server: Server, settle_s: float = 0.3, limit_s: float = 60.0) -> None:
    """Until the server's CPU time stops moving for ``settle_s`` (an abandoned turn may still be running)."""
    deadline = time.monotonic() + limit_s
    last = server.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(settle_s)
        now = server.cpu_seconds()
        if now == last:
            return
        last = now


def _gone_count(port: int) -> int:
    """Chat turns the server answered with a 499 so far (its Prometheus metrics)."""
    import urllib.request

    from tests.fixtures.probes import metric_samples

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return int(metric_samples(text).get(("clawdbot_requests_total", GONE_LABELS), 0))


def one_at_a_time(server: Server, args: argparse.Namespace, no_end: dict[str, int]) -> dict[str, Any]:
    """Long turns read to their end, then the same turns abandoned: the server's CPU per turn for each."""

    async def completed() -> list[float]:
        conn = Connection("127.0.0.1", server.port)
        latencies = []
        for turn in range(TURNS):
            response = await conn.send(conn.encode("POST", "/v1/chat/completions",
                                                   _long_turn(args.max_tokens, no_end, turn)))
            assert response.status == 200, response.body[:300]
            latencies.append(response.total_s)
        conn.close()
        return latencies

    cpu = server.cpu_seconds()
    latencies = asyncio.run(completed())
    completed_cpu = (server.cpu_seconds() - cpu) / TURNS
    _wait_idle(server)
    gone_before = _gone_count(server.port)
    cpu = server.cpu_seconds()
    for turn in range(TURNS):
        raw = Connection("127.0.0.1", server.port).encode("POST", "/v1/chat/completions",
                                                          _long_turn(args.max_tokens, no_end, turn))
        asyncio.run(_hang_up_after(server.port, raw, args.give_up_ms / 1000))
        _wait_idle(server)
    abandoned_cpu = (server.cpu_seconds() - cpu) / TURNS
    return {
        "completed_turn_ms": round(statistics.median(latencies) * 1000, 1),
        "completed_turn_server_cpu_ms": round(completed_cpu * 1000, 1),
        # Idle time counts nothing; the turns' own CPU after the hang-up is the difference from completed ones.
        "abandoned_turn_server_cpu_ms": round(abandoned_cpu * 1000, 1),
        "abandoned_turns_answered_499": _gone_count(server.port) - gone_before,
        "abandoned_turns_sent": TURNS,
    }


def contention(server: Server, args: argparse.Namespace, no_end: dict[str, int]) -> dict[str, Any]:
    """A patient client's short turns, alone and among impatient clients that hang up on long turns."""

    async def patient(stop_at: float) -> tuple[list[float], dict[int, int]]:
        conn = Connection("127.0.0.1", server.port)
        raw = conn.encode("POST", "/v1/chat/completions", _short_turn())
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        while time.monotonic() < stop_at:
            response = await conn.send(raw)
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status == 200:
                latencies.append(response.total_s)
        conn.close()
        return latencies, statuses

    async def impatient(index: int, stop_at: float, sent: list[int]) -> None:
        turn = 0
        while time.monotonic() < stop_at:
            raw = Connection("127.0.0.1", server.port).encode(
                "POST", "/v1/chat/completions", _long_turn(args.max_tokens, no_end, 1000 * index + turn))
            await _hang_up_after(server.port, raw, args.give_up_ms / 1000)
            sent[0] += 1
            turn += 1

    async def run(with_impatient: bool) -> tuple[list[float], dict[int, int], int]:
        stop_at = time.monotonic() + args.seconds
        sent = [0]
        tasks = [asyncio.create_task(impatient(i, stop_at, sent)) for i in range(args.impatient if with_impatient
                                                                              else 0)]
        latencies, statuses = await patient(stop_at)
        await asyncio.gather(*tasks)
        return latencies, statuses, sent[0]

    results: dict[str, Any] = {"patient_seconds": args.seconds, "impatient_clients": args.impatient}
    for name, with_impatient in (("alone", False), ("with_abandoners", True)):
        _wait_idle(server)
        latencies, statuses, sent = asyncio.run(run(with_impatient))
        prefix = f"patient_{name}"
        results |= {
            f"{prefix}_p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
            f"{prefix}_p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
            f"{prefix}_turns_per_s": round(len(latencies) / args.seconds, 1),
            f"{prefix}_refused": sum(n for status, n in statuses.items() if status != 200),
        }
        if with_impatient:
            results["impatient_turns_abandoned"] = sent
    _wait_idle(server)
    return results


async def _warm_up(port: int) -> int:
    conn = Connection("127.0.0.1", port)
    response = await conn.send(conn.encode("POST", "/v1/chat/completions", _short_turn()))
    conn.close()
    return response.status


def main(argv: list[str] | None = None) -> int:
    from bench.throughput import clawdbot_serve
    from clawdbot.config.settings import DEFAULT_MODEL_DIR
    from tests.fixtures.probes import no_end_bias

    parser = argparse.ArgumentParser(prog="python -m bench.abandoned", description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=400, help="Length of a long turn (default 400).")
    parser.add_argument("--give-up-ms", type=float, default=50.0,
                        help="How long a client waits before it hangs up (default 50).")
    parser.add_argument("--impatient", type=int, default=4, help="Clients that hang up (default 4).")
    parser.add_argument("--seconds", type=float, default=5.0, help="Each patient run's length (default 5).")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    no_end = no_end_bias(DEFAULT_MODEL_DIR)
    started = time.monotonic()
    results: dict[str, Any] = {
        "model": MODEL, "python_version": platform.python_version(), "cpus_available": len(os.sched_getaffinity(0)),
        "load_average_1min_start": round(os.getloadavg()[0], 2), "max_tokens": args.max_tokens,
        "give_up_ms": args.give_up_ms,
    }
    with tempfile.TemporaryDirectory(prefix="clawdbot-bench-abandoned-") as scratch:
        data = Path(scratch) / "data"
        data.mkdir()
        with clawdbot_serve(data) as server:
            conn_check = asyncio.run(_warm_up(server.port))
            assert conn_check == 200, f"warm-up turn answered {conn_check}"
            results |= one_at_a_time(server, args, no_end)
            results |= contention(server, args, no_end)
    results["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    results["wall_s"] = round(time.monotonic() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"a {args.max_tokens}-token turn: completed {results['completed_turn_ms']} ms, server CPU "
          f"{results['completed_turn_server_cpu_ms']} ms; abandoned after {args.give_up_ms:g} ms: server CPU "
          f"{results['abandoned_turn_server_cpu_ms']} ms ({results['abandoned_turns_answered_499']} of "
          f"{TURNS} answered 499)")
    print(f"patient client p50 / p99: alone {results['patient_alone_p50_ms']} / {results['patient_alone_p99_ms']} ms;"
          f" with {args.impatient} clients abandoning turns ({results['impatient_turns_abandoned']} in "
          f"{args.seconds:g} s) {results['patient_with_abandoners_p50_ms']} / "
          f"{results['patient_with_abandoners_p99_ms']} ms")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
