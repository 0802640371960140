"""The SageMaker path under load: the real container process behind the loopback SageMaker router, called with
boto3 through :class:`SageMakerBackend`, at several container concurrency settings.

Every setting runs the same workload: ``--clients`` x ``--requests`` chat turns, each sampled with its own seed
(so each turn produces the same tokens in every setting: ``completion_tokens`` must match across rows) and at most
``--tokens`` tokens. ``direct`` runs that workload one turn after another on an in-process ``OnnxBackend`` (no
HTTP, no event stream, no concurrency): the baseline. For each ``--concurrency`` value (the container's
``CLAWDBOT_CONTAINER_CONCURRENCY``) a fresh container serves the workload streamed by ``--clients`` threads
through ``invoke_endpoint_with_response_stream``. Reported: turns/s, completion tokens/s (wall time of the whole
workload), median time to the first text and median turn latency.

    python -m bench.sagemaker [--model-dir DIR] [--concurrency 1 2 4] [--clients 4] [--requests 4] [--tokens 48]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "sagemaker.json"
PROMPT = "Hi! I'm planning a trip to the mountains next week. What should I pack?"


def _workload(turns: int, tokens: int) -> list[tuple[list[Any], Any]]:
    from clawdbot.inference.types import ChatMessage, GenerationParams

    return [([ChatMessage("user", f"{PROMPT} (turn {i})")], GenerationParams(max_tokens=tokens, temperature=0.8,
                                                                             seed=i)) for i in range(turns)]


def _stream_once(backend: Any, turn: tuple[list[Any], Any]) -> tuple[float, float, int]:
    """(seconds to first text, seconds to the end, completion tokens) of one streamed turn."""
    messages, params = turn
    started = time.perf_counter()
    first = None
    last = None
    for delta in backend.stream(messages, params):
        if delta.text and first is None:
            first = time.perf_counter() - started
        last = delta
    total = time.perf_counter() - started
    return (first if first is not None else total), total, last.completion_tokens if last else 0


def _summary(timings: list[tuple[float, float, int]], wall: float) -> dict[str, Any]:
    produced = sum(t[2] for t in timings)
    return {
        "turns": len(timings),
        "completion_tokens": produced,
        "turns_per_s": round(len(timings) / wall, 2),
        "tokens_per_s": round(produced / wall, 1),
        "median_first_text_s": round(statistics.median(t[0] for t in timings), 4),
        "median_latency_s": round(statistics.median(t[1] for t in timings), 4),
    }


def _through_sagemaker(model_dir: Path, bundle_dir: Path, concurrency: int, clients: int,
                       workload: list[tuple[list[Any], Any]], threads: int | None,
                       scratch: Path) -> dict[str, Any]:
    from clawdbot.inference.sagemaker import SageMakerBackend, SageMakerConfig
    from tests.sagemaker.conftest import start_container, stop_container
    from tests.sagemaker.router import SageMakerRouter

    env = {"CLAWDBOT_CONTAINER_CONCURRENCY": str(concurrency), "CLAWDBOT_INFERENCE_THREADS": str(threads or "")}
    container = start_container(model_dir, scratch / f"serve-{concurrency}.log", env=env)
    try:
        with SageMakerRouter(container.url) as router:
            os.environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = router.url
            backend = SageMakerBackend("bench", bundle_dir, config=SageMakerConfig(max_attempts=1))
            _stream_once(backend, workload[0])  # warm-up: client creation, first session run
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                timings = list(pool.map(lambda turn: _stream_once(backend, turn), workload))
            wall = time.perf_counter() - started
            backend.close()
    finally:
        stop_container(container)
    return {"container_concurrency": concurrency, "clients": clients, **_summary(timings, wall)}


def _direct(model_dir: Path, workload: list[tuple[list[Any], Any]], threads: int | None) -> dict[str, Any]:
    from clawdbot.inference.onnx import OnnxBackend, RuntimeOptions

    backend = OnnxBackend(model_dir, options=RuntimeOptions(threads=threads))
    _stream_once(backend, workload[0])
    started = time.perf_counter()
    timings = [_stream_once(backend, turn) for turn in workload]
    wall = time.perf_counter() - started
    backend.close()
    return _summary(timings, wall)


def main(argv: list[str] | None = None) -> int:
    from clawdbot.config.settings import DEFAULT_MODEL_DIR
    from clawdbot.inference.onnx import available_cpus
    from clawdbot.inference.tokenizer_bundle import copy_bundle

    parser = argparse.ArgumentParser(prog="python -m bench.sagemaker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=4, help="turns per client")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: CPUs available)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (args.model_dir / "model.onnx").is_file():
        print(f"no model at {args.model_dir}", file=sys.stderr)
        return 1

    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)
    workload = _workload(args.clients * args.requests, args.tokens)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        bundle = copy_bundle(args.model_dir, scratch / args.model_dir.resolve().name)
        direct = _direct(args.model_dir, workload, args.threads)
        settings = [_through_sagemaker(args.model_dir, bundle, c, args.clients, workload, args.threads, scratch)
                    for c in args.concurrency]
    # Flat keys (``direct_*`` and ``sagemaker_c<container concurrency>_*``), as every results file has them.
    result: dict[str, Any] = {
        "model": args.model_dir.resolve().name, "platform": platform.platform(),
        "cpus_available": available_cpus(), "python_version": platform.python_version(),
        "threads": args.threads or "auto", "max_tokens_per_turn": args.tokens,
        "sampling": "temperature 0.8, seed = turn index",
        "container_concurrencies": list(args.concurrency),
        **{f"direct_{key}": value for key, value in direct.items()},
    }
    for setting in settings:
        prefix = f"sagemaker_c{setting['container_concurrency']}"
        result |= {f"{prefix}_{key}": value for key, value in setting.items() if key != "container_concurrency"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
