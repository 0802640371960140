"""Throughput: chat turns per second against ``clawdbot serve`` for N concurrent sessions, and the queue worker
draining a local SQS queue, both on the shipped model.

- ``serve``: the real command (``clawdbot serve``, default settings: SQLite sessions in a temporary data folder,
  the in-process ONNX model, no key on loopback) in its own process; N clients (``bench.loadgen``, one kept-alive
  connection and one session each, already holding ``--history`` turns) send turns back to back for
  ``--seconds``. Per N: turns/s, completion tokens/s, p50/p99 latency, refusals (429/503) and the server's CPU
  time per turn.
- ``worker``: ``--queued`` turns over several sessions put on a FIFO queue of moto's SQS server, then drained by
  ``clawdbot.queue.poller`` (what Lambda's event source mapping does) into the worker handler's code path
  (``TurnWorker.record_handler`` under Powertools' batch processor, SQLite idempotency records): turns/s, and the
  share of the drain spent generating (the turns' own ``latency_ms``). moto runs in this process, so its request
  handling competes for the same CPUs: the figure is a floor.

    python -m bench.throughput [--clients 1,4,16,64] [--seconds 5] [--max-tokens 32] [--queued 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.loadgen import percentile, run_load

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from bench.loadgen import Connection, Response
    from bench.serving import Server

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "throughput.json"
MODEL = "clawdbot-tiny-chat"
QUESTIONS = ("Hi! How are you today?", "What should I pack for a trip to the mountains?",
             "Can you recommend a good book?", "What's your favourite food?")


def _clawdbot() -> list[str]:
    script = Path(sys.executable).with_name("clawdbot")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "clawdbot.cli.main"]


@contextlib.contextmanager
def clawdbot_serve(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``clawdbot serve`` on a free loopback port until the block ends (``env``: ``CLAWDBOT_*`` settings)."""
    from bench.serving import Server
    from tests.fixtures.servers import free_port

    port = free_port()
    settings = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWDBOT_")}
    env |= settings | {"CLAWDBOT_DATA_DIR": str(data_dir)}
    log = data_dir.parent / f"serve-{data_dir.name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*_clawdbot(), "serve", "--port", str(port), "--log-level", "warning"], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"clawdbot serve did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield Server(port, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def prefill(data_dir: Path, session_ids: list[str], turns: int) -> None:
    """Sessions that already hold ``turns`` turns, written before the server starts: every run then works on
    prompts of about the same size, however many turns its sessions get through."""
    from bench.instant import REPLY
    from clawdbot.sessions.sqlite import SQLiteSessionStore
    from clawdbot.sessions.types import NewEntry

    store = SQLiteSessionStore(data_dir)
    for i, session_id in enumerate(session_ids):
        store.create(session_id)
        entries = [NewEntry(role, text) for turn in range(turns)
                   for role, text in (("user", QUESTIONS[(i + turn) % len(QUESTIONS)]), ("assistant", REPLY))]
        if entries:
            store.append(session_id, entries)
    store.close()


def _turn(session_id: str, index: int, max_tokens: int) -> Callable[[Connection], bytes]:
    asked = [0]

    def build(conn: Connection) -> bytes:
        asked[0] += 1
        body = {"model": MODEL, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": QUESTIONS[(index + asked[0]) % len(QUESTIONS)]}]}
        return conn.encode("POST", "/v1/chat/completions", json.dumps(body).encode(), {"x-session-id": session_id})

    return build


def serve_throughput(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"serve_max_tokens": args.max_tokens, "serve_seconds": args.seconds,
                               "serve_history_turns": args.history}
    sessions = {clients: [f"sess_tp_{clients}_{i}" for i in range(clients)] for clients in args.clients}
    prefill(scratch / "data", [sid for ids in sessions.values() for sid in ids], args.history)
    settings = dict(s.split("=", 1) for s in args.setting)
    with clawdbot_serve(scratch / "data", settings) as server:
        for clients in args.clients:
            cpu_before = server.cpu_seconds()
            tokens = [0]

            def count(response: Response, tokens: list[int] = tokens) -> None:
                if response.status == 200:
                    tokens[0] += json.loads(response.body)["usage"]["completion_tokens"]

            result = asyncio.run(run_load("127.0.0.1", server.port,
                                          [_turn(sid, i, args.max_tokens) for i, sid in enumerate(sessions[clients])],
                                          duration_s=args.seconds, warmup_s=1.0, on_response=count))
            cpu = server.cpu_seconds() - cpu_before
            ok = result.statuses.get(200, 0)
            prefix = f"serve_c{clients}"
            results |= {
                f"{prefix}_turns_per_s": round(ok / result.window_s, 2),
                f"{prefix}_completion_tokens_per_s": round(tokens[0] / result.window_s, 1),
                f"{prefix}_p50_ms": round(percentile(result.latencies, 50) * 1000, 1),
                f"{prefix}_p99_ms": round(percentile(result.latencies, 99) * 1000, 1),
                f"{prefix}_refused": sum(n for status, n in result.statuses.items() if status != 200),
                # CPU the server spent per turn (all requests sent, warm-up included): steadier than turns/s
                # when other work shares the machine.
                f"{prefix}_server_cpu_ms_per_turn": round(cpu / max(1, result.sent) * 1000, 2),
            }
            print(f"clawdbot serve, {clients} sessions: {results[f'{prefix}_turns_per_s']} turns/s, "
                  f"{results[f'{prefix}_completion_tokens_per_s']} tokens/s, p50 {results[f'{prefix}_p50_ms']} ms",
                  flush=True)
    return results


def worker_throughput(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    import boto3
    from aws_lambda_powertools.utilities.batch import process_partial_response

    from clawdbot.config.settings import Settings
    from clawdbot.queue.enqueue import TurnQueue
    from clawdbot.queue.messages import TurnMessage
    from clawdbot.queue.poller import drain
    from clawdbot.queue.worker import TurnWorker, new_processor
    from clawdbot.testing import LambdaContext
    from tests.fixtures.servers import FAKE_AWS_ENV, run_moto_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    worker = TurnWorker.from_settings(Settings(data_dir=scratch / "worker"))
    sessions = [worker.chat.store.create().session_id for _ in range(args.queue_sessions)]

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return dict(process_partial_response(event=event, record_handler=worker.record_handler,
                                             processor=new_processor(), context=context))

    with run_moto_server() as endpoint:
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=FAKE_AWS_ENV["AWS_REGION"],
                           aws_access_key_id="bench", aws_secret_access_key="bench")
        url = sqs.create_queue(QueueName="clawdbot-bench.fifo", Attributes={
            "FifoQueue": "true", "VisibilityTimeout": "120"})["QueueUrl"]
        queue = TurnQueue(url, client=sqs)
        # warm the model and the code path with one turn of its own (not counted)
        queue.send(TurnMessage(session_id=sessions[0], turn_id="warm-up", content="Hi!", enqueued_at=int(time.time())))
        drain(sqs, url, handler, lambda: LambdaContext(function_name="clawdbot-chat-worker", timeout_s=120))
        for i in range(args.queued):
            queue.send(TurnMessage(session_id=sessions[i % len(sessions)], turn_id=f"bench-{i}",
                                   content=QUESTIONS[i % len(QUESTIONS)], enqueued_at=int(time.time())))
        started = time.perf_counter()
        stats = drain(sqs, url, handler, lambda: LambdaContext(function_name="clawdbot-chat-worker", timeout_s=120),
                      batch_size=args.batch_size)
        elapsed = time.perf_counter() - started
    generation_ms = 0.0
    turns = 0
    for session_id in sessions:
        for entry in worker.chat.store.read(session_id, limit=500).entries:
            if entry.role == "assistant" and entry.turn_id and entry.turn_id.startswith("bench-"):
                generation_ms += float(entry.attributes["latency_ms"])
                turns += 1
    if turns != args.queued or stats.failed:
        raise RuntimeError(f"worker recorded {turns} of {args.queued} turns ({stats})")
    return {"worker_queued_turns": args.queued, "worker_sessions": len(sessions), "worker_batch_size": args.batch_size,
            "worker_turns_per_s": round(turns / elapsed, 2), "worker_batches": stats.batches,
            "worker_generation_share": round(generation_ms / 1000 / elapsed, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,4,16,64", type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--history", type=int, default=4, help="turns already in each session")
    parser.add_argument("--queued", type=int, default=60)
    parser.add_argument("--queue-sessions", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--setting", action="append", default=[], metavar="CLAWDBOT_NAME=VALUE",
                        help="a setting for clawdbot serve (repeatable), to compare configurations")
    parser.add_argument("--serve-only", action="store_true", help="skip the queue worker")
    args = parser.parse_args(argv)
    if any("=" not in s or not s.startswith("CLAWDBOT_") for s in args.setting):
        parser.error("--setting takes CLAWDBOT_NAME=VALUE")

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="clawdbot-bench-throughput-") as scratch:
        results = serve_throughput(args, Path(scratch))
        if not args.serve_only:
            results |= worker_throughput(args, Path(scratch))
    results = {"model": MODEL, "python_version": platform.python_version(), "serve_settings": args.setting,
               "cpus_available": len(os.sched_getaffinity(0)), "load_average_1min_start": round(load_start, 2),
               "load_average_1min_end": round(os.getloadavg()[0], 2), "wall_s": round(time.perf_counter() - started, 1),
               **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if not args.serve_only:
        print(f"worker: {results['worker_turns_per_s']} turns/s draining {args.queued} queued turns "
              f"({results['worker_generation_share']:.0%} of it generating)")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
