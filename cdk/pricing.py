"""What a quota preset costs per hour before any traffic, from AWS list prices (us-east-1, on-demand).

Why in code: the table in docs/deploy.md is computed from these numbers and the presets (``python -m
cdk.pricing``), and a test checks the two agree, so a preset change cannot leave the documented cost behind.
Prices change; ``PRICES_AS_OF`` says when these were taken, and the docs repeat it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cdk.config import Quota

PRICES_AS_OF = "2025-06-01"
REGION = "us-east-1"
HOURS_PER_MONTH = 730

#: SageMaker real-time inference, USD per instance-hour.
SAGEMAKER_HOURLY = {
    "ml.c5.large": 0.102, "ml.c5.xlarge": 0.204, "ml.c5.2xlarge": 0.408, "ml.c5.4xlarge": 0.816,
    "ml.m5.large": 0.115, "ml.m5.xlarge": 0.230, "ml.m5.2xlarge": 0.461,
    "ml.g5.xlarge": 1.408, "ml.g5.2xlarge": 1.515, "ml.g5.12xlarge": 7.090,
}
#: Fixed monthly charges of the stack whatever the traffic (USD per month).
KMS_KEY_MONTHLY = 1.00
SECRET_MONTHLY = 0.40
DASHBOARD_MONTHLY = 3.00
ALARM_MONTHLY = 0.10
#: Lambda SnapStart (the API function, ``api.snapstart``, and the worker, ``worker.snapstart``): each live
#: version's snapshot is cached as long as the version exists (USD per GB-second of the function's memory); each
#: restore (a cold start) costs per GB.
SNAPSTART_CACHE_GB_SECOND = 0.0000015046
SNAPSTART_RESTORE_GB = 0.0001397998
#: Optional Redis/Valkey session store (USD per hour).
INTERFACE_ENDPOINT_AZ_HOURLY = 0.01  # x 3 endpoints x 2 AZs
VALKEY_SERVERLESS_MIN_HOURLY = 0.0084  # 100 MB minimum of stored data at $0.084/GB-h; ECPUs extra
VALKEY_T4G_SMALL_HOURLY = 0.0256  # x 2 nodes (primary + replica)


@dataclass(frozen=True)
class HourlyCost:
    idle: float  # at min capacity, no traffic
    peak: float  # at max capacity (instances only; per-request charges extra)
    fixed: float  # KMS, secret, dashboard, alarms, the SnapStart snapshot cache


def _alarms(quota: Quota) -> int:
    units = 1 if quota.inference.placement == "inference_component" else len(quota.inference.variants)
    return 4 + 2 * units  # DLQ, API 5xx, 2x Lambda errors; per unit: model 5xx + latency


def snapstart_cache_hourly(quota: Quota) -> float:
    """The cached snapshots of the functions with SnapStart on (API, worker), USD per hour."""
    cached_mb = ((quota.api.memory_mb if quota.api.snapstart else 0)
                 + (quota.worker.memory_mb if quota.worker.snapstart else 0))
    return cached_mb / 1024 * SNAPSTART_CACHE_GB_SECOND * 3600


def hourly(quota: Quota) -> HourlyCost:
    """Instance-hours at min and max capacity plus the fixed charges, in USD per hour."""
    fixed = ((KMS_KEY_MONTHLY + SECRET_MONTHLY + DASHBOARD_MONTHLY + ALARM_MONTHLY * _alarms(quota)) / HOURS_PER_MONTH
             + snapstart_cache_hourly(quota))
    inference = quota.inference
    if inference.placement == "inference_component":
        assert inference.component is not None
        price = SAGEMAKER_HOURLY[inference.variants[0].instance_type]
        idle = 0.0 if inference.min_capacity == 0 else price
        peak = price * inference.component.max_instances
    else:
        prices = [SAGEMAKER_HOURLY[v.instance_type] for v in inference.variants]
        idle = sum(prices) * inference.min_capacity
        peak = sum(prices) * inference.max_capacity
    return HourlyCost(idle=idle + fixed, peak=peak + fixed, fixed=fixed)


def redis_hourly(mode: str) -> float:
    endpoints = 3 * 2 * INTERFACE_ENDPOINT_AZ_HOURLY
    return endpoints + (VALKEY_SERVERLESS_MIN_HOURLY if mode == "serverless" else 2 * VALKEY_T4G_SMALL_HOURLY)


def table_rows(names: tuple[str, ...]) -> list[str]:
    """The docs' markdown rows: preset | idle $/h | peak $/h."""
    from cdk.config import load_quota

    rows = []
    for name in names:
        cost = hourly(load_quota(name))
        rows.append(f"| `{name}` | ${cost.idle:.3f} | ${cost.peak:.3f} |")
    return rows


if __name__ == "__main__":
    from cdk.config import PRESET_NAMES

    print("\n".join(table_rows((*PRESET_NAMES, *sys.argv[1:]))))
