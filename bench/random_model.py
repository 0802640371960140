"""A random-init model of the shipped architecture at a chosen size, in the shipped (fused) layout, for benchmarks
that need a costlier token than the shipped 2.6 M-parameter model's.

The weights are random (a few seconds to build, nothing to download), which is all a speed measurement needs:
the graph, the tokenizer (the shipped one, 4096 tokens) and the serving path are the shipped ones, only wider
and deeper. Built the way ``training.train.export`` builds the shipped folder: the Optimum-layout export of the
model (checked against PyTorch) with the shipped tokenizer files, then onnxruntime-genai's fused graph (checked
against that export). Needs the ``train`` extra (torch, transformers, onnxruntime-genai).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "clawdbot-tiny-chat"
#: The shipped folder's files that are not weights: tokenizer, chat template, generation defaults.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")


def build(out_dir: Path, *, hidden: int = 512, layers: int = 6, head_dim: int = 64, seed: int = 0) -> Path:
    """Write a servable folder of a random Llama like the shipped one (``hidden``/``layers`` changed, the MLP
    widened in proportion) to ``out_dir``; returns it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.export_onnx import export_decoder, export_fused

    shipped = json.loads((SHIPPED / "config.json").read_text(encoding="utf-8"))
    heads = hidden // head_dim
    fields = {k: v for k, v in shipped.items() if k not in ("architectures", "transformers_version", "dtype")}
    fields |= {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
               "num_key_value_heads": heads, "head_dim": head_dim,
               "intermediate_size": shipped["intermediate_size"] * hidden // shipped["hidden_size"]}
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**fields)).eval()
    out = Path(out_dir)
    hf_dir, optimum = out.parent / f"{out.name}-hf", out.parent / f"{out.name}-optimum"
    model.save_pretrained(hf_dir)
    export_decoder(model, optimum)
    for name in TOKENIZER_FILES:  # the reference's files are what export_fused ships next to the fused graph
        shutil.copy2(SHIPPED / name, optimum / name)
        shutil.copy2(SHIPPED / name, hf_dir / name)
    export_fused(hf_dir, out, optimum)
    shutil.rmtree(hf_dir, ignore_errors=True)
    shutil.rmtree(optimum, ignore_errors=True)
    params = sum(p.numel() for p in model.parameters())
    logger.debug("random model: hidden %d, %d layers, %d parameters in %s", hidden, layers, params, out)
    return out


def parameter_count(hidden: int, layers: int) -> int:
    """Parameters of :func:`build`'s model (tied embedding), for reports, without building it."""
    shipped = json.loads((SHIPPED / "config.json").read_text(encoding="utf-8"))
    intermediate = shipped["intermediate_size"] * hidden // shipped["hidden_size"]
    vocab = shipped["vocab_size"]
    per_layer = 4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden
    return vocab * hidden + layers * per_layer + hidden


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.random_model OUT [--hidden 512] [--layers 6]``: a benchmark builds its model in a child
    process, so torch (gigabytes, its own thread pools) never shares the process that times the decode loop."""
    parser = argparse.ArgumentParser(prog="python -m bench.random_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    print(build(args.out, hidden=args.hidden, layers=args.layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
