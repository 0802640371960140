"""Fixtures for the training tests: the corpora as the training script loads them, and the shipped model.

The shipped tokenizer is the one the model was trained with, so tests of the chat format and of
tokenization run against it rather than against a freshly trained one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from training import data

if TYPE_CHECKING:
    from tokenizers import Tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODEL = REPO_ROOT / "models" / "clawdbot-tiny-chat"


@pytest.fixture(scope="session")
def conversations() -> list[data.Conversation]:
    return data.load_all()


@pytest.fixture(scope="session")
def model_dir() -> Path:
    assert (SHIPPED_MODEL / "model.onnx").is_file(), f"the shipped model is missing at {SHIPPED_MODEL}"
    return SHIPPED_MODEL


@pytest.fixture(scope="session")
def report(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "training_report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def shipped_tokenizer(model_dir: Path) -> Tokenizer:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))
