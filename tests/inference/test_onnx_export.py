"""``training.export_onnx``: the folder layout it writes and logits equal to PyTorch's."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from clawdbot.inference.onnx import ModelFolder

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("model", ["llama", "gpt2_fp16"])
def test_export_writes_the_optimum_layout(model: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(f"{model}_dir")
    names = {p.name for p in path.iterdir()}
    assert {"model.onnx", "tokenizer.json", "tokenizer_config.json", "config.json",
            "generation_config.json"} <= names
    assert "chat_template.jinja" not in names  # folded into tokenizer_config.json
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tokenizer_config["chat_template"]
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    folder = ModelFolder.load(path)
    assert folder.eos_token_ids()
    assert (path / "model.onnx_data").is_file() is (model == "llama")  # external data only where asked


def test_exported_logits_equal_pytorch(hf_llama_dir: Path, llama_dir: Path) -> None:
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM

    from clawdbot.inference.onnx import OnnxBackend, RuntimeOptions

    ids = [0, 5, 17, 42, 99, 7, 3, 250]
    with torch.no_grad():
        expected = LlamaForCausalLM.from_pretrained(hf_llama_dir).eval()(torch.tensor([ids])).logits[0].numpy()
    # every position's logits: the graph as exported, without the engine's last-position rewrite
    engine = OnnxBackend(llama_dir, options=RuntimeOptions(last_position_logits=False)).engine
    assert not engine.spec.last_logits_only
    got = engine.forward(ids)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


def test_export_without_tokenizer_and_fp16_gpt2(tmp_path: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from clawdbot.inference.onnx.graph import GraphSpec
    from training.export_onnx import export_decoder

    torch.manual_seed(2)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32,
                                       bos_token_id=0, eos_token_id=1))
    out = export_decoder(model, tmp_path / "m", fp16=True, with_position_ids=False)  # verify=True checks ORT
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    spec = GraphSpec.from_io(session.get_inputs(), session.get_outputs())
    assert (spec.num_layers, spec.kv_heads, spec.head_dim, spec.kv_dtype) == (1, 2, 8, "float16")
    assert spec.position_ids is None
    assert not (out / "tokenizer.json").exists()
