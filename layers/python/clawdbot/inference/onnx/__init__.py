"""In-process inference with ONNX Runtime over a model folder in Hugging Face Optimum's decoder layout.

Importing this package is cheap: numpy, onnxruntime, tokenizers and jinja2 are imported when a model is loaded.
"""

from clawdbot.inference.onnx.backend import OnnxBackend
from clawdbot.inference.onnx.chat_template import ChatTemplate
from clawdbot.inference.onnx.engine import DecoderEngine
from clawdbot.inference.onnx.graph import GraphSpec, KVLayer
from clawdbot.inference.onnx.model_folder import ModelFolder
from clawdbot.inference.onnx.runtime import RuntimeOptions, available_cpus, default_threads
from clawdbot.inference.onnx.sampling import Sampler

__all__ = [
    "ChatTemplate",
    "DecoderEngine",
    "GraphSpec",
    "KVLayer",
    "ModelFolder",
    "OnnxBackend",
    "RuntimeOptions",
    "Sampler",
    "available_cpus",
    "default_threads",
]
