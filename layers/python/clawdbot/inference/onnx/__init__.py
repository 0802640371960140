"""In-process inference with ONNX Runtime over a model folder in Hugging Face Optimum's decoder layout.

Importing this package is cheap: numpy, onnxruntime, tokenizers and jinja2 are imported when a model is loaded,
and its modules when a name is first used (PEP 562). A Lambda imports ``chat_template`` and ``model_folder`` from
here for its tokenizer bundle, and nothing of the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clawdbot.inference.onnx.backend import OnnxBackend
    from clawdbot.inference.onnx.chat_template import ChatTemplate
    from clawdbot.inference.onnx.engine import DecoderEngine
    from clawdbot.inference.onnx.graph import GraphSpec, KVLayer
    from clawdbot.inference.onnx.model_folder import ModelFolder
    from clawdbot.inference.onnx.runtime import RuntimeOptions, available_cpus, default_threads
    from clawdbot.inference.onnx.sampling import Sampler

#: Each public name and the module that defines it.
_EXPORTS = {
    "ChatTemplate": "chat_template",
    "DecoderEngine": "engine",
    "GraphSpec": "graph",
    "KVLayer": "graph",
    "ModelFolder": "model_folder",
    "OnnxBackend": "backend",
    "RuntimeOptions": "runtime",
    "Sampler": "sampling",
    "available_cpus": "runtime",
    "default_threads": "runtime",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: the next lookup is a plain module attribute
    return value


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
