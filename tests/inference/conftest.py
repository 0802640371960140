"""Models for the inference tests, built once per test session into a temporary folder.

``llama_dir`` / ``gpt2_fp16_dir`` / ``genai_dir`` are tiny random-init models (see ``tiny_models``);
``genai_dir`` holds the *same weights* as ``llama_dir``, built by onnxruntime-genai's model builder.
``shipped_dir`` is the model this repository ships; tests on it fail (not skip) when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from clawdbot.config.settings import DEFAULT_MODEL_DIR
from tests.inference import tiny_models

if TYPE_CHECKING:
    from pathlib import Path

    from transformers import PreTrainedTokenizerFast

    from clawdbot.inference.onnx import OnnxBackend

#: The backends every generation-behaviour test runs on.
TINY_MODELS = ("llama", "gpt2_fp16", "genai")


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return tiny_models.build_tokenizer()


@pytest.fixture(scope="session")
def hf_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The transformers save of the Llama fixture (the builder's input)."""
    return tmp_path_factory.mktemp("hf-llama")


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerFast,
              hf_llama_dir: Path) -> Path:
    return tiny_models.build_llama(tmp_path_factory.mktemp("llama"), tokenizer, hf_dir=hf_llama_dir)


@pytest.fixture(scope="session")
def gpt2_fp16_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerFast) -> Path:
    return tiny_models.build_gpt2_fp16(tmp_path_factory.mktemp("gpt2-fp16"), tokenizer)


@pytest.fixture(scope="session")
def genai_dir(tmp_path_factory: pytest.TempPathFactory, llama_dir: Path, hf_llama_dir: Path) -> Path:
    from training.export_onnx import build_genai_model

    return build_genai_model(hf_llama_dir, tmp_path_factory.mktemp("genai-llama"))


@pytest.fixture(scope="session")
def shipped_dir() -> Path:
    assert (DEFAULT_MODEL_DIR / "model.onnx").is_file(), f"the shipped model is missing at {DEFAULT_MODEL_DIR}"
    return DEFAULT_MODEL_DIR


_backends: dict[str, OnnxBackend] = {}


def _backend(path: Path) -> OnnxBackend:
    from clawdbot.inference.onnx import OnnxBackend

    key = str(path)
    if key not in _backends:
        _backends[key] = OnnxBackend(path)
    return _backends[key]


@pytest.fixture(scope="session")
def shipped_backend(shipped_dir: Path) -> OnnxBackend:
    return _backend(shipped_dir)


@pytest.fixture(params=TINY_MODELS)
def tiny_backend(request: pytest.FixtureRequest) -> OnnxBackend:
    """Each tiny model in turn (one loaded backend per model for the whole session)."""
    return _backend(request.getfixturevalue(f"{request.param}_dir"))


@pytest.fixture(params=("shipped", *TINY_MODELS))
def any_backend(request: pytest.FixtureRequest) -> OnnxBackend:
    """The shipped model and every tiny model."""
    return _backend(request.getfixturevalue(f"{request.param}_dir"))
