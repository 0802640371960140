"""Run every benchmark: ``python -m bench`` (or ``python -m bench NAME ...`` for some of them).

To add one, write ``bench/<name>.py`` with ``main(argv: list[str] | None = None) -> int`` and list it here.
"""

from __future__ import annotations

import importlib
import sys

#: Benchmark modules under ``bench``, run in this order.
BENCHMARKS: tuple[str, ...] = (
    "generation",
    "sagemaker",
    "queue",
    "overhead",
    "coldstart",
    "api_generation",
    "prefix_cache",
    "prompt_encoding",
    "model_sessions",
    "history",
    "throughput",
    "abandoned",
)


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        print(f"== bench.{name}", flush=True)
        status |= importlib.import_module(f"bench.{name}").main([])
    if names == list(BENCHMARKS):  # a whole run ends with the key figures against their targets
        from bench.report import table

        print(table(), flush=True)  # (python -m bench.report prints it again)
    return status


if __name__ == "__main__":
    sys.exit(main())
