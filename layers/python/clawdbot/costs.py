"""What a chat turn costs on AWS: the arithmetic behind ``clawdbot cost``.

Per turn, the stack bills: one API Gateway HTTP API request; one invocation of the API function and its duration
(its memory x the time it runs, which covers the gateway's own work, its DynamoDB round trips and the wait for
SageMaker); the DynamoDB read and write units of the turn's store calls; the log bytes it writes; and a share of
the SageMaker instance-hours. The instance-hours are a step function of traffic: the preset's minimum capacity is
paid whether used or not, and above it instances are added at the target utilization. So two figures per preset:

- ``marginal``: dollars per 1,000 turns once traffic keeps the endpoint at the target utilization;
- ``at_volume``: dollars per 1,000 turns all in (the fixed charges of the stack included) at a monthly volume.

The inputs are measured (``bench/``: the gateway's CPU time per turn, the store calls and items of a turn, the
model's latency and throughput per instance) or stated (``Assumptions``); prices are AWS list prices for
us-east-1 on demand as of :data:`PRICES_AS_OF` (SageMaker instance prices and the stack's fixed charges come from
``cdk/pricing.py``, which holds the same date). Pure arithmetic: no AWS call, no third-party import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: When the per-request prices below were read from AWS's pricing pages (us-east-1).
PRICES_AS_OF = "2025-06-01"
#: Lambda on arm64 (Graviton): USD per GB-second of duration and per request.
LAMBDA_ARM_GB_SECOND = 0.0000133334
LAMBDA_REQUEST = 0.20 / 1_000_000
#: API Gateway HTTP API, first 300 million requests a month.
HTTP_API_REQUEST = 1.00 / 1_000_000
#: DynamoDB on demand: per write request unit and read request unit.
DYNAMODB_WRU = 0.625 / 1_000_000
DYNAMODB_RRU = 0.125 / 1_000_000
#: CloudWatch Logs ingestion, per GB (EMF metrics and log lines).
LOGS_INGEST_GB = 0.50
HOURS_PER_MONTH = 730
#: Lambda gives a function one full vCPU at this memory size, proportionally less below it.
LAMBDA_MB_PER_VCPU = 1769

#: vCPUs per SageMaker instance type (for scaling throughput measured on a machine with another CPU count).
INSTANCE_VCPUS = {
    "ml.c5.large": 2, "ml.c5.xlarge": 4, "ml.c5.2xlarge": 8, "ml.c5.4xlarge": 16,
    "ml.m5.large": 2, "ml.m5.xlarge": 4, "ml.m5.2xlarge": 8,
    "ml.g5.xlarge": 4, "ml.g5.2xlarge": 8, "ml.g5.12xlarge": 48,
}


@dataclass(frozen=True)
class Measured:
    """What ``make bench`` measured on its machine (defaults: the committed ``bench/results``)."""

    #: CPU milliseconds the API spends on a turn besides the model (bench.overhead ``api_server_cpu_ms_per_turn``).
    gateway_cpu_ms: float = 2.5
    #: DynamoDB calls of one turn by operation (bench.history on DynamoDB Local, 1,000 turns of history).
    store_calls: dict[str, float] = field(default_factory=lambda: {"GetItem": 2, "Query": 1, "UpdateItem": 1,
                                                                   "TransactWriteItems": 1})
    #: Transcript items the context read returns (bench.history ``dynamodb_h1000_items_read_per_turn`` less the
    #: two META reads).
    window_items: float = 16
    #: Seconds the model takes for one turn, and turns per second one instance serves at best (bench.sagemaker).
    generation_s: float = 0.032
    turns_per_s: float = 30.0
    #: CPUs of the machine those two were measured on.
    cpus: int = 2


@dataclass(frozen=True)
class Assumptions:
    """What cannot be measured on one machine; stated, and overridable on the command line."""

    #: One DynamoDB call from a Lambda in the same region (single-digit milliseconds).
    store_call_ms: float = 4.0
    #: Size of a transcript item (a message plus its attributes) and of the META item.
    entry_bytes: int = 400
    #: New entries per turn (the user message and the reply).
    new_entries: int = 2
    #: Log and EMF bytes a turn writes to CloudWatch Logs.
    log_bytes: int = 1500
    #: Busy share of an instance at which autoscaling keeps the endpoint.
    utilization: float = 0.5
    #: Monthly volume for the all-in figure.
    turns_per_month: int = 1_000_000


@dataclass(frozen=True)
class Deployment:
    """The parts of a quota preset that cost money per turn or per hour."""

    api_memory_mb: int
    #: SageMaker: instance type and price per variant, instances per variant (or model copies) at least.
    instance_type: str
    instance_hourly: float
    variants: int
    min_capacity: int
    #: For an inference component: the accelerator share a copy takes and its CPU cores (else ``None``).
    component_share: float | None = None
    component_cpu_cores: float | None = None
    #: The stack's fixed monthly charges besides instances (KMS, secret, dashboard, alarms).
    fixed_monthly: float = 0.0


@dataclass(frozen=True)
class TurnCost:
    """USD per 1,000 turns, by part."""

    api_gateway: float
    lambda_requests: float
    lambda_duration: float
    dynamodb: float
    logs: float
    sagemaker: float
    #: The API function's billed milliseconds per turn, and the DynamoDB units of a turn.
    lambda_ms: float
    read_units: float
    write_units: float

    @property
    def serverless(self) -> float:
        return self.api_gateway + self.lambda_requests + self.lambda_duration + self.dynamodb + self.logs

    @property
    def total(self) -> float:
        return self.serverless + self.sagemaker


def capacity_units(calls: dict[str, float], window_items: float, a: Assumptions) -> tuple[float, float]:
    """(read units, write units) of one turn, by DynamoDB's billing rules.

    Strongly consistent reads: 1 RRU per 4 KB of each item read (a query sums its items first); writes: 1 WRU per
    KB of each item, twice that inside a transaction (META plus the new entries).
    """
    meta_rru = math.ceil(a.entry_bytes / 4096)
    reads = calls.get("GetItem", 0) * meta_rru
    reads += calls.get("Query", 0) * max(1, math.ceil(window_items * a.entry_bytes / 4096))
    item_wru = math.ceil(a.entry_bytes / 1024)
    writes = calls.get("UpdateItem", 0) * item_wru + calls.get("PutItem", 0) * item_wru
    writes += calls.get("TransactWriteItems", 0) * 2 * (item_wru + a.new_entries * item_wru)
    return reads, writes


def lambda_ms(m: Measured, a: Assumptions, memory_mb: int) -> float:
    """Billed duration of the API function per turn: its CPU work at its memory's CPU share, its store round
    trips, and the wait for the model (Lambda bills wall time, and the API waits for SageMaker)."""
    cpu_share = min(1.0, memory_mb / LAMBDA_MB_PER_VCPU)
    calls = sum(m.store_calls.values())
    return math.ceil(m.gateway_cpu_ms / cpu_share + calls * a.store_call_ms + m.generation_s * 1000)


def instance_turns_per_hour(m: Measured, d: Deployment) -> float:
    """Turns an instance (or a component's copy) serves per hour at full use, scaled from the measuring
    machine by CPU count (a GPU instance serves at least that: the figure is conservative for it)."""
    cpus = d.component_cpu_cores if d.component_cpu_cores is not None else INSTANCE_VCPUS.get(d.instance_type, m.cpus)
    return m.turns_per_s * (cpus / m.cpus) * 3600


def per_thousand(m: Measured, a: Assumptions, d: Deployment) -> TurnCost:
    """Marginal dollars per 1,000 turns (the endpoint at ``a.utilization``)."""
    reads, writes = capacity_units(m.store_calls, m.window_items, a)
    billed_ms = lambda_ms(m, a, d.api_memory_mb)
    hourly = d.instance_hourly * (d.component_share if d.component_share else 1.0)
    sagemaker = hourly / (instance_turns_per_hour(m, d) * a.utilization)
    k = 1000
    return TurnCost(
        api_gateway=k * HTTP_API_REQUEST,
        lambda_requests=k * LAMBDA_REQUEST,
        lambda_duration=k * d.api_memory_mb / 1024 * billed_ms / 1000 * LAMBDA_ARM_GB_SECOND,
        dynamodb=k * (reads * DYNAMODB_RRU + writes * DYNAMODB_WRU),
        logs=k * a.log_bytes / 1e9 * LOGS_INGEST_GB,
        sagemaker=k * sagemaker,
        lambda_ms=billed_ms, read_units=reads, write_units=writes,
    )


def at_volume(m: Measured, a: Assumptions, d: Deployment) -> float:
    """All-in dollars per 1,000 turns at ``a.turns_per_month``: fixed charges, the instances the volume needs (at
    least the preset's minimum), and the per-turn charges."""
    cost = per_thousand(m, a, d)
    hourly = d.instance_hourly * (d.component_share if d.component_share else 1.0)
    needed = a.turns_per_month / (instance_turns_per_hour(m, d) * a.utilization * HOURS_PER_MONTH)
    instances = max(needed, d.min_capacity * d.variants)
    monthly = d.fixed_monthly + instances * hourly * HOURS_PER_MONTH + a.turns_per_month / 1000 * cost.serverless
    return monthly / a.turns_per_month * 1000
