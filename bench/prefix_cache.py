"""The prefix cache through the API: a session's turns on ``clawdbot serve`` with it (the default) and without it
(``CLAWDBOT_PREFIX_CACHE_MB=0``), the shipped model, side by side.

Two servers run at once, each with its own data folder; every session asks the same questions of both, turn by
turn alternating (one request at a time), greedy, so both compute the same replies on the same prompts (checked:
the benchmark fails if a reply differs). Sessions start empty and grow for ``--turns`` turns, which with the
default ``--max-tokens`` keeps the whole history in the shipped model's 512-token window: the cache's case. (Once a
session fills the window, its oldest turns are dropped every turn and the prompt shares only the system prompt with
the last one; ``bench.throughput`` runs in that regime.)

Reported: the median latency per turn with and without (``prefix_cache_on_p50_ms`` / ``_off_``), the same for the
last quarter of the turns (the longest histories), the server CPU per turn of each (steadier than wall time on a
shared machine) and their ratio, and the prompt tokens of the last turn.

    python -m bench.prefix_cache [--sessions 6] [--turns 12] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.loadgen import Connection
from bench.throughput import MODEL, clawdbot_serve

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "prefix_cache.json"
SYSTEM = "You are Clawdbot, a friendly and concise assistant."
QUESTIONS = ("Hi! How are you today?", "What should I pack for a trip to the mountains?",
             "Can you recommend a good book?", "What's your favourite food?", "Tell me about the sea.",
             "How do I bake bread?", "What is a good name for a cat?", "Why is the sky blue?")


async def _turn(conn: Connection, session_id: str, question: str, max_tokens: int) -> tuple[float, dict[str, Any]]:
    body = {"model": MODEL, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": question}]}
    raw = conn.encode("POST", "/v1/chat/completions", json.dumps(body).encode(), {"x-session-id": session_id})
    started = time.perf_counter()
    response = await conn.send(raw)
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"turn answered {response.status}: {response.body[:300]!r}")
    return elapsed, json.loads(response.body)


async def _sessions(ports: dict[str, int], servers: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    conns = {name: Connection("127.0.0.1", port) for name, port in ports.items()}
    for conn in conns.values():
        await conn.connect()
    latency: dict[str, list[list[float]]] = {name: [] for name in ports}
    cpu = dict.fromkeys(ports, 0.0)
    last_prompt_tokens = 0
    try:
        for conn in conns.values():
            for session_id in ("warm-up", *(f"sess_pc_{i}" for i in range(args.sessions))):
                created = await conn.request("POST", "/v1/sessions", {"id": session_id, "system_prompt": SYSTEM})
                if created.status != 201:
                    raise RuntimeError(f"creating a session answered {created.status}: {created.body[:300]!r}")
        # One warm-up turn each, not counted: the model's first run, and the code paths.
        for conn in conns.values():
            await _turn(conn, "warm-up", QUESTIONS[0], args.max_tokens)
        for session in range(args.sessions):
            rows = {name: [] for name in ports}
            for turn in range(args.turns):
                question = QUESTIONS[(session + turn) % len(QUESTIONS)]
                replies = {}
                for name, conn in conns.items():
                    before = servers[name].cpu_seconds()
                    seconds, body = await _turn(conn, f"sess_pc_{session}", question, args.max_tokens)
                    cpu[name] += servers[name].cpu_seconds() - before
                    rows[name].append(seconds)
                    replies[name] = body["choices"][0]["message"]["content"]
                    last_prompt_tokens = body["usage"]["prompt_tokens"]
                if len(set(replies.values())) != 1:
                    raise RuntimeError(f"session {session} turn {turn}: the replies differ: {replies}")
            for name in ports:
                latency[name].append(rows[name])
    finally:
        for conn in conns.values():
            conn.close()
    turns = args.sessions * args.turns
    tail = max(1, args.turns // 4)
    results: dict[str, Any] = {"prefix_cache_last_prompt_tokens": last_prompt_tokens}
    for name in ports:
        every = [s for row in latency[name] for s in row]
        last = [s for row in latency[name] for s in row[-tail:]]
        results[f"prefix_cache_{name}_p50_ms"] = round(statistics.median(every) * 1000, 2)
        results[f"prefix_cache_{name}_last_turns_p50_ms"] = round(statistics.median(last) * 1000, 2)
        results[f"prefix_cache_{name}_server_cpu_ms_per_turn"] = round(cpu[name] / turns * 1000, 2)
    paired = [off / on for on_row, off_row in zip(latency["on"], latency["off"], strict=True)
              for on, off in zip(on_row, off_row, strict=True)]
    results["prefix_cache_latency_ratio_off_to_on"] = round(statistics.median(paired), 3)
    results["prefix_cache_cpu_ratio_off_to_on"] = round(cpu["off"] / max(cpu["on"], 1e-9), 3)
    return results


def measure(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    with clawdbot_serve(scratch / "on") as on, \
            clawdbot_serve(scratch / "off", {"CLAWDBOT_PREFIX_CACHE_MB": "0"}) as off:
        servers = {"on": on, "off": off}
        return asyncio.run(_sessions({name: s.port for name, s in servers.items()}, servers, args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prefix_cache", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=6, help="sessions, each asked --turns questions")
    parser.add_argument("--turns", type=int, default=12, help="turns per session, from an empty history")
    parser.add_argument("--max-tokens", type=int, default=16, help="largest reply per turn")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.turns < 2 or args.max_tokens < 1:
        parser.error("--sessions must be at least 1, --turns at least 2, --max-tokens at least 1")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clawdbot-bench-prefix-") as tmp:
        results = measure(args, Path(tmp))
    results = {"python_version": platform.python_version(), "machine": platform.machine(),
               "prefix_cache_sessions": args.sessions, "prefix_cache_turns_per_session": args.turns,
               "prefix_cache_max_tokens": args.max_tokens, **results,
               "wall_s": round(time.perf_counter() - started, 1)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
