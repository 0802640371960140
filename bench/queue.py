"""What the queue machinery costs a turn, apart from the model: cold import of the worker, and the idempotency
record's claim → complete → read cycle on each engine.

- ``import_ms``: median wall time of ``import clawdbot.queue.worker`` in a fresh interpreter (what the worker
  Lambda's cold start pays for Powertools batch + idempotency and our wiring, before loading a model);
- per engine, median milliseconds of ``save_inprogress`` (the conditional claim), ``save_success`` (storing the
  outcome) and ``get_record`` (what ``GET .../turns/{id}`` reads), over ``--records`` fresh turn ids;
- ``turn``: whole queued turns through the worker's record handler and Powertools' batch processor on the shipped
  model (SQLite): median handler wall time, median generation time as the chat service records it
  (``latency_ms``: from the prepared context to the last token), and the rest: parsing, the idempotency claim and
  completion, the transcript check, building the context and the append (``--turns`` of them; 0 skips it).

SQLite always runs (a temporary folder). Redis and DynamoDB run when given an endpoint: ``--redis-url
redis://127.0.0.1:6379/0``, ``--dynamodb-endpoint http://127.0.0.1:8000`` (DynamoDB Local; a table is created).
Numbers against local servers measure our code and the client, not AWS's network latency.

    python -m bench.queue [--records 200] [--turns 20] [--imports 5] [--redis-url URL] [--dynamodb-endpoint URL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer

    from clawdbot.config.settings import Settings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "queue.json"
OUTCOME = {"status": "done", "model": "bench", "completed_at": 0, "finish_reason": "stop",
           "reply": {"role": "assistant", "content": "A typical short reply of a few dozen words. " * 4},
           "usage": {"prompt_tokens": 40, "completion_tokens": 40, "total_tokens": 80}}


def _import_ms(runs: int) -> float:
    code = "import time; t = time.perf_counter(); import clawdbot.queue.worker; print(time.perf_counter() - t)"
    samples = [float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                    cwd=REPO).stdout) * 1000 for _ in range(runs)]
    return round(statistics.median(samples), 1)


def _cycle(layer: BasePersistenceLayer, records: int) -> dict[str, float]:
    timings: dict[str, list[float]] = {"save_inprogress_ms": [], "save_success_ms": [], "get_record_ms": []}
    for _ in range(records):
        data = {"owner": None, "session_id": "sess_bench", "turn_id": uuid.uuid4().hex}
        started = time.perf_counter()
        layer.save_inprogress(data, remaining_time_in_millis=60_000)
        claimed = time.perf_counter()
        layer.save_success(data, OUTCOME)
        completed = time.perf_counter()
        layer.get_record(data)
        read = time.perf_counter()
        timings["save_inprogress_ms"].append((claimed - started) * 1000)
        timings["save_success_ms"].append((completed - claimed) * 1000)
        timings["get_record_ms"].append((read - completed) * 1000)
    return {name: round(statistics.median(values), 3) for name, values in timings.items()}


def _turns(count: int, data_dir: Path) -> dict[str, float]:
    from aws_lambda_powertools.utilities.batch import process_partial_response

    from clawdbot.config.settings import Settings
    from clawdbot.queue.messages import TurnMessage
    from clawdbot.queue.worker import TurnWorker, new_processor
    from clawdbot.testing import LambdaContext, load_event

    worker = TurnWorker.from_settings(Settings(data_dir=data_dir / "turns"))
    event = load_event("sqs-chat-turn")
    message = TurnMessage.model_validate_json(event["Records"][0]["body"])
    worker.chat.store.create(message.session_id)
    handler_ms: list[float] = []
    generation_ms: list[float] = []
    for i in range(count + 1):  # the first turn warms the model up and is not counted
        turn = message.model_copy(update={"turn_id": f"bench-{i}"})
        event["Records"][0]["body"] = turn.to_body()
        started = time.perf_counter()
        response = process_partial_response(event=event, record_handler=worker.record_handler,
                                            processor=new_processor(), context=LambdaContext())
        elapsed = (time.perf_counter() - started) * 1000
        assert response == {"batchItemFailures": []}, response
        reply = worker.chat.store.read_recent(message.session_id, 1)[0]
        if i:
            handler_ms.append(elapsed)
            generation_ms.append(float(reply.attributes["latency_ms"]))
    rest_ms = [h - g for h, g in zip(handler_ms, generation_ms, strict=True)]
    return {"handler_ms": round(statistics.median(handler_ms), 2),
            "generation_ms": round(statistics.median(generation_ms), 2),
            "rest_of_turn_ms": round(statistics.median(rest_ms), 2)}


def _settings(engine: str, data_dir: Path, args: argparse.Namespace) -> Settings:
    from clawdbot.config.settings import Settings

    values: dict[str, Any] = {"session_store": engine, "data_dir": data_dir}
    if engine == "redis":
        values["redis_url"] = args.redis_url
    if engine == "dynamodb":
        import boto3

        from clawdbot.sessions.factory import ensure_dynamodb_table

        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = args.dynamodb_endpoint
        for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                            ("AWS_DEFAULT_REGION", "us-east-1")):
            os.environ.setdefault(name, value)
        values["dynamodb_table"] = f"clawdbot-bench-{uuid.uuid4().hex[:8]}"
        ensure_dynamodb_table(boto3.client("dynamodb"), values["dynamodb_table"])
    return Settings(**values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queue", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--imports", type=int, default=5)
    parser.add_argument("--redis-url")
    parser.add_argument("--dynamodb-endpoint")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from clawdbot.queue.idempotency import build_persistence_layer

    results: dict[str, Any] = {"cpu_count": os.cpu_count(), "records": args.records,
                               "import_ms": _import_ms(args.imports)}
    engines = ["sqlite"] + (["redis"] if args.redis_url else []) + (["dynamodb"] if args.dynamodb_endpoint else [])
    with tempfile.TemporaryDirectory(prefix="clawdbot-bench-queue-") as scratch:
        for engine in engines:
            layer = build_persistence_layer(_settings(engine, Path(scratch), args))
            cycle = _cycle(layer, args.records)
            results |= {f"{engine}_{key}": value for key, value in cycle.items()}  # flat: sqlite_get_record_ms
            print(f"{engine}: {cycle}", flush=True)
        if args.turns:
            turn = _turns(args.turns, Path(scratch))
            results |= {f"turn_{key}": value for key, value in turn.items()}
            print(f"turn: {turn}", flush=True)
    print(f"import clawdbot.queue.worker: {results['import_ms']} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
