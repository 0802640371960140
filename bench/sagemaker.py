"""The SageMaker path under load: the real container process behind the loopback SageMaker router, called with
boto3 through :class:`SageMakerBackend`, at several container concurrency settings.

For each ``--concurrency`` value (the container's ``CLAWDBOT_CONTAINER_CONCURRENCY``: generations run at once)
the container is started fresh and ``--clients`` threads each stream ``--requests`` greedy completions of at most
``--tokens`` tokens through ``invoke_endpoint_with_response_stream``. Reported: aggregate completion tokens/s
(all tokens / wall time of the whole batch), median time to first text, median request latency. A single
in-process ``OnnxBackend`` stream on the same model gives the baseline the HTTP + event-stream path adds to.

    python -m bench.sagemaker [--model-dir DIR] [--concurrency 1 2 4] [--clients 4] [--requests 3] [--tokens 48]
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


def _stream_once(backend: Any, index: int, tokens: int) -> tuple[float, float, int]:
    """(seconds to first text, seconds to the end, completion tokens) of one streamed request."""
    from clawdbot.inference.types import ChatMessage, GenerationParams

    messages = [ChatMessage("user", f"{PROMPT} (request {index})")]
    started = time.perf_counter()
    first = None
    last = None
    for delta in backend.stream(messages, GenerationParams(max_tokens=tokens, temperature=0)):
        if delta.text and first is None:
            first = time.perf_counter() - started
        last = delta
    total = time.perf_counter() - started
    return (first if first is not None else total), total, last.completion_tokens if last else 0


def _run_setting(model_dir: Path, bundle_dir: Path, concurrency: int, clients: int, requests: int,
                 tokens: int, threads: int | None, scratch: Path) -> dict[str, Any]:
    from clawdbot.inference.sagemaker import SageMakerBackend, SageMakerConfig
    from tests.sagemaker.conftest import start_container, stop_container
    from tests.sagemaker.router import SageMakerRouter

    env = {"CLAWDBOT_CONTAINER_CONCURRENCY": str(concurrency)}
    if threads:
        env["CLAWDBOT_INFERENCE_THREADS"] = str(threads)
    else:
        env["CLAWDBOT_INFERENCE_THREADS"] = ""
    container = start_container(model_dir, scratch / f"serve-{concurrency}.log", env=env)
    try:
        with SageMakerRouter(container.url) as router:
            os.environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = router.url
            backend = SageMakerBackend("bench", bundle_dir, config=SageMakerConfig(max_attempts=1))
            _stream_once(backend, -1, 4)  # warm-up: client creation, first session run
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                timings = list(pool.map(lambda i: _stream_once(backend, i, tokens), range(clients * requests)))
            wall = time.perf_counter() - started
            backend.close()
    finally:
        stop_container(container)
    produced = sum(t[2] for t in timings)
    return {
        "container_concurrency": concurrency,
        "clients": clients,
        "requests": len(timings),
        "completion_tokens": produced,
        "tokens_per_s": round(produced / wall, 1),
        "median_first_text_s": round(statistics.median(t[0] for t in timings), 4),
        "median_latency_s": round(statistics.median(t[1] for t in timings), 4),
    }


def _direct(model_dir: Path, tokens: int, threads: int | None) -> dict[str, Any]:
    from clawdbot.inference.onnx import OnnxBackend, RuntimeOptions

    backend = OnnxBackend(model_dir, options=RuntimeOptions(threads=threads))
    _stream_once(backend, -1, 4)
    runs = [_stream_once(backend, i, tokens) for i in range(3)]
    backend.close()
    return {
        "tokens_per_s": round(statistics.median(t[2] / t[1] for t in runs), 1),
        "median_first_text_s": round(statistics.median(t[0] for t in runs), 4),
    }


def main(argv: list[str] | None = None) -> int:
    from clawdbot.config.settings import DEFAULT_MODEL_DIR
    from clawdbot.inference.onnx import available_cpus
    from clawdbot.inference.tokenizer_bundle import copy_bundle

    parser = argparse.ArgumentParser(prog="python -m bench.sagemaker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=3, help="requests per client")
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
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        bundle = copy_bundle(args.model_dir, scratch / args.model_dir.resolve().name)
        direct = _direct(args.model_dir, args.tokens, args.threads)
        settings = [_run_setting(args.model_dir, bundle, c, args.clients, args.requests, args.tokens, args.threads,
                                 scratch) for c in args.concurrency]
    result = {
        "model": args.model_dir.resolve().name,
        "machine": {"platform": platform.platform(), "cpus_available": available_cpus(),
                    "python": platform.python_version()},
        "threads": args.threads or "auto",
        "tokens_per_request": args.tokens,
        "direct_single_stream": direct,
        "through_sagemaker_path": settings,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
