"""Fixtures for the benchmark-adjacent unit tests: the shipped model's tokenizer bundle (no ONNX Runtime)."""

from __future__ import annotations

import pytest

from clawdbot.config.settings import DEFAULT_MODEL_DIR
from clawdbot.inference.tokenizer_bundle import TokenizerBundle


@pytest.fixture(scope="session")
def bundle() -> TokenizerBundle:
    """The shipped model's prompt side: its real chat template and tokenizer."""
    return TokenizerBundle(DEFAULT_MODEL_DIR)
