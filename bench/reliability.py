"""Reliability figures: the reliability suite run whole, then the full soak, summed up in one table.

1. ``pytest tests/reliability`` (races on every store, redelivery and ``Idempotency-Key`` retries, faults through
   proxies and process kills, Hypothesis properties, security, the Schemathesis fuzz with ``--fuzz-examples`` per
   operation and phase) with ``CLAWDBOT_RELIABILITY_FIGURES`` set, so every test adds what it counted: turns
   attempted and stored, faults injected and survived, fuzz cases run. The suite's short soak is left out: step 2
   is the long one.
2. The soak (``tests.reliability.soak``): ``--soak-seconds`` of mixed traffic against ``clawdbot serve`` on
   SQLite (or ``--soak-store redis|dynamodb``: a local redis-server or DynamoDB Local), then the consistency
   checker over the whole store and a comparison with what every client was answered.

Writes ``bench/results/reliability.json`` and prints the table ``docs/reliability.md`` and the README show.
Exits non-zero when a test failed or the soak found a problem.

    python -m bench.reliability [--soak-seconds 120] [--soak-workers 8] [--fuzz-examples 50] [--skip-suite]
                                [--soak-store sqlite|redis|dynamodb]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from clawdbot.config.settings import DEFAULT_MODEL_DIR

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "reliability.json"
SOAK_WORKERS = 8
SOAK_MAX_BODY_BYTES = 64 * 1024


def run_suite(fuzz_examples: int, scratch: Path) -> dict[str, Any]:
    """The reliability suite in a child pytest; its figures and test counts."""
    figures_path, junit = scratch / "figures.json", scratch / "junit.xml"
    env = {**os.environ, "CLAWDBOT_RELIABILITY_FIGURES": str(figures_path),
           "CLAWDBOT_FUZZ_EXAMPLES": str(fuzz_examples)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider",
                           "--deselect", "tests/reliability/test_reliability_soak.py", f"--junitxml={junit}"],
                          cwd=REPO, env=env, check=False)
    suite = ET.parse(junit).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    assert suite is not None
    counts = {name: int(suite.get(name, "0")) for name in ("tests", "failures", "errors", "skipped")}
    figures = json.loads(figures_path.read_text()) if figures_path.exists() else {}
    return {"suite_exit_code": done.returncode, "suite_tests": counts["tests"],
            "suite_failed": counts["failures"] + counts["errors"], "suite_skipped": counts["skipped"],
            "suite_wall_s": round(time.perf_counter() - started, 1), "fuzz_examples_per_operation": fuzz_examples,
            **figures}


def run_full_soak(seconds: float, workers: int, scratch: Path, store_kind: str = "sqlite") -> dict[str, Any]:
    """The soak against a fresh ``clawdbot serve`` on ``store_kind``, then the store walked whole.

    Redis and DynamoDB are the real local servers the tests use (redis-server, DynamoDB Local), started here.
    """
    from tests.reliability.conftest import base_env, direct_store

    model_dir = Path(os.environ.get("CLAWDBOT_MODEL_DIR", DEFAULT_MODEL_DIR))
    env = {**base_env(scratch / "soak-data", model_dir), "CLAWDBOT_SESSION_STORE": store_kind,
           "CLAWDBOT_MAX_BODY_BYTES": str(SOAK_MAX_BODY_BYTES),
           # the prefix cache fills to its size by design: kept small, what grows is a leak (test_reliability_soak)
           "CLAWDBOT_PREFIX_CACHE_MB": "1"}
    with contextlib.ExitStack() as stack:
        direct: dict[str, Any] = {}
        if store_kind == "redis":
            from tests.fixtures.servers import run_redis_server

            direct["redis_url"] = env["CLAWDBOT_REDIS_URL"] = stack.enter_context(run_redis_server(scratch))
        elif store_kind == "dynamodb":
            from tests.fixtures.servers import FAKE_AWS_ENV, run_dynamodb_local

            endpoint = stack.enter_context(run_dynamodb_local(scratch))
            env |= {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
                    "CLAWDBOT_DYNAMODB_TABLE": "clawdbot-soak"}  # clawdbot serve creates it (a local endpoint)
            direct |= {"dynamodb_endpoint": endpoint, "table": "clawdbot-soak"}

        def open_store() -> Any:
            return direct_store(store_kind, scratch / "soak-data", **direct)

        figures = _soak_and_check(env, seconds, workers, scratch, model_dir, open_store)
    return {"soak_store": store_kind, **figures}


def _soak_and_check(env: dict[str, str], seconds: float, workers: int, scratch: Path, model_dir: Path,
                    open_store: Any) -> dict[str, Any]:
    from clawdbot.inference.tokenizer_bundle import TokenizerBundle
    from clawdbot.reliability.consistency import check_store
    from tests.reliability.conftest import start_serve
    from tests.reliability.soak import run_soak

    server = start_serve(env, scratch / "soak-serve.log")
    try:
        result = run_soak(server.base_url, server.process.pid, TokenizerBundle(model_dir).model_id, seconds,
                          workers=workers, max_body_bytes=SOAK_MAX_BODY_BYTES)
    finally:
        server.stop()
    store = open_store()
    try:
        report = check_store(store)
    finally:
        store.close()
    stored = {s: report.turn_ids.get(s) for s in result.expected_turns}
    missing = sum(1 for s, turns in result.expected_turns.items() if stored[s] != turns)
    figures = result.figures()
    # flat keys, one per action (soak_requests_chat, soak_requests_bad_broken_json, ...)
    figures.update({f"soak_requests_{action.replace(':', '_')}": count
                    for action, count in sorted(result.requests.items())})
    figures.update({
        "soak_sessions_checked": report.sessions, "soak_entries_checked": report.entries,
        "soak_turns_in_live_sessions": sum(len(turns) for turns in result.expected_turns.values()),
        "soak_turns_stored": report.turns, "soak_consistency_problems": len(report.problems),
        "soak_sessions_not_as_answered": missing, "soak_server_tracebacks": server.log_text().count("Traceback"),
        "soak_failures_sample": result.valid_failures + result.bad_mismatches + report.problems[:10],
    })
    return figures


def table(results: dict[str, Any]) -> str:
    """The figures as the Markdown table the docs show."""
    get = results.get
    rows = [
        ("Reliability tests passed / run (the 2-minute soak below replaces the short one)",
         f"{get('suite_tests', 0) - get('suite_failed', 0)} / {get('suite_tests', 0)} in {get('suite_wall_s', '?')} s"),
        ("Concurrent turns on one session (3 stores): attempted / stored once",
         f"{get('race_turns_attempted', 0)} / {get('race_turns_stored', 0)}"),
        ("Idempotent retries and concurrent duplicates answered as one turn",
         f"{get('idempotency_retries', 0) + get('idempotency_concurrent_requests', 0)}"),
        ("Faults injected / survived (of which process kills)",
         f"{get('faults_injected', 0)} / {get('faults_survived', 0)} ({get('process_kills', 0)})"),
        ("Store state-machine steps (Hypothesis, 3 engines)", f"{get('property_store_steps', 0)}"),
        ("Fuzz cases run (Schemathesis, every operation)", f"{get('fuzz_cases', 0)}"),
        ("Ownership probes answered 404 / requests log-scanned", f"{get('security_ownership_probes', 0)} / "
                                                                 f"{get('security_log_scan_requests', 0)}"),
        ("Soak: store, duration, clients, requests (req/s)",
         f"{get('soak_store', 'sqlite')}, {get('soak_seconds', 0)} s, {get('soak_workers', 0)}, "
         f"{get('soak_requests', 0)} "
         f"({get('soak_requests_per_s', 0)}/s)"),
        ("Soak: valid requests failed / bad requests misanswered",
         f"{get('soak_valid_failures', 0)} of {get('soak_valid_requests', 0)} / "
         f"{get('soak_bad_mismatches', 0)} of {get('soak_bad_requests', 0)}"),
        ("Soak: turns attempted / answered; of those, in sessions still alive / stored as answered",
         f"{get('soak_turns_attempted', 0)} / {get('soak_turns_answered', 0)}; {get('soak_turns_in_live_sessions', 0)}"
         f" / {get('soak_turns_stored', 0)} ({get('soak_sessions_not_as_answered', 0)} sessions differ)"),
        ("Soak: store consistency problems", f"{get('soak_consistency_problems', 0)} "
                                             f"({get('soak_sessions_checked', 0)} sessions walked)"),
        ("Soak: server RSS half-way -> end (growth)",
         f"{get('soak_rss_warm_mib', 0)} -> {get('soak_rss_end_mib', 0)} MiB ({get('soak_rss_growth_mib', 0)} MiB)"),
        ("Soak: latency p50 / p99 (all requests)",
         f"{get('soak_latency_p50_ms', 0)} / {get('soak_latency_p99_ms', 0)} ms"),
    ]
    return "\n".join(["| Figure | Value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak-seconds", type=float, default=120.0)
    parser.add_argument("--soak-workers", type=int, default=SOAK_WORKERS, help="concurrent soak clients")
    parser.add_argument("--fuzz-examples", type=int, default=50, help="Schemathesis examples per operation and phase")
    parser.add_argument("--skip-suite", action="store_true", help="only the soak")
    parser.add_argument("--soak-store", choices=("sqlite", "redis", "dynamodb"), default="sqlite",
                        help="the session store the soaked server runs on (a local redis-server or DynamoDB Local)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="clawdbot-bench-reliability-") as scratch:
        if not args.skip_suite:
            results |= run_suite(args.fuzz_examples, Path(scratch))
        if args.soak_seconds > 0:
            results |= run_full_soak(args.soak_seconds, args.soak_workers, Path(scratch), args.soak_store)
    results = {"python_version": platform.python_version(), "cpus_available": len(os.sched_getaffinity(0)),
               "load_average_1min_start": round(load_start, 2), "load_average_1min_end": round(os.getloadavg()[0], 2),
               "wall_s": round(time.perf_counter() - started, 1), **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    print(f"results: {args.out}")
    failed = (results.get("suite_exit_code", 0) != 0 or results.get("soak_valid_failures", 0)
              or results.get("soak_bad_mismatches", 0) or results.get("soak_consistency_problems", 0)
              or results.get("soak_sessions_not_as_answered", 0) or results.get("soak_server_tracebacks", 0))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
