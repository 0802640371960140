"""Choose the inference engine from settings (``CLAWDBOT_INFERENCE=local|sagemaker``), importing only that one."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clawdbot.config.settings import Settings
    from clawdbot.inference.base import InferenceBackend


def build_backend(settings: Settings) -> InferenceBackend:
    if settings.inference == "sagemaker":
        from clawdbot.inference.sagemaker import SageMakerBackend

        return SageMakerBackend.from_settings(settings)
    from clawdbot.inference.onnx import OnnxBackend

    return OnnxBackend.from_settings(settings)
