"""Sharing a tied embedding shrinks the exported graph and leaves its outputs unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from training.onnx_tied import _logits, share_tied_embedding

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def exported_tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.export_onnx import export_decoder

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("tied")
    export_decoder(LlamaForCausalLM(config), out)
    return out / "model.onnx"


def test_tied_embedding_is_stored_once_with_identical_logits(exported_tiny_llama: Path) -> None:
    # GIVEN an export whose output projection is a transposed copy of the embedding
    before_size = exported_tiny_llama.stat().st_size
    before = _logits(exported_tiny_llama)
    # WHEN the pass runs
    assert share_tied_embedding(exported_tiny_llama) == 1
    # THEN the copy (512 x 32 fp32 = 64 KiB) is gone and the model computes the same logits
    import onnx

    shapes = [tuple(i.dims) for i in onnx.load(str(exported_tiny_llama)).graph.initializer]
    assert (512, 32) in shapes and (32, 512) not in shapes
    assert before_size - exported_tiny_llama.stat().st_size > 0.95 * 512 * 32 * 4
    np.testing.assert_allclose(_logits(exported_tiny_llama), before, rtol=1e-6, atol=1e-6)
    # AND running it again finds nothing left to share
    assert share_tied_embedding(exported_tiny_llama) == 0
