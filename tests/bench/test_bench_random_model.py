"""``bench.random_model`` (the larger model ``bench.api_generation`` measures the API on): built from nothing but
the repository, a folder the engine serves with the shipped tokenizer and chat template, of the requested size."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bench.random_model import SHIPPED, build, parameter_count

if TYPE_CHECKING:
    from pathlib import Path


def test_a_built_random_model_is_served_with_the_shipped_tokenizer(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from clawdbot.inference.onnx import OnnxBackend
    from clawdbot.inference.types import ChatMessage, GenerationParams

    # GIVEN a small random model of the shipped architecture, built in the fused layout
    folder = build(tmp_path / "random", hidden=64, layers=1, head_dim=32)

    # THEN it has the requested size, the shipped tokenizer files, and no build leftovers beside it
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (64, 1, 4096)
    assert (folder / "tokenizer.json").read_bytes() == (SHIPPED / "tokenizer.json").read_bytes()
    assert (folder / "genai_config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random"]
    assert parameter_count(64, 1) == sum(p.numel() for p in LlamaForCausalLM(LlamaConfig(**config)).parameters())
    # AND the engine serves it through the shipped chat template
    backend = OnnxBackend(folder)
    completion = backend.generate([ChatMessage("user", "Hello")],
                                  GenerationParams(max_tokens=5, temperature=1.0, seed=1))
    assert completion.completion_tokens >= 1 and completion.finish_reason in ("length", "stop")
