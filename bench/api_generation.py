"""Generation efficiency through the API: tokens/s of the shipped ONNX model served by ``clawdbot serve``
(streamed and not) vs. the bare decode loop on the same model, and time to first token.

- ``api``: the server process of ``bench.serving`` (uvicorn, the full app with its key, rate limit and metrics)
  loading the shipped model; requests are stateless turns (system + user message), timed by the client from
  writing the request to the last byte (non-streamed) or the ``[DONE]`` event (streamed);
- ``bare``: ``DecoderEngine.generate`` on the prompt ids the API renders, no HTTP, no detokenization, no stop
  checks, the upper bound; run and timed inside the same server process, on the same backend (a benchmark-only
  route, ``bench.serving.with_bare_route``): the same model runs up to ~10% faster or slower in one process
  than in another, for the process's life, which a bare loop in the benchmark's own process would count as API
  efficiency.

- ``large_model_*``: the same on a random model of the shipped architecture and tokenizer, wider and deeper
  (``--large-hidden 512 --large-layers 6``: 21 M parameters, ~4 ms per token here against the shipped 0.3 ms),
  built at start by ``bench.random_model`` (``train`` extra): the API's fixed per-token costs against a costlier
  token, so efficiency shows as a function of the model's per-token cost.

- ``host_*``: the same server's round trip with no app and no model: a worker thread busy outside the GIL (as
  ONNX Runtime is) for 0.5 ms and for as long as the bare turn, alternating (``bench.serving.BUSY_PATH``). What the
  long wait adds over the short one (``host_wake_after_turn_ms``) is the machine's cost of waking the event loop
  and the client after a turn's wait, which an API turn pays too and the bare loop, timed in its thread, does not.

Both generate exactly the same tokens: sampling at temperature 1 with a fixed seed is deterministic, and the
seeds used are ones whose completion runs to ``--tokens`` without an end-of-sequence token (found at start). The
runs alternate api/bare, one at a time (never two generations at once), and efficiency is the median of the
per-round ratios ``api tokens/s ÷ bare tokens/s``.

    python -m bench.api_generation [--tokens 128] [--rounds 24] [--large-hidden 512 --large-layers 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.loadgen import Connection

if TYPE_CHECKING:
    from bench.serving import Server
    from clawdbot.inference.onnx import OnnxBackend

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "api_generation.json"
MODEL_DIR = REPO / "models" / "clawdbot-tiny-chat"
SYSTEM = "You are Clawdbot, a friendly and concise assistant."
PROMPT = "Explain how to bake bread, step by step, in detail."
TARGET_EFFICIENCY = 0.95
#: The short work of the host probe: a round trip with no wait worth the name.
SHORT_WORK_S = 0.0005


def _messages() -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]


def long_seeds(backend: OnnxBackend, tokens: int, wanted: int, tries: int = 400) -> list[int]:
    """Seeds whose sampled completion of ``tokens`` tokens contains no end-of-sequence token."""
    from clawdbot.inference.types import ChatMessage, GenerationParams

    messages = [ChatMessage(m["role"], m["content"]) for m in _messages()]
    seeds = []
    for seed in range(tries):
        completion = backend.generate(messages, GenerationParams(max_tokens=tokens, temperature=1.0, seed=seed))
        if completion.finish_reason == "length":
            seeds.append(seed)
            if len(seeds) == wanted:
                break
    return seeds


async def _bare(conn: Connection, prompt: list[int], tokens: int, seed: int) -> tuple[tuple[float, float, int], float]:
    """((seconds to first token, seconds to last, tokens), CPU seconds) of the engine's own loop, run and timed
    in the server process (``bench.serving.with_bare_route``)."""
    from bench.serving import BARE_PATH

    body = json.dumps({"prompt_ids": prompt, "tokens": tokens, "seed": seed}).encode()
    response = await conn.send(conn.encode("POST", BARE_PATH, body))
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.body[:300]!r}")
    timed = json.loads(response.body)
    return (timed["first_s"], timed["total_s"], timed["tokens"]), timed["cpu_s"]


async def _api(conn: Connection, model: str, key: str, tokens: int, seed: int,
               stream: bool) -> tuple[float | None, float, int]:
    """(seconds to first content, seconds to the end, completion tokens) of one API turn."""
    body: dict[str, Any] = {"model": model, "messages": _messages(), "max_tokens": tokens, "temperature": 1.0,
                            "seed": seed}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    raw = conn.encode("POST", "/v1/chat/completions", json.dumps(body).encode(), {"authorization": f"Bearer {key}"})
    response = await conn.send(raw, content_marker=b'{"content": "' if stream else None)
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.body[:300]!r}")
    if stream:
        events = [line[6:] for line in response.body.split(b"\n") if line.startswith(b"data: {")]
        usage = json.loads(events[-1])["usage"]
        # Content deltas are {"content": ...}; the role chunk ({"role": ..., "content": ""}) does not match.
        return response.first_content_s, response.total_s, usage["completion_tokens"]
    return None, response.total_s, json.loads(response.body)["usage"]["completion_tokens"]


async def _busy(conn: Connection, seconds: float) -> float:
    """Seconds a round trip to the server's busy route (``bench.serving.BUSY_PATH``: a worker thread busy for
    ``seconds`` outside the GIL, no model) takes over that work."""
    from bench.serving import BUSY_PATH

    response = await conn.send(conn.encode("POST", BUSY_PATH, json.dumps({"busy_s": seconds}).encode()))
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.body[:300]!r}")
    return response.total_s - json.loads(response.body)["busy_s"]


def measure(args: argparse.Namespace, scratch: Path, model_dir: Path, rounds_wanted: int) -> dict[str, Any]:
    """The figures of one model: bare loop and API turns, ``rounds_wanted`` rounds after a warm-up round."""
    from bench.overhead import prepare_data
    from bench.serving import serve
    from clawdbot.inference.onnx import OnnxBackend
    from clawdbot.inference.types import ChatMessage

    backend = OnnxBackend(model_dir)
    seeds = long_seeds(backend, args.tokens, wanted=3)
    if not seeds:
        raise RuntimeError(f"no seed gives {args.tokens} tokens without EOS; lower --tokens")
    prompt = backend.encode_prompt([ChatMessage(m["role"], m["content"]) for m in _messages()])
    key, _ = prepare_data(scratch, 0, 0)
    rows: dict[str, list[tuple[float | None, float, int]]] = {"api": [], "api_stream": [], "bare": []}
    #: CPU seconds per turn of the server process (all its threads): for the bare loop, around the loop only.
    cpu: dict[str, list[float]] = {"api": [], "api_stream": [], "bare": []}
    #: Seconds a 1-token turn (prefill and one sample) takes through the API over the bare loop, per round.
    one_token: list[float] = []
    #: Seconds a round trip to the busy route takes over its work: after SHORT_WORK_S of it, and after a turn's.
    host: dict[str, list[float]] = {"short": [], "turn": []}

    async def rounds(server: Server) -> None:
        port = server.port
        conn = Connection("127.0.0.1", port)
        try:
            for index in range(rounds_wanted + 1):  # round 0 warms up both sides
                seed = seeds[index % len(seeds)]
                order = ["api", "api_stream", "bare"] if index % 2 else ["bare", "api_stream", "api"]
                for name in order:
                    row: tuple[float | None, float, int]
                    if name == "bare":
                        row, cpu_s = await _bare(conn, prompt, args.tokens, seed)
                    else:
                        cpu_before = server.cpu_seconds()
                        row = await _api(conn, backend.model_id, key, args.tokens, seed, name == "api_stream")
                        cpu_s = server.cpu_seconds() - cpu_before
                    if row[2] != args.tokens:
                        raise RuntimeError(f"{name} generated {row[2]} tokens, expected {args.tokens}")
                    if index:
                        rows[name].append(row)
                        cpu[name].append(cpu_s)
            # The same turn cut to one token, API and bare back to back: the API's fixed cost with no wait in it.
            for index in range(rounds_wanted):
                seed = seeds[index % len(seeds)]
                api_row = await _api(conn, backend.model_id, key, 1, seed, False)
                (_, bare_s, _), _ = await _bare(conn, prompt, 1, seed)
                one_token.append(api_row[1] - bare_s)
            # The machine alone: the same round trip with no app and no model, a worker thread busy outside the
            # GIL for SHORT_WORK_S or for as long as the bare turn (bare_latency_ms), alternating. The difference
            # is what waking the event loop and the client after a turn's wait costs on this host
            # (docs/performance.md).
            turn_s = statistics.median(r[1] for r in rows["bare"])
            for index in range(rounds_wanted):
                order = (("short", SHORT_WORK_S), ("turn", turn_s))
                for name, seconds in order if index % 2 else order[::-1]:
                    host[name].append(await _busy(conn, seconds))
        finally:
            conn.close()

    # Every round repeats one prompt: with the prefix cache both the API and the bare loop would skip its prefill,
    # which measures the benchmark's repetition, not the API (bench.prefix_cache measures the cache).
    with serve("api", scratch, backend="onnx", model_dir=model_dir, bare_route=True,
               env={"CLAWDBOT_PREFIX_CACHE_MB": "0"}) as server:
        asyncio.run(rounds(server))

    def rate(row: tuple[float | None, float, int]) -> float:
        return row[2] / row[1]

    results: dict[str, Any] = {"model": backend.model_id, "prompt_tokens": len(prompt),
                               "completion_tokens": args.tokens, "rounds": rounds_wanted, "seeds": seeds}
    for name, values in rows.items():
        results[f"{name}_tokens_per_s"] = round(statistics.median(rate(r) for r in values), 1)
        results[f"{name}_latency_ms"] = round(statistics.median(r[1] for r in values) * 1000, 2)
    results["bare_ttft_ms"] = round(statistics.median(r[0] for r in rows["bare"]) * 1000, 2)  # type: ignore[misc]
    results["api_stream_ttft_ms"] = round(
        statistics.median(r[0] for r in rows["api_stream"] if r[0] is not None) * 1000, 2)
    # What a turn takes through the API over the bare loop, paired per round: at the full length, and at one token.
    # On a VM the first is larger than the second when the turn lasts: what slept through the generation (the event
    # loop, the client) wakes late, a cost the bare loop, timed in its own thread, does not have (docs/performance.md).
    for name in ("api", "api_stream"):
        added = [a[1] - b[1] for a, b in zip(rows[name], rows["bare"], strict=True)]
        results[f"{name}_added_ms_per_turn"] = round(statistics.median(added) * 1000, 3)
    results["api_added_ms_per_1_token_turn"] = round(statistics.median(one_token) * 1000, 3)
    for name in ("short", "turn"):
        results[f"host_added_ms_after_{name}_work"] = round(statistics.median(host[name]) * 1000, 3)
    results["host_wake_after_turn_ms"] = round(
        statistics.median(t - s for t, s in zip(host["turn"], host["short"], strict=True)) * 1000, 3)
    for name in ("api", "api_stream"):
        ratios = sorted(rate(a) / rate(b) for a, b in zip(rows[name], rows["bare"], strict=True))
        results[f"{name}_efficiency_ratio"] = round(statistics.median(ratios), 4)
        results[f"{name}_efficiency_ratio_q25"] = round(ratios[len(ratios) // 4], 4)
        results[f"{name}_efficiency_ratio_q75"] = round(ratios[(3 * len(ratios)) // 4], 4)
    # Summed over the rounds: /proc counts CPU in 10 ms ticks, a few per turn.
    for name, values in cpu.items():
        results[f"{name}_cpu_ms_per_token"] = round(sum(values) * 1000 / (len(values) * args.tokens), 4)
    for name in ("api", "api_stream"):  # steadier than wall time on a shared machine (others' load is not in it)
        results[f"{name}_cpu_efficiency_ratio"] = round(sum(cpu["bare"]) / sum(cpu[name]), 4)
    backend.close()
    return results


def measure_large(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """The same figures on a random model of the shipped architecture at ``--large-hidden``/``--large-layers``
    (built here, a few seconds), keyed ``large_model_*``: the API's fixed per-token costs against a token that
    costs ~10x the shipped model's."""
    from bench.random_model import parameter_count

    model_dir = scratch / "large-model" / f"clawdbot-random-{args.large_hidden}x{args.large_layers}"
    # In a child process: torch stays out of the process that times the bare loop.
    built = subprocess.run([sys.executable, "-m", "bench.random_model", str(model_dir), "--hidden",
                            str(args.large_hidden), "--layers", str(args.large_layers)],
                           cwd=REPO, capture_output=True, text=True, check=False)
    if built.returncode:
        raise RuntimeError(f"building the random model failed:\n{built.stderr[-3000:]}")
    figures = measure(args, scratch / "large-serving", model_dir, args.large_rounds)
    figures |= {"hidden_size": args.large_hidden, "layers": args.large_layers,
                "parameters": parameter_count(args.large_hidden, args.large_layers)}
    return {f"large_model_{key}": value for key, value in figures.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api_generation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=128, help="completion tokens per turn")
    # A round of the shipped model is ~0.25 s: 24 of them make the median ratio steady on a shared machine,
    # where 8 moved by +-2% from one run to the next.
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--large-hidden", type=int, default=512, help="hidden size of the random larger model")
    parser.add_argument("--large-layers", type=int, default=6, help="its layers (0: skip it)")
    parser.add_argument("--large-rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="clawdbot-bench-api-generation-") as scratch:
        results = measure(args, Path(scratch) / "shipped", args.model_dir, args.rounds)
        if args.large_layers:
            results |= measure_large(args, Path(scratch))
    results["target_efficiency_ratio"] = TARGET_EFFICIENCY
    results = {"python_version": platform.python_version(), "cpus_available": len(os.sched_getaffinity(0)),
               "load_average_1min_start": round(load_start, 2), "load_average_1min_end": round(os.getloadavg()[0], 2),
               "wall_s": round(time.perf_counter() - started, 1), **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"CPU per token: bare {results['bare_cpu_ms_per_token']} ms, API {results['api_cpu_ms_per_token']} ms, "
          f"streamed {results['api_stream_cpu_ms_per_token']} ms", flush=True)
    print(f"bare {results['bare_tokens_per_s']} tokens/s; API {results['api_tokens_per_s']} "
          f"({results['api_efficiency_ratio']:.1%}), streamed {results['api_stream_tokens_per_s']} "
          f"({results['api_stream_efficiency_ratio']:.1%}); TTFT bare {results['bare_ttft_ms']} ms, API stream "
          f"{results['api_stream_ttft_ms']} ms; added per turn: API {results['api_added_ms_per_turn']} ms, streamed "
          f"{results['api_stream_added_ms_per_turn']} ms, API at 1 token "
          f"{results['api_added_ms_per_1_token_turn']} ms; results: {args.out}")
    if args.large_layers:
        print(f"random {args.large_hidden}x{args.large_layers} model, CPU per token: bare "
              f"{results['large_model_bare_cpu_ms_per_token']} ms, API {results['large_model_api_cpu_ms_per_token']} "
              f"ms, streamed {results['large_model_api_stream_cpu_ms_per_token']} ms; tokens/s API "
              f"{results['large_model_api_efficiency_ratio']:.1%} of bare, streamed "
              f"{results['large_model_api_stream_efficiency_ratio']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
