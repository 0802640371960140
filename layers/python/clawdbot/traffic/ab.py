"""A/B variants: declared in config, assigned sticky per session by hashing, overridable by a header.

Assignment hashes ``<experiment>:<session id>`` (SHA-256) into 10,000 buckets laid out by the variants'
weights, so every process — and every Lambda instance — assigns a session the same variant with no shared
state. The first turn records the assignment in the session's metadata (``variant``); later turns read it back,
so a session keeps its variant even if the weights change mid-experiment. A turn without a session is assigned
by its turn id (random). The ``x-clawdbot-variant`` header forces a variant for testing; the forced turn
records its variant but leaves the session's assignment alone.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from clawdbot.traffic.exceptions import UnknownVariantError

if TYPE_CHECKING:
    from clawdbot.config.settings import Settings
    from clawdbot.inference.base import InferenceBackend

logger = logging.getLogger(__name__)

#: The header that forces a variant (testing, demos).
OVERRIDE_HEADER = "x-clawdbot-variant"
#: Session metadata attribute holding the sticky assignment; also the turn attribute naming a turn's variant.
VARIANT_ATTRIBUTE = "variant"
#: The variant every turn belongs to when no experiment is configured.
DEFAULT_VARIANT = "default"
BUCKETS = 10_000


class VariantConfig(BaseModel):
    """One arm of the experiment (``CLAWDBOT_AB_VARIANTS`` is a JSON list of these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    weight: float = Field(default=1.0, ge=0)
    #: SageMaker production variant the endpoint call targets (``TargetVariant``).
    target_variant: str | None = None
    #: Local engine: this variant's own model folder (default: the server's model).
    model_dir: Path | None = None
    #: Sampling defaults when the client sets none.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    #: System prompt for conversations that bring none.
    system_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class Variant:
    """A variant ready to serve: its config and the backend that runs it."""

    config: VariantConfig
    backend: InferenceBackend

    @property
    def name(self) -> str:
        return self.config.name


def bucket_of(key: str, experiment: str) -> int:
    """``key``'s bucket in [0, BUCKETS): stable across processes and Python versions (no ``hash()``)."""
    digest = hashlib.sha256(f"{experiment}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(key: str, variants: list[VariantConfig], experiment: str) -> str:
    """The variant whose weight range covers ``key``'s bucket."""
    total = sum(v.weight for v in variants)
    if not variants or total <= 0:
        return variants[0].name if variants else DEFAULT_VARIANT
    point = bucket_of(key, experiment) / BUCKETS * total
    upper = 0.0
    for v in variants:
        upper += v.weight
        if point < upper:
            return v.name
    return variants[-1].name


class VariantRouter:
    """Picks a turn's variant and gives the backend and defaults to run it with."""

    def __init__(self, variants: list[Variant], experiment: str = "default") -> None:
        if not variants:
            raise ValueError("at least one variant")
        self.variants = {v.name: v for v in variants}
        self.configs = [v.config for v in variants]
        self.experiment = experiment

    @property
    def enabled(self) -> bool:
        """True when a real experiment (two or more arms) is configured."""
        return len(self.configs) > 1

    def get(self, name: str) -> Variant:
        try:
            return self.variants[name]
        except KeyError:
            raise UnknownVariantError(
                f"Unknown variant '{name}'. Configured: {', '.join(self.variants)}.", param=OVERRIDE_HEADER
            ) from None

    def choose(self, key: str, recorded: str | None = None) -> Variant:
        """The variant for a session (or turn) ``key``: its recorded assignment if still declared, else hashed."""
        if recorded is not None and recorded in self.variants:
            return self.variants[recorded]
        return self.variants[assign(key, self.configs, self.experiment)]


def build_router(settings: Settings, backend: InferenceBackend) -> VariantRouter:
    """One :class:`Variant` per configured arm, each with its backend.

    Arms without a model of their own share ``backend``; on SageMaker each arm gets a client that targets its
    production variant; locally an arm with ``model_dir`` loads that model once, here, at start-up.
    """
    configs = settings.ab_variants or [VariantConfig(name=DEFAULT_VARIANT)]
    variants = [Variant(c, _backend_for(c, settings, backend)) for c in configs]
    return VariantRouter(variants, settings.ab_experiment)


def _backend_for(config: VariantConfig, settings: Settings, default: InferenceBackend) -> InferenceBackend:
    if settings.inference == "sagemaker" and config.target_variant:
        from clawdbot.inference.sagemaker import SageMakerBackend

        base = default if isinstance(default, SageMakerBackend) else SageMakerBackend.from_settings(settings)
        return SageMakerBackend(base.endpoint_name, settings.model_dir, model_id=base.model_id,
                                config=base.config.model_copy(update={"target_variant": config.target_variant}))
    if settings.inference == "local" and config.model_dir is not None:
        from clawdbot.inference.factory import build_backend

        logger.debug("variant %s loads its own model from %s", config.name, config.model_dir)
        return build_backend(settings.model_copy(update={"model_dir": config.model_dir}))
    return default
