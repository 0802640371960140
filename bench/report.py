"""The results table: ``python -m bench.report`` prints the key figures of ``bench/results/*.json`` as Markdown,
each with its target and whether it is met, for the README and ``docs/performance.md``.

Reads only what the benchmarks wrote (a missing file or key prints as "not measured"); measures nothing.

    python -m bench.report [--results bench/results]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True)
class Row:
    """One figure: where it comes from, how it prints, and its target (a check on the whole results)."""

    label: str
    file: str
    key: str
    unit: str = ""
    target: str = "-"
    check: Callable[[dict[str, Any]], bool] | None = None
    #: "noise": a wall-clock figure that the machine's other load moves; "steady": a count, CPU time or ratio.
    noise: str = "steady"


def _flat(results: dict[str, Any], store: str) -> bool:
    return results.get(f"{store}_store_ops_1000_minus_10") == 0


ROWS: tuple[Row, ...] = (
    Row("Gateway overhead p50, 64 clients at 100 turns/s", "overhead", "overhead_p50_ms", "ms", "≤ 2 ms",
        lambda r: r["overhead_p50_ms"] <= 2, "noise"),
    Row("Gateway overhead p99, 64 clients at 100 turns/s", "overhead", "overhead_p99_ms", "ms", "≤ 10 ms",
        lambda r: r["overhead_p99_ms"] <= 10, "noise"),
    Row("Gateway overhead p50, one client (paired)", "overhead", "sequential_paired_overhead_p50_ms", "ms",
        noise="noise"),
    Row("Gateway server CPU per turn (API - direct)", "overhead", "overhead_cpu_ms_per_turn", "ms"),
    Row("Capacity, 64 clients back to back: API / direct", "overhead", "c64_capacity_ratio_api_vs_direct", "x"),
    Row("API turns/s at capacity (instant backend)", "overhead", "c64_capacity_api_turns_per_s", "turns/s",
        noise="noise"),
    Row("chat_api cold start (import + init)", "coldstart", "chat_api_cold_start_ms", "ms", "≤ 250 ms",
        lambda r: r["chat_api_cold_start_ms"] <= 250, "noise"),
    Row("… its third-party imports alone (floor)", "coldstart", "chat_api_frameworks_import_ms", "ms",
        noise="noise"),
    Row("… cold start ÷ floor (paired)", "coldstart", "chat_api_cold_start_ratio_to_frameworks", "x"),
    Row("… its first request, an authenticated session read (key, limiter, store)", "coldstart",
        "chat_api_first_request_ms", "ms", noise="noise"),
    Row("… init + first request (paired)", "coldstart", "chat_api_cold_start_with_first_request_ms", "ms",
        noise="noise"),
    Row("chat_api with SnapStart (the stack's default): our after-restore hooks; init moves to the publish",
        "coldstart", "chat_api_snapstart_restore_hooks_ms", "ms", noise="noise"),
    Row("… its first request after a restore, an authenticated session read (key, limiter, store: primed at init)",
        "coldstart", "chat_api_snapstart_first_store_request_ms", "ms", noise="noise"),
    Row("chat_worker cold start", "coldstart", "chat_worker_cold_start_ms", "ms", noise="noise"),
    Row("Heavy modules imported by the handlers", "coldstart", "chat_api_heavy_modules_imported", "", "none",
        lambda r: not r["chat_api_heavy_modules_imported"] and not r["chat_worker_heavy_modules_imported"]),
    Row("chat_api function zipped", "coldstart", "chat_api_zipped_bytes", "bytes"),
    Row("Layer zipped", "coldstart", "layer_zipped_bytes", "bytes"),
    Row("API tokens/s ÷ bare decode loop (non-streamed)", "api_generation", "api_efficiency_ratio", "x",
        "≥ 0.95", lambda r: r["api_efficiency_ratio"] >= 0.95, "noise"),
    Row("API tokens/s ÷ bare decode loop (streamed)", "api_generation", "api_stream_efficiency_ratio", "x",
        "≥ 0.95", lambda r: r["api_stream_efficiency_ratio"] >= 0.95, "noise"),
    Row("Bare CPU ÷ API CPU per token (non-streamed)", "api_generation", "api_cpu_efficiency_ratio", "x"),
    Row("Bare CPU ÷ API CPU per token (streamed)", "api_generation", "api_stream_cpu_efficiency_ratio", "x"),
    Row("CPU per token: bare / API / API streamed", "api_generation", "bare_cpu_ms_per_token", "ms"),
    Row("Random 21 M-parameter model: API tokens/s ÷ bare (non-streamed / streamed)", "api_generation",
        "large_model_api_efficiency_ratio", "x", "≥ 0.95",
        lambda r: min(r["large_model_api_efficiency_ratio"], r["large_model_api_stream_efficiency_ratio"]) >= 0.95,
        "noise"),
    Row("… its CPU per token: bare / API / API streamed", "api_generation", "large_model_bare_cpu_ms_per_token",
        "ms"),
    Row("Bare decode loop", "api_generation", "bare_tokens_per_s", "tokens/s", noise="noise"),
    Row("Time to first token: bare / API streamed", "api_generation", "bare_ttft_ms", "ms", noise="noise"),
    Row("Time a turn takes through the API over the bare loop: full length / streamed / cut to 1 token",
        "api_generation", "api_added_ms_per_turn", "ms", noise="noise"),
    Row("… the same round trip with no app and no model, a thread busy outside the GIL: after 0.5 ms / a turn's "
        "length of work; the difference (the host's wake-up)", "api_generation", "host_added_ms_after_short_work",
        "ms", noise="noise"),
    Row("Prefix cache, a session's turns 1-12 (shipped model): server CPU per turn, off ÷ on", "prefix_cache",
        "prefix_cache_cpu_ratio_off_to_on", "x"),
    Row("… turn latency p50, last quarter of the turns: on / off", "prefix_cache",
        "prefix_cache_on_last_turns_p50_ms", "ms", noise="noise"),
    Row("Prompt encoding per turn after 100 turns of history (16 k tokens): whole text / from cached pieces",
        "prompt_encoding", "prompt_encoding_h100_whole_ms", "ms", noise="noise"),
    Row("… after 1,000 turns (158 k tokens)", "prompt_encoding", "prompt_encoding_h1000_whole_ms", "ms",
        noise="noise"),
    Row("Model sessions, 8 conversations x 10 turns on a 2 / 4-instance endpoint: prompt share from the cache "
        "with sessions", "model_sessions", "instances2_sessions_cached_prompt_share", "x"),
    Row("… without (random routing)", "model_sessions", "instances2_unrouted_cached_prompt_share", "x"),
    Row("… containers' CPU per turn, without ÷ with", "model_sessions",
        "instances2_container_cpu_unrouted_over_sessions", "x"),
    Row("Store ops per turn, SQLite, 10 → 1,000 turns of history", "history", "sqlite_h1000_store_ops_per_turn",
        "", "flat", lambda r: _flat(r, "sqlite")),
    Row("Store ops per turn, Redis, 10 → 1,000 turns", "history", "redis_h1000_store_ops_per_turn", "", "flat",
        lambda r: _flat(r, "redis")),
    Row("Store ops per turn, DynamoDB Local, 10 → 1,000 turns", "history", "dynamodb_h1000_store_ops_per_turn",
        "", "flat", lambda r: _flat(r, "dynamodb")),
    Row("Turn latency 1,000 ÷ 10 turns: SQLite / Redis / DynamoDB", "history", "sqlite_latency_ratio_1000_vs_10",
        "x", noise="noise"),
    Row("clawdbot serve, shipped model: turns/s at 1 / 4 / 16 / 64 sessions", "throughput",
        "serve_c1_turns_per_s", "turns/s", noise="noise"),
    Row("Worker draining a local SQS FIFO queue", "throughput", "worker_turns_per_s", "turns/s", noise="noise"),
    Row("A 400-token turn, server CPU: abandoned by its client after 50 ms / read to its end", "abandoned",
        "abandoned_turn_server_cpu_ms", "ms"),
    Row("A patient client's short turns, p50 / p99: alone / among 4 clients abandoning long turns", "abandoned",
        "patient_alone_p50_ms", "ms", noise="noise"),
)

#: Figures printed together in one cell: the row's key first, then these.
COMPANIONS: dict[str, tuple[str, ...]] = {
    "bare_ttft_ms": ("api_stream_ttft_ms",),
    "api_added_ms_per_turn": ("api_stream_added_ms_per_turn", "api_added_ms_per_1_token_turn"),
    "host_added_ms_after_short_work": ("host_added_ms_after_turn_work", "host_wake_after_turn_ms"),
    "bare_cpu_ms_per_token": ("api_cpu_ms_per_token", "api_stream_cpu_ms_per_token"),
    "large_model_api_efficiency_ratio": ("large_model_api_stream_efficiency_ratio",),
    "large_model_bare_cpu_ms_per_token": ("large_model_api_cpu_ms_per_token",
                                          "large_model_api_stream_cpu_ms_per_token"),
    "sqlite_h1000_store_ops_per_turn": ("sqlite_h10_store_ops_per_turn",),
    "redis_h1000_store_ops_per_turn": ("redis_h10_store_ops_per_turn",),
    "dynamodb_h1000_store_ops_per_turn": ("dynamodb_h10_store_ops_per_turn",),
    "sqlite_latency_ratio_1000_vs_10": ("redis_latency_ratio_1000_vs_10", "dynamodb_latency_ratio_1000_vs_10"),
    "prefix_cache_on_last_turns_p50_ms": ("prefix_cache_off_last_turns_p50_ms",),
    "prompt_encoding_h100_whole_ms": ("prompt_encoding_h100_pieces_ms",),
    "prompt_encoding_h1000_whole_ms": ("prompt_encoding_h1000_pieces_ms",),
    "instances2_sessions_cached_prompt_share": ("instances4_sessions_cached_prompt_share",),
    "instances2_unrouted_cached_prompt_share": ("instances4_unrouted_cached_prompt_share",),
    "instances2_container_cpu_unrouted_over_sessions": ("instances4_container_cpu_unrouted_over_sessions",),
    "serve_c1_turns_per_s": ("serve_c4_turns_per_s", "serve_c16_turns_per_s", "serve_c64_turns_per_s"),
    "abandoned_turn_server_cpu_ms": ("completed_turn_server_cpu_ms",),
    "patient_alone_p50_ms": ("patient_alone_p99_ms", "patient_with_abandoners_p50_ms",
                             "patient_with_abandoners_p99_ms"),
}


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    if isinstance(value, int) and value >= 100_000:
        return f"{value:,}"
    return str(value)


def _cell(row: Row, results: dict[str, Any]) -> str:
    if row.key not in results:
        return "not measured"
    keys = (row.key, *COMPANIONS.get(row.key, ()))
    values = [_fmt(results[k]) for k in keys if k in results]
    if row.key.endswith("_h1000_store_ops_per_turn"):  # shown as 10 → 1,000
        values.reverse()
        return " → ".join(values)
    return " / ".join(values) + (f" {row.unit}" if row.unit and row.unit != "x" else "")


def table(folder: Path = RESULTS) -> str:
    files: dict[str, dict[str, Any]] = {}
    for row in ROWS:
        if row.file not in files:
            path = folder / f"{row.file}.json"
            files[row.file] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    lines = ["| Figure | Measured | Target | Met | Noise |", "|---|---|---|---|---|"]
    for row in ROWS:
        results = files[row.file]
        met = "-"
        if row.check is not None and row.key in results:
            try:
                met = "yes" if row.check(results) else "**no**"
            except KeyError:
                met = "?"
        lines.append(f"| {row.label} | {_cell(row, results)} | {row.target} | {met} | {row.noise} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    print(table(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
