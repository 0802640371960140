"""``clawdbot cost``: dollars per 1,000 chat turns on AWS for a quota preset, from this checkout's measurements.

It reads the measurements ``make bench`` wrote (``bench/results/``: the gateway's CPU time per turn, a turn's
DynamoDB calls, the model's latency and throughput) and the presets and SageMaker prices of the AWS stack
(``cdk/presets``, ``cdk/pricing.py``), and prints the arithmetic of :mod:`clawdbot.costs`. Runs from the checkout,
as ``clawdbot deploy`` does; no AWS call.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from clawdbot.costs import Assumptions, Deployment, Measured


def register(sub: argparse._SubParsersAction) -> None:
    from clawdbot.costs import Assumptions

    defaults = Assumptions()
    parser = sub.add_parser(
        "cost", help="Estimate $ per 1,000 turns on AWS for a quota preset (from bench/results).",
        description="Estimate what 1,000 chat turns cost on AWS for a quota preset: API Gateway, Lambda, DynamoDB, "
                    "logs and SageMaker, from the measurements of `make bench` and AWS list prices (us-east-1).")
    parser.add_argument("--quota", default="small",
                        help="small | medium | large | path of a JSON quota file | all (default: small).")
    parser.add_argument("--results", type=Path, help="Folder of the bench results (default: bench/results).")
    parser.add_argument("--turns-per-month", type=int, default=defaults.turns_per_month,
                        help=f"Volume for the all-in figure (default {defaults.turns_per_month:,}).")
    parser.add_argument("--utilization", type=float, default=defaults.utilization,
                        help=f"Busy share autoscaling keeps instances at (default {defaults.utilization}).")
    parser.add_argument("--store-call-ms", type=float, default=defaults.store_call_ms,
                        help=f"One DynamoDB round trip from Lambda, ms (default {defaults.store_call_ms}).")
    parser.add_argument("--markdown", action="store_true", help="One markdown table row per preset.")
    parser.set_defaults(func=run)


#: ``bench.history``'s DynamoDB calls of a turn after 1,000 turns, one key per operation (``..._GetItem``).
STORE_CALLS = "dynamodb_h1000_store_ops_per_turn_"


def _load(folder: Path, name: str) -> dict[str, Any]:
    path = folder / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def measured_from(folder: Path) -> tuple[Measured, list[str]]:
    """The measurements in ``folder`` (``bench/results``), the defaults for any missing; and what was missing."""
    from clawdbot.costs import Measured

    base = Measured()
    missing: list[str] = []
    overhead, history, sagemaker = _load(folder, "overhead"), _load(folder, "history"), _load(folder, "sagemaker")
    values: dict[str, Any] = {}
    if "api_server_cpu_ms_per_turn" in overhead:
        values["gateway_cpu_ms"] = float(overhead["api_server_cpu_ms_per_turn"])
    else:
        missing.append("overhead.json")
    calls = {key.removeprefix(STORE_CALLS): float(value) for key, value in history.items()
             if key.startswith(STORE_CALLS)}
    if calls:
        values["store_calls"] = calls
        items = float(history.get("dynamodb_h1000_items_read_per_turn", base.window_items + 2))
        values["window_items"] = max(0.0, items - calls.get("GetItem", 0))
    else:
        missing.append("history.json (DynamoDB)")
    paths = [float(value) for key, value in sagemaker.items()
             if key.startswith("sagemaker_c") and key.endswith("_turns_per_s")]
    if "direct_median_latency_s" in sagemaker and paths:
        values["generation_s"] = float(sagemaker["direct_median_latency_s"])
        values["turns_per_s"] = max(paths)  # the best container concurrency measured
        values["cpus"] = int(sagemaker.get("cpus_available", base.cpus))
    else:
        missing.append("sagemaker.json")
    return replace(base, **values), missing


def deployment_for(quota_name: str, root: Path) -> tuple[str, Deployment]:
    """A preset (or quota file) as the costs model needs it, priced from ``cdk/pricing.py``."""
    from clawdbot.cli.main import CommandError
    from clawdbot.costs import HOURS_PER_MONTH, Deployment

    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from cdk.config import ConfigError, load_quota
    from cdk.pricing import SAGEMAKER_HOURLY, hourly

    try:
        quota = load_quota(quota_name, root)
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc
    inference = quota.inference
    instance_type = inference.variants[0].instance_type
    if instance_type not in SAGEMAKER_HOURLY:
        raise CommandError(f"no price for {instance_type} in cdk/pricing.py (SAGEMAKER_HOURLY)")
    component = inference.component
    return quota.description, Deployment(
        api_memory_mb=quota.api.memory_mb, instance_type=instance_type,
        instance_hourly=SAGEMAKER_HOURLY[instance_type],
        variants=1 if component is not None else len(inference.variants), min_capacity=inference.min_capacity,
        component_share=component.accelerator_share or None if component is not None else None,
        component_cpu_cores=component.cpu_cores if component is not None else None,
        fixed_monthly=hourly(quota).fixed * HOURS_PER_MONTH)


def run(args: argparse.Namespace) -> int:
    from clawdbot.cli.deploy import find_project_root
    from clawdbot.cli.main import CommandError
    from clawdbot.costs import PRICES_AS_OF, Assumptions, at_volume, per_thousand

    if not 0 < args.utilization <= 1:
        raise CommandError(f"--utilization must be in (0, 1], got {args.utilization}")
    if args.turns_per_month < 1:
        raise CommandError("--turns-per-month must be at least 1")
    root = find_project_root()
    measured, missing = measured_from(args.results or root / "bench" / "results")
    assumptions = Assumptions(utilization=args.utilization, turns_per_month=args.turns_per_month,
                              store_call_ms=args.store_call_ms)
    names = ("small", "medium", "large") if args.quota == "all" else (args.quota,)
    if args.markdown:
        print("| preset | API Lambda ms/turn | serverless $/1k turns | SageMaker $/1k turns | marginal $/1k turns | "
              f"all-in $/1k turns at {args.turns_per_month:,}/month |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        description, deployment = deployment_for(name, root)
        cost = per_thousand(measured, assumptions, deployment)
        total = at_volume(measured, assumptions, deployment)
        if args.markdown:
            print(f"| `{name}` | {cost.lambda_ms:.0f} | ${cost.serverless:.4f} | ${cost.sagemaker:.4f} | "
                  f"${cost.total:.4f} | ${total:.4f} |")
            continue
        _print_breakdown(name, description, deployment, measured, assumptions, cost, total)
    if missing:
        print(f"(defaults used for missing measurements: {', '.join(missing)}; run `make bench`)", file=sys.stderr)
    print(f"AWS list prices, us-east-1, on demand, as of {PRICES_AS_OF}.", file=sys.stderr if args.markdown else
          sys.stdout)
    return 0


def _print_breakdown(name: str, description: str, deployment: Deployment, measured: Measured,
                     assumptions: Assumptions, cost: Any, total: float) -> None:
    print(f"{name}: {description}")
    print(f"  per 1,000 turns, endpoint at {assumptions.utilization:.0%} utilization:")
    for label, value in (("API Gateway (HTTP API)", cost.api_gateway), ("Lambda requests", cost.lambda_requests),
                         (f"Lambda duration ({cost.lambda_ms:.0f} ms x {deployment.api_memory_mb} MB)",
                          cost.lambda_duration),
                         (f"DynamoDB ({cost.read_units:g} RRU + {cost.write_units:g} WRU per turn)", cost.dynamodb),
                         ("CloudWatch Logs", cost.logs),
                         (f"SageMaker ({deployment.instance_type})", cost.sagemaker)):
        print(f"    {label:<48} ${value:.4f}")
    print(f"    {'marginal total':<48} ${cost.total:.4f}")
    print(f"  all in at {assumptions.turns_per_month:,} turns/month (minimum capacity and fixed charges "
          f"included): ${total:.4f} per 1,000 turns")
    used = ", ".join(f"{f.name}={getattr(measured, f.name)}" for f in fields(measured))
    print(f"  measured: {used}")
