"""The cost model behind ``clawdbot cost``: DynamoDB's billing rules, the per-turn arithmetic against hand-worked
figures, the all-in figure's behaviour with volume, and the command on measurements written as ``make bench``
writes them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from clawdbot.cli.main import main
from clawdbot.costs import (
    LAMBDA_ARM_GB_SECOND,
    Assumptions,
    Deployment,
    Measured,
    at_volume,
    capacity_units,
    lambda_ms,
    per_thousand,
)

if TYPE_CHECKING:
    from pathlib import Path

TURN_CALLS = {"GetItem": 2, "Query": 1, "UpdateItem": 1, "TransactWriteItems": 1}
SMALL = Deployment(api_memory_mb=1024, instance_type="ml.c5.large", instance_hourly=0.102, variants=1, min_capacity=1,
                   fixed_monthly=7.5)


def test_capacity_units_follow_dynamodbs_billing_rules() -> None:
    # GIVEN a turn of docs/stores.md: two META reads, a 64-entry window of ~300 B, the META update, and a
    # transaction of META + 2 entries under 1 KB each
    reads, writes = capacity_units(TURN_CALLS, 64, Assumptions(entry_bytes=300))
    # THEN 1 + 1 + ceil(64 * 300 / 4096) = 7 RRU and 1 + 2 * (1 + 2) = 7 WRU, the table in docs/stores.md
    assert (reads, writes) == (7, 7)
    # AND a 16-entry window of 400 B items reads ceil(6400 / 4096) = 2 units; 1.5 KB items cost 2 WRU each
    assert capacity_units(TURN_CALLS, 16, Assumptions(entry_bytes=400)) == (4, 7)
    assert capacity_units(TURN_CALLS, 16, Assumptions(entry_bytes=1500))[1] == 2 + 2 * (2 + 2 * 2)


def test_lambda_bills_the_wait_for_the_model_and_less_cpu_below_a_full_vcpu() -> None:
    measured = Measured(gateway_cpu_ms=3.0, store_calls=TURN_CALLS, generation_s=0.050)
    # 1,769 MB is one vCPU: 3 ms of CPU + 5 calls x 4 ms + 50 ms of model = 73 ms
    assert lambda_ms(measured, Assumptions(store_call_ms=4.0), 1769) == 73
    # at half the memory the CPU part takes twice as long
    assert lambda_ms(measured, Assumptions(store_call_ms=4.0), 1769 // 2) == 77


def test_per_thousand_turns_by_hand() -> None:
    measured = Measured(gateway_cpu_ms=0.0, store_calls={"GetItem": 1}, window_items=0, generation_s=0.099,
                        turns_per_s=10.0, cpus=2)
    cost = per_thousand(measured, Assumptions(store_call_ms=1.0, log_bytes=0, utilization=0.5, entry_bytes=400),
                        SMALL)
    assert cost.lambda_ms == 100
    assert cost.lambda_duration == pytest.approx(1000 * 1.0 * 0.1 * LAMBDA_ARM_GB_SECOND)
    assert cost.api_gateway == pytest.approx(0.001) and cost.lambda_requests == pytest.approx(0.0002)
    assert cost.dynamodb == pytest.approx(1000 * 0.125e-6)
    # ml.c5.large has the measuring machine's 2 vCPUs: 10 turns/s at half use = 18,000 turns per $0.102
    assert cost.sagemaker == pytest.approx(1000 * 0.102 / 18_000)
    assert cost.logs == 0
    assert cost.total == pytest.approx(cost.serverless + cost.sagemaker)


def test_all_in_cost_falls_with_volume_towards_the_marginal_cost() -> None:
    measured = Measured()
    figures = [at_volume(measured, Assumptions(turns_per_month=v), SMALL) for v in (10_000, 1_000_000, 10**9)]
    assert figures[0] > figures[1] > figures[2]
    marginal = per_thousand(measured, Assumptions(), SMALL).total
    assert figures[2] == pytest.approx(marginal, rel=0.01)
    # a minimum of one instance is paid however little it serves
    assert figures[0] >= 0.102 * 730 / 10_000 * 1000


def _results(folder: Path) -> None:
    folder.mkdir()
    (folder / "overhead.json").write_text(json.dumps({"api_server_cpu_ms_per_turn": 2.0}))
    (folder / "history.json").write_text(json.dumps({
        **{f"dynamodb_h1000_store_ops_per_turn_{op}": n for op, n in TURN_CALLS.items()},
        "dynamodb_h1000_store_ops_per_turn": sum(TURN_CALLS.values()), "dynamodb_h1000_items_read_per_turn": 18}))
    (folder / "sagemaker.json").write_text(json.dumps({
        "cpus_available": 2, "direct_median_latency_s": 0.04, "sagemaker_c1_turns_per_s": 20.0,
        "sagemaker_c2_turns_per_s": 25.0, "sagemaker_c2_median_latency_s": 0.08}))


def test_the_command_prices_a_preset_from_the_measurements(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _results(tmp_path / "results")
    assert main(["cost", "--quota", "small", "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    # 2 ms of CPU at 1024 MB (0.58 vCPU) + 5 calls x 4 ms + 40 ms = ceil(63.5) = 64 ms
    assert "Lambda duration (64 ms x 1024 MB)" in out
    assert "DynamoDB (4 RRU + 7 WRU per turn)" in out
    assert "as of 2025-06-01" in out


def test_the_command_refuses_a_utilization_outside_0_to_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--quota", "small", "--utilization", "1.5"]) == 2
    assert "--utilization" in capsys.readouterr().err
