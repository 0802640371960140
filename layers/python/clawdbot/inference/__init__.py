"""Model inference: one backend contract, several engines.

Engines with heavy dependencies are not imported here: ``clawdbot.inference.onnx`` (ONNX Runtime, local and in
the SageMaker container) and ``clawdbot.inference.sagemaker`` (boto3) are imported explicitly by whoever needs them.
"""

from clawdbot.inference.base import InferenceBackend
from clawdbot.inference.exceptions import ContextLengthExceededError, InferenceError
from clawdbot.inference.types import ChatMessage, Completion, GenerationParams, StreamDelta

__all__ = [
    "ChatMessage",
    "Completion",
    "ContextLengthExceededError",
    "GenerationParams",
    "InferenceBackend",
    "InferenceError",
    "StreamDelta",
]
