"""Model sessions on a multi-instance SageMaker endpoint: conversations whose turns return to the instance holding
their prefix cache (the default) against turns sent wherever the endpoint's routing sends them.

Each side is an endpoint of ``--instances`` real container processes (each count in turn; the shipped model,
one engine thread each) behind its own loopback SageMaker router, which sends a call that names no session to a
random instance (seeded; SageMaker's default routing is random too) and a call naming a session to the instance
that opened it. Both sides hold the same ``--conversations`` conversations of ``--turns`` streamed turns through
:class:`SageMakerBackend`, turn by turn interleaved across conversations (an instance's cache sees other
conversations' turns in between) and alternating between the sides, greedy, so both compute the same replies
(checked: the benchmark fails if a reply differs). With sessions on, each conversation's first turn pays one
extra call that opens its session (a streamed call cannot open one).

Reported per side: the share of prompt tokens the containers took from their caches, the containers' CPU per
turn (all instances, from ``/proc``: steadier than wall time on a shared machine) and the ratio of the two sides',
the median turn latency and that of the last quarter of the turns (the longest prompts).

Keys are prefixed with the instance count (``instances4_sessions_cached_prompt_share``...).

    python -m bench.model_sessions [--instances 2 4] [--conversations 8] [--turns 10] [--max-tokens 24]
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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.prefix_cache import QUESTIONS, SYSTEM  # the same conversations as the prefix cache's own benchmark

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "model_sessions.json"
SIDES = ("sessions", "unrouted")


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far."""
    from bench.serving import process_cpu_seconds

    return sum(process_cpu_seconds(pid) for pid in pids)


def _turn(backend: Any, messages: list[Any], params: Any) -> tuple[float, str, Any]:
    started = time.perf_counter()
    deltas = list(backend.stream(messages, params))
    return time.perf_counter() - started, "".join(d.text for d in deltas), deltas[-1]


def measure(args: argparse.Namespace, instances: int, scratch: Path) -> dict[str, Any]:
    import boto3

    from clawdbot.config.settings import DEFAULT_MODEL_DIR
    from clawdbot.inference.model_session import NEW_SESSION
    from clawdbot.inference.sagemaker import SageMakerBackend, SageMakerConfig
    from clawdbot.inference.tokenizer_bundle import copy_bundle
    from clawdbot.inference.types import ChatMessage, GenerationParams
    from tests.sagemaker.conftest import start_container, stop_container, wait_ready
    from tests.sagemaker.router import SageMakerRouter

    model_dir = args.model_dir or DEFAULT_MODEL_DIR
    bundle = copy_bundle(model_dir, scratch / model_dir.resolve().name)
    (scratch).mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        containers = {side: [start_container(model_dir, scratch / f"{side}-{i}.log", wait=False,
                                             env={"CLAWDBOT_CONTAINER_CONCURRENCY": "1"})
                             for i in range(instances)] for side in SIDES}
        for side in SIDES:
            for container in containers[side]:
                stack.callback(stop_container, container)
        for side in SIDES:
            for container in containers[side]:
                wait_ready(container)
        backends = {}
        for side in SIDES:
            router = stack.enter_context(SageMakerRouter([c.url for c in containers[side]], routing="random",
                                                         seed=args.seed))
            client = boto3.client("sagemaker-runtime", endpoint_url=router.url, region_name="us-east-1",
                                  aws_access_key_id="bench", aws_secret_access_key="bench")
            backends[side] = SageMakerBackend("bench", bundle, client=client, config=SageMakerConfig(
                max_attempts=1, model_sessions=side == "sessions"))
            _turn(backends[side], [ChatMessage("user", "warm-up")], GenerationParams(max_tokens=2))
        pids = {side: [c.process.pid for c in containers[side]] for side in SIDES}
        histories = {side: [[ChatMessage("system", SYSTEM)] for _ in range(args.conversations)] for side in SIDES}
        sessions: dict[str, list[str | None]] = {side: [NEW_SESSION] * args.conversations for side in SIDES}
        latency: dict[str, list[list[float]]] = {side: [] for side in SIDES}
        prompt = dict.fromkeys(SIDES, 0)
        cached = dict.fromkeys(SIDES, 0)
        cpu = dict.fromkeys(SIDES, 0.0)
        for turn in range(args.turns):
            rows: dict[str, list[float]] = {side: [] for side in SIDES}
            for conversation in range(args.conversations):
                question = QUESTIONS[(conversation + turn) % len(QUESTIONS)]
                order = SIDES if (turn + conversation) % 2 == 0 else SIDES[::-1]
                replies = {}
                for side in order:
                    messages = histories[side][conversation]
                    messages.append(ChatMessage("user", question))
                    params = GenerationParams(max_tokens=args.max_tokens, temperature=0.0,
                                              model_session=sessions[side][conversation])
                    before = _cpu_seconds(pids[side])
                    seconds, text, last = _turn(backends[side], messages, params)
                    cpu[side] += _cpu_seconds(pids[side]) - before
                    rows[side].append(seconds)
                    messages.append(ChatMessage("assistant", text))
                    sessions[side][conversation] = last.model_session or NEW_SESSION
                    prompt[side] += last.prompt_tokens
                    cached[side] += last.cached_tokens
                    replies[side] = text
                if len(set(replies.values())) != 1:
                    raise RuntimeError(f"the sides answered differently: {replies}")
            for side in SIDES:
                latency[side].append(rows[side])
        for backend in backends.values():
            backend.close()
    turns = args.turns * args.conversations
    quarter = max(1, args.turns // 4)
    results: dict[str, Any] = {}
    for side in SIDES:
        flat = [s for row in latency[side] for s in row]
        last = [s for row in latency[side][-quarter:] for s in row]
        results[f"{side}_cached_prompt_share"] = round(cached[side] / prompt[side], 3)
        results[f"{side}_container_cpu_ms_per_turn"] = round(cpu[side] * 1000 / turns, 2)
        results[f"{side}_turn_p50_ms"] = round(statistics.median(flat) * 1000, 2)
        results[f"{side}_last_quarter_p50_ms"] = round(statistics.median(last) * 1000, 2)
    results["prompt_tokens_per_turn"] = round(prompt["sessions"] / turns, 1)
    results["container_cpu_unrouted_over_sessions"] = round(cpu["unrouted"] / cpu["sessions"], 2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model_sessions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[2, 4],
                        help="container processes per endpoint (each count measured in turn)")
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=10, help="turns per conversation")
    parser.add_argument("--max-tokens", type=int, default=24, help="completion tokens per turn, at most")
    parser.add_argument("--seed", type=int, default=0, help="seed of the routers' random choices")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    results: dict[str, Any] = {"conversations": args.conversations, "turns_per_conversation": args.turns,
                               "max_tokens": args.max_tokens, "routing_without_sessions": "random (seeded)"}
    lines = []
    with tempfile.TemporaryDirectory(prefix="clawdbot-bench-model-sessions-") as scratch:
        for instances in args.instances:
            measured = measure(args, instances, Path(scratch) / f"instances{instances}")
            results |= {f"instances{instances}_{key}": value for key, value in measured.items()}
            lines.append(
                f"{instances} instances, {args.conversations} conversations x {args.turns} turns: prompt tokens from "
                f"the cache {measured['sessions_cached_prompt_share']:.0%} with model sessions, "
                f"{measured['unrouted_cached_prompt_share']:.0%} without; container CPU per turn "
                f"{measured['sessions_container_cpu_ms_per_turn']} / {measured['unrouted_container_cpu_ms_per_turn']}"
                f" ms ({measured['container_cpu_unrouted_over_sessions']}x); turn p50 "
                f"{measured['sessions_turn_p50_ms']} / {measured['unrouted_turn_p50_ms']} ms, last quarter "
                f"{measured['sessions_last_quarter_p50_ms']} / "
                f"{measured['unrouted_last_quarter_p50_ms']} ms")
    results = {"python_version": platform.python_version(), "cpus_available": len(os.sched_getaffinity(0)),
               "load_average_1min_start": round(load_start, 2), "load_average_1min_end": round(os.getloadavg()[0], 2),
               "wall_s": round(time.perf_counter() - started, 1), **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for line in lines:
        print(line, flush=True)
    print(f"results: {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
