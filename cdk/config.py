"""The stack's inputs — model path, API key, resource quota — and the quota presets, validated before any construct.

Every input arrives as a CDK context value (``cdk synth -c model=... -c quota=medium``) or through
``clawdbot deploy``, which passes the same values. A wrong value must stop ``cdk synth`` with a message that names
the input and what it accepts, never surface as a CloudFormation rollback twenty minutes into a deploy; so each
input is parsed here into frozen, typed objects, and the construct modules only read them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: Repository root: relative inputs (``models/...``, ``functions/...``) are resolved against it, so ``cdk synth``
#: behaves the same from any working directory.
REPO_ROOT = Path(__file__).resolve().parents[1]
PRESETS_DIR = Path(__file__).resolve().parent / "presets"
PRESET_NAMES = ("small", "medium", "large")
DEFAULT_MODEL = "models/clawdbot-tiny-chat"
DEFAULT_STACK_NAME = "Clawdbot"

#: Files the Lambdas need to count prompt tokens and render the chat template without the ONNX weights.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json")
#: Of those, the ones without which the API cannot run at all.
REQUIRED_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

#: GPUs (or Inferentia chips) per SageMaker instance type, for the families a preset may name with an
#: inference component. SageMaker allocates whole devices, so a share must come out as a whole number of them.
ACCELERATORS_PER_INSTANCE: dict[str, int] = {
    "ml.g5.xlarge": 1, "ml.g5.2xlarge": 1, "ml.g5.4xlarge": 1, "ml.g5.8xlarge": 1, "ml.g5.16xlarge": 1,
    "ml.g5.12xlarge": 4, "ml.g5.24xlarge": 4, "ml.g5.48xlarge": 8,
    "ml.g6.xlarge": 1, "ml.g6.2xlarge": 1, "ml.g6.4xlarge": 1, "ml.g6.8xlarge": 1, "ml.g6.16xlarge": 1,
    "ml.g6.12xlarge": 4, "ml.g6.24xlarge": 4, "ml.g6.48xlarge": 8,
    "ml.g6e.xlarge": 1, "ml.g6e.2xlarge": 1, "ml.g6e.12xlarge": 4, "ml.g6e.24xlarge": 4, "ml.g6e.48xlarge": 8,
    "ml.p4d.24xlarge": 8, "ml.p5.48xlarge": 8,
}
#: Instance families with local NVMe storage: SageMaker rejects a KMS key for their (already hardware-encrypted)
#: instance volumes, so the endpoint config must leave ``KmsKeyId`` out for them.
LOCAL_NVME_FAMILIES = frozenset({"g4dn", "g5", "g6", "g6e", "p3dn", "p4d", "p4de", "p5", "m5d", "c5d", "r5d",
                                 "c6id", "m6id", "r6id"})

_INSTANCE_TYPE = r"^ml\.[a-z0-9]+\.[0-9]*(x?large|medium|small|xlarge)$"
_VARIANT_NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
#: An SNS topic ARN (standard or FIFO) in any partition; the worker may publish turn outcomes to it.
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
_S3_MODEL = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>.+\.tar\.gz)$")


class ConfigError(ValueError):
    """An invalid stack input; the message names the input and what it accepts."""


# --------------------------------------------------------------------------------------------- quota schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiQuota(_Strict):
    #: Steady-state requests per second for the whole API stage (API Gateway token bucket refill rate).
    rate_limit: float = Field(gt=0, le=10_000)
    #: Bucket size: requests accepted in a burst above the rate.
    burst_limit: int = Field(ge=1, le=5_000)
    #: API Gateway HTTP APIs cut an integration at 30 s at most.
    integration_timeout_seconds: int = Field(ge=1, le=30)
    memory_mb: int = Field(ge=128, le=10_240)
    #: Requests the API serves at once: the function's reserved concurrency and the app's
    #: ``CLAWDBOT_MAX_CONCURRENCY``. Each execution environment serves one request, so this caps the in-flight
    #: model calls (and the Lambda bill) whatever API Gateway admits; the rest of the account keeps the remainder.
    max_concurrency: int = Field(ge=1, le=10_000)
    #: Lambda SnapStart for the API function: its ~0.4 s of imports and app building runs when a version is
    #: published instead of on each cold start, which resumes a snapshot (clawdbot.snapstart). Costs a snapshot
    #: cache per GB-second and a charge per restore (cdk/pricing.py); off, every cold start runs init.
    snapstart: bool = True


#: The queue worker's model calls: SageMaker's read timeout (above SageMaker's own 60 s cut, so it fires only on a
#: stuck network) and botocore's attempts (throttling and 5xx retries come back fast; a timeout is retried too).
#: The stack sets both on the worker, so its turn budget below is computed from what the worker does.
WORKER_MODEL_READ_TIMEOUT_SECONDS = 70
WORKER_MODEL_ATTEMPTS = 3
#: The longest one queued turn may take: every attempt of its model call timing out, plus the store's writes. The
#: worker starts no further record of a batch with less than this left of its invocation, and the first record
#: always runs, so the worker's timeout must hold one whole turn (checked by :class:`Quota`).
TURN_BUDGET_SECONDS = WORKER_MODEL_ATTEMPTS * WORKER_MODEL_READ_TIMEOUT_SECONDS + 10
#: What a worker's timeout must leave beyond one turn's budget (its init on a cold start, the batch's bookkeeping).
WORKER_TIMEOUT_MARGIN_SECONDS = 20


class WorkerQuota(_Strict):
    memory_mb: int = Field(ge=128, le=10_240)
    #: Lambda's limit is 900 s, and the queue's visibility (6x this) may not exceed SQS's 12 hours.
    timeout_seconds: int = Field(ge=10, le=900)
    #: SQS FIFO event sources take at most 10 messages per batch.
    batch_size: int = Field(ge=1, le=10)
    #: Lambda's SQS ``maxConcurrency`` range.
    max_concurrency: int = Field(ge=2, le=1000)
    #: Lambda SnapStart for the worker, as for the API (``ApiQuota.snapstart``): a queued turn that meets a cold
    #: worker waits for a restore, not for ~0.35 s of imports and the worker's building; the queue's event source
    #: invokes the live alias. Costs a snapshot cache and a charge per restore (cdk/pricing.py).
    snapstart: bool = True


class Variant(_Strict):
    name: str = Field(pattern=_VARIANT_NAME)
    weight: float = Field(gt=0, le=1000)
    instance_type: str = Field(pattern=_INSTANCE_TYPE)


class ComponentQuota(_Strict):
    """Placement as a SageMaker inference component: a share of an instance, scalable down to zero copies."""

    #: Fraction of the instance's accelerators one model copy gets (0 = CPU only). SageMaker allocates whole
    #: devices, so share x devices-per-instance must be a whole number >= 1.
    accelerator_share: float = Field(ge=0, le=1)
    cpu_cores: float = Field(ge=0.25, le=192)
    memory_mb: int = Field(ge=128, le=2_000_000)
    #: Upper bound for SageMaker managed instance scaling of the shared variant.
    max_instances: int = Field(ge=1, le=100)


class InferenceQuota(_Strict):
    placement: Literal["endpoint", "inference_component"] = "endpoint"
    variants: tuple[Variant, ...] = Field(min_length=1, max_length=10)
    #: Instances per variant (endpoint) or model copies (inference component; 0 allows scale-to-zero).
    min_capacity: int = Field(ge=0, le=100)
    max_capacity: int = Field(ge=1, le=100)
    target_invocations_per_instance: float = Field(gt=0, le=100_000)
    #: Model latency above this for 5 consecutive one-minute datapoints adds capacity (step scaling).
    latency_threshold_ms: int = Field(ge=10, le=600_000)
    scale_out_cooldown_seconds: int = Field(ge=0, le=3600)
    scale_in_cooldown_seconds: int = Field(ge=0, le=3600)
    component: ComponentQuota | None = None

    @model_validator(mode="after")
    def _consistent(self) -> InferenceQuota:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique (got {names})")
        if self.min_capacity > self.max_capacity:
            raise ValueError(f"min_capacity ({self.min_capacity}) must not exceed max_capacity ({self.max_capacity})")
        if self.placement == "endpoint":
            if self.min_capacity < 1:
                raise ValueError("min_capacity must be >= 1 with placement 'endpoint'; scale-to-zero (0) needs "
                                 "placement 'inference_component'")
            if self.component is not None:
                raise ValueError("'component' is only allowed with placement 'inference_component'")
        else:
            if self.component is None:
                raise ValueError("placement 'inference_component' needs a 'component' block "
                                 "(accelerator_share, cpu_cores, memory_mb, max_instances)")
            if len(self.variants) != 1:
                raise ValueError("placement 'inference_component' takes exactly one variant (the shared instance "
                                 "fleet); run A/B tests as two stacks or two endpoint variants")
            self.accelerators_per_copy()  # raises on a share that is not a whole number of devices
        return self

    def accelerators_per_copy(self) -> int:
        """Whole accelerator devices one model copy asks for (0 on CPU); why: SageMaker's minimum is 1 device."""
        if self.component is None or self.component.accelerator_share == 0:
            return 0
        instance_type = self.variants[0].instance_type
        devices = ACCELERATORS_PER_INSTANCE.get(instance_type)
        if devices is None:
            raise ValueError(f"accelerator_share needs a GPU instance type; {instance_type!r} is not one of "
                             f"{', '.join(sorted(ACCELERATORS_PER_INSTANCE))}")
        wanted = self.component.accelerator_share * devices
        if wanted < 1 or abs(wanted - round(wanted)) > 1e-9:
            allowed = ", ".join(f"{n}/{devices}" for n in range(1, devices + 1))
            raise ValueError(f"accelerator_share {self.component.accelerator_share} of {instance_type} "
                             f"({devices} accelerator(s)) is not a whole number of devices; SageMaker allocates "
                             f"whole GPUs to a copy: use one of {allowed}")
        return round(wanted)


class Quota(_Strict):
    description: str = ""
    api: ApiQuota
    worker: WorkerQuota
    inference: InferenceQuota

    @model_validator(mode="after")
    def _fits_sqs(self) -> Quota:
        if self.worker.timeout_seconds * 6 > 43_200:
            raise ValueError("worker.timeout_seconds x 6 (the queue's visibility timeout) exceeds SQS's 12 hours")
        least = TURN_BUDGET_SECONDS + WORKER_TIMEOUT_MARGIN_SECONDS
        if self.worker.timeout_seconds < least:
            raise ValueError(
                f"worker.timeout_seconds must be at least {least}: one queued turn may take {TURN_BUDGET_SECONDS} s "
                f"({WORKER_MODEL_ATTEMPTS} attempts of its model call at a {WORKER_MODEL_READ_TIMEOUT_SECONDS} s read "
                f"timeout, and the store), and the Lambda timeout must not cut it off")
        return self


# --------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class ModelSource:
    """Where the model weights come from: an existing ``s3://.../model.tar.gz``, or a local folder to upload."""

    local_dir: Path | None = None
    s3_bucket: str | None = None
    s3_key: str | None = None

    @property
    def s3_uri(self) -> str | None:
        return f"s3://{self.s3_bucket}/{self.s3_key}" if self.s3_bucket else None

    @property
    def name(self) -> str:
        """The model id clients send: the folder's name, or for ``s3://.../NAME/model.tar.gz`` that NAME.

        Set explicitly on both sides (Lambda and container) because their model folders are named by AWS
        (``/var/task/model``, ``/opt/ml/model``), not by the user.
        """
        if self.local_dir is not None:
            return self.local_dir.resolve().name
        parts = [p for p in str(self.s3_key).split("/") if p]
        last = parts[-1].removesuffix(".tar.gz") if parts else "model"
        return parts[-2] if last == "model" and len(parts) > 1 else last


@dataclass(frozen=True)
class StackInputs:
    stack_name: str
    model: ModelSource
    #: Local folder with the tokenizer files the Lambdas ship (the model folder itself when the model is local).
    tokenizer_dir: Path
    quota_name: str
    quota: Quota
    session_store: Literal["dynamodb", "redis"]
    redis_mode: Literal["serverless", "cluster"]
    alarm_email: str | None
    #: SNS topics queued turns may name as their reply target (``CLAWDBOT_REPLY_TOPIC_ARNS``); empty: none.
    reply_topic_arns: tuple[str, ...] = ()


def _fail(name: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"invalid input '{name}' = {value!r}: {allowed}")


def _format_validation(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
        lines.append(f"  {where}: {err['msg']}{got}")
    return f"invalid input 'quota' = {source!r}:\n" + "\n".join(lines)


def load_quota(value: str, base_dir: Path = REPO_ROOT) -> Quota:
    """A preset name (small|medium|large) or a path to a JSON file in the presets' format."""
    if value in PRESET_NAMES:
        path = PRESETS_DIR / f"{value}.json"
    else:
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise _fail("quota", value, f"expected one of {', '.join(PRESET_NAMES)} or the path of a JSON file "
                        f"shaped like cdk/presets/small.json (no such file: {path})")
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _fail("quota", value, f"{path} is not valid JSON ({exc})") from exc
    try:
        return Quota.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(value, exc)) from exc


def parse_model(value: str, base_dir: Path = REPO_ROOT) -> ModelSource:
    """``s3://bucket/key.tar.gz`` as is, or a local folder holding ``model.onnx`` (packaged at synth)."""
    if value.startswith("s3://"):
        match = _S3_MODEL.match(value)
        if not match:
            raise _fail("model", value, "an S3 model must be s3://BUCKET/KEY.tar.gz (SageMaker's packaged form)")
        return ModelSource(s3_bucket=match["bucket"], s3_key=match["key"])
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_dir():
        raise _fail("model", value, f"expected s3://BUCKET/KEY.tar.gz or a local model folder (no folder {path})")
    if not any(path.glob("*.onnx")):
        raise _fail("model", value, f"the folder {path} holds no *.onnx file; point at an exported model folder")
    return ModelSource(local_dir=path.resolve())


def _tokenizer_dir(value: str | None, model: ModelSource, base_dir: Path) -> Path:
    if value is None:
        if model.local_dir is None:
            raise _fail("tokenizerDir", None, "required with an s3:// model: a local folder holding "
                        f"{', '.join(REQUIRED_TOKENIZER_FILES)} (clawdbot deploy extracts it from the archive)")
        path = model.local_dir
    else:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base_dir / path
    missing = [name for name in REQUIRED_TOKENIZER_FILES if not (path / name).is_file()]
    if missing:
        raise _fail("tokenizerDir" if value else "model", value or str(path),
                    f"the Lambdas need {', '.join(missing)} from the model folder {path}")
    return path.resolve()


def parse_topic_arns(value: object) -> tuple[str, ...]:
    """The ``replyTopicArns`` context value: ARNs separated by commas or spaces (``-c``), or a JSON list
    (``cdk.json``). Duplicates are dropped, order kept."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        parts = value.replace(",", " ").split()
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        parts = [p.strip() for p in value]
    else:
        raise _fail("replyTopicArns", value, "SNS topic ARNs, comma-separated or as a JSON list of strings")
    for arn in parts:
        if not _TOPIC_ARN.match(arn):
            raise _fail("replyTopicArns", arn, "each entry must be an SNS topic ARN, "
                        "arn:aws:sns:REGION:ACCOUNT:NAME (NAME.fifo for a FIFO topic)")
    return tuple(dict.fromkeys(parts))


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _fail(name, value, f"expected one of {', '.join(allowed)}")
    return str(value)


def parse_inputs(context: dict[str, Any], base_dir: Path = REPO_ROOT) -> StackInputs:
    """Validate the context values of one synth; raises ConfigError naming the first bad input."""
    if context.get("apiKey") is not None:
        raise _fail("apiKey", "***", "the API key is never a context value (context is written to cdk.out and "
                    "shell history); pass it as the NoEcho stack parameter: cdk deploy --parameters ApiKey=KEY, "
                    "or use clawdbot deploy --api-key")
    stack_name = str(context.get("stackName") or DEFAULT_STACK_NAME)
    if not _STACK_NAME.match(stack_name):
        raise _fail("stackName", stack_name, "1-64 letters, digits and hyphens, starting with a letter")
    model = parse_model(str(context.get("model") or DEFAULT_MODEL), base_dir)
    tokenizer_dir = _tokenizer_dir(context.get("tokenizerDir"), model, base_dir)
    quota_name = str(context.get("quota") or "small")
    quota = load_quota(quota_name, base_dir)
    session_store = _choice("sessionStore", context.get("sessionStore") or "dynamodb", ("dynamodb", "redis"))
    redis_mode = _choice("redisMode", context.get("redisMode") or "serverless", ("serverless", "cluster"))
    alarm_email = context.get("alarmEmail") or None
    if alarm_email is not None and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", str(alarm_email)):
        raise _fail("alarmEmail", alarm_email, "an e-mail address to subscribe to the alarm topic")
    return StackInputs(stack_name=stack_name, model=model, tokenizer_dir=tokenizer_dir, quota_name=quota_name,
                       quota=quota, session_store=session_store,  # type: ignore[arg-type]
                       redis_mode=redis_mode, alarm_email=alarm_email,  # type: ignore[arg-type]
                       reply_topic_arns=parse_topic_arns(context.get("replyTopicArns")))


def has_local_nvme(instance_type: str) -> bool:
    """True for instance types whose volumes SageMaker refuses to encrypt with a customer key (see above)."""
    family = instance_type.split(".")[1] if instance_type.count(".") >= 2 else ""
    return family in LOCAL_NVME_FAMILIES
