"""Export a transformers causal LM to the folder layout the ONNX engine serves (Hugging Face Optimum's decoder).

The folder holds one *merged* decoder ``model.onnx``: it takes ``input_ids``, ``attention_mask``, (optionally)
``position_ids`` and ``past_key_values.{i}.key/value`` and returns ``logits`` and ``present.{i}.key/value``. The
first step feeds an empty past (sequence length 0), so one graph serves both prefill and decode, which keeps the
folder small and the engine simple. Next to it: ``config.json``, ``generation_config.json`` and, when a tokenizer
is given, ``tokenizer.json`` and ``tokenizer_config.json`` (with the chat template inlined, since the engine reads
it from there).

Why the legacy TorchScript exporter: transformers' cache objects and mask helpers are Python-heavy; tracing a
small wrapper that takes flat past tensors, builds a ``DynamicCache`` and returns flat presents, with the 4D mask
built in the wrapper from plain tensor ops, gives a graph whose shapes are all dynamic and that we verify
against PyTorch right after export (``verify=True``).

``build_genai_model`` builds the onnxruntime-genai variant of the same weights (its model builder, fused
GroupQueryAttention, cache written in place). ``export_fused`` turns that into a servable folder, checked against
the Optimum export: it is what the project ships, since the engine decodes ~1.8x faster on it (``bench.generation``)
and onnxruntime-genai can load the same folder (``genai_config.json``).

Usage::

    python -m training.export_onnx HF_MODEL_DIR OUT_DIR [--fp16] [--genai GENAI_OUT_DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: Optimum's names; the engine discovers them from the graph but other tools expect exactly these.
PAST_KEY = "past_key_values.{}.key"
PAST_VALUE = "past_key_values.{}.value"
PRESENT_KEY = "present.{}.key"
PRESENT_VALUE = "present.{}.value"
ONNX_FILE = "model.onnx"
ONNX_DATA_FILE = "model.onnx_data"
#: Above this many bytes of weights the graph is saved with external data (protobuf's hard limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1 << 30


def _cache_geometry(config: Any) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a decoder config, for Llama-, Mistral- and GPT-2-style configs."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layers = getattr(text, "num_hidden_layers", None) or text.n_layer
    heads = getattr(text, "num_attention_heads", None) or text.n_head
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    hidden = getattr(text, "hidden_size", None) or text.n_embd
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    return int(layers), int(kv_heads), int(head_dim)


def _make_wrapper(model: PreTrainedModel, num_layers: int, with_position_ids: bool) -> torch.nn.Module:
    import torch
    from transformers import DynamicCache

    class MergedDecoder(torch.nn.Module):
        """Flat tensors in, flat tensors out: what ``torch.onnx.export`` can trace."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *rest: torch.Tensor):
            if with_position_ids:
                position_ids, flat_past = rest[0], rest[1:]
            else:
                flat_past = rest
            past_len = flat_past[0].shape[2]
            q_len = input_ids.shape[1]
            if not with_position_ids:
                # Left padding aware positions, as transformers' generate() computes them.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past_len:]
            # 4D additive mask (batch, 1, query, key): causal over past + new tokens, and padding from
            # attention_mask. Built here so transformers returns it as-is instead of taking Python branches
            # on tensor values that tracing would freeze.
            dtype = self.model.get_input_embeddings().weight.dtype
            key_pos = torch.arange(past_len + q_len, device=input_ids.device)
            query_pos = torch.arange(q_len, device=input_ids.device) + past_len
            causal = key_pos[None, :] <= query_pos[:, None]
            allowed = causal[None, None, :, :] & attention_mask.bool()[:, None, None, :]
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
            cache = DynamicCache(
                [(flat_past[2 * i], flat_past[2 * i + 1]) for i in range(num_layers)],
                config=self.model.config,
            )
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
                return_dict=True,
            )
            presents: list[torch.Tensor] = []
            for layer in out.cache.layers:
                presents.extend((layer.keys, layer.values))
            return (out.logits, *presents)

    return MergedDecoder().eval()


def export_decoder(
    model: PreTrainedModel,
    out_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    fp16: bool = False,
    with_position_ids: bool = True,
    external_data: bool | None = None,
    opset: int = 17,
    verify: bool = True,
) -> Path:
    """Write ``model`` (a transformers causal LM, e.g. Llama or GPT-2) as an Optimum-layout ONNX folder.

    ``fp16`` exports half-precision weights, KV cache and logits. ``with_position_ids=False`` leaves the
    ``position_ids`` input out (positions are derived from ``attention_mask`` inside the graph), as some Optimum
    exports do. ``external_data=None`` stores weights next to the graph only for large models. ``verify`` runs
    ONNX Runtime against PyTorch on a prefill and a decode step and raises if they disagree.
    Returns the output folder.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    # Eager attention: the plainest graph (MatMul/Softmax), which every execution provider runs.
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:  # pragma: no cover - older transformers
        model.config._attn_implementation = "eager"
    model = model.to(torch.float16 if fp16 else torch.float32)
    num_layers, kv_heads, head_dim = _cache_geometry(model.config)
    wrapper = _make_wrapper(model, num_layers, with_position_ids)

    # Trace with a non-empty past so every shape stays symbolic; the empty past is checked in verify.
    batch, past_len, q_len = 1, 3, 2
    dtype = torch.float16 if fp16 else torch.float32
    vocab = model.get_input_embeddings().weight.shape[0]
    input_ids = torch.randint(0, vocab, (batch, q_len))
    attention_mask = torch.ones(batch, past_len + q_len, dtype=torch.int64)
    position_ids = torch.arange(past_len, past_len + q_len)[None, :]
    past = [torch.zeros(batch, kv_heads, past_len, head_dim, dtype=dtype) for _ in range(2 * num_layers)]

    input_names = ["input_ids", "attention_mask"]
    args: list[torch.Tensor] = [input_ids, attention_mask]
    dynamic_axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    if with_position_ids:
        input_names.append("position_ids")
        args.append(position_ids)
        dynamic_axes["position_ids"] = {0: "batch_size", 1: "sequence_length"}
    output_names = ["logits"]
    for i in range(num_layers):
        for past_name, present_name in ((PAST_KEY, PRESENT_KEY), (PAST_VALUE, PRESENT_VALUE)):
            input_names.append(past_name.format(i))
            output_names.append(present_name.format(i))
            dynamic_axes[past_name.format(i)] = {0: "batch_size", 2: "past_sequence_length"}
            dynamic_axes[present_name.format(i)] = {0: "batch_size", 2: "total_sequence_length"}
    args.extend(past)

    tmp_file = out / (ONNX_FILE + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about Python branches we made shape-independent
        torch.onnx.export(
            wrapper,
            tuple(args),
            str(tmp_file),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    _save_onnx(tmp_file, out, external_data)
    tmp_file.unlink(missing_ok=True)

    model.config.save_pretrained(out)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        generation_config.save_pretrained(out)
    if tokenizer is not None:
        save_tokenizer(tokenizer, out)
    if verify:
        verify_export(wrapper, out, with_position_ids=with_position_ids, fp16=fp16)
    logger.debug("exported %s to %s", type(model).__name__, out)
    return out


def _save_onnx(src: Path, out: Path, external_data: bool | None) -> None:
    """Re-save the traced graph, with weights in ``model.onnx_data`` when asked or when large."""
    import onnx

    proto = onnx.load(str(src))
    weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
    use_external = external_data if external_data is not None else weight_bytes > EXTERNAL_DATA_THRESHOLD
    for stale in (out / ONNX_FILE, out / ONNX_DATA_FILE):
        stale.unlink(missing_ok=True)
    if use_external:
        onnx.save_model(proto, str(out / ONNX_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=ONNX_DATA_FILE, size_threshold=1024)
    else:
        onnx.save_model(proto, str(out / ONNX_FILE))


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out: str | Path) -> None:
    """Save ``tokenizer.json`` + ``tokenizer_config.json`` with ``chat_template`` inlined.

    transformers 5 writes the template to ``chat_template.jinja``; the Optimum layout (and our engine's
    primary lookup) has it in ``tokenizer_config.json``, so it is folded back in.
    """
    out = Path(out)
    tokenizer.save_pretrained(out)
    if not (out / "tokenizer.json").is_file():
        raise ValueError("only fast tokenizers (tokenizer.json) are supported; got " + type(tokenizer).__name__)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    template_file = out / "chat_template.jinja"
    template = getattr(tokenizer, "chat_template", None)
    if template_file.is_file():
        template = template_file.read_text(encoding="utf-8")
        template_file.unlink()
    if template and not config.get("chat_template"):
        config["chat_template"] = template
    # Special tokens as plain strings, which is what the engine (and transformers) read back.
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, str) and name not in config:
            config[name] = value
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def verify_export(wrapper: torch.nn.Module, out: Path, *, with_position_ids: bool, fp16: bool) -> None:
    """Run the exported graph in ONNX Runtime on an empty-past prefill and two decode steps; compare logits."""
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    past_inputs = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    num_layers = len(past_inputs) // 2
    kv_heads, head_dim = past_inputs[0].shape[1], past_inputs[0].shape[3]
    np_dtype = np.float16 if fp16 else np.float32
    vocab = wrapper.model.get_input_embeddings().weight.shape[0]
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, size=(1, 7))
    past = [np.zeros((1, kv_heads, 0, head_dim), dtype=np_dtype) for _ in range(2 * num_layers)]
    tol = 5e-2 if fp16 else 1e-3
    for start, stop in ((0, 5), (5, 6), (6, 7)):
        ids = tokens[:, start:stop]
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": np.ones((1, stop), dtype=np.int64)}
        if with_position_ids:
            feeds["position_ids"] = np.arange(start, stop, dtype=np.int64)[None, :]
        for i in range(num_layers):
            feeds[PAST_KEY.format(i)], feeds[PAST_VALUE.format(i)] = past[2 * i], past[2 * i + 1]
        ort_out = session.run(None, feeds)
        with torch.no_grad():
            torch_out = wrapper(*[torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()])
        expected = torch_out[0].float().numpy()
        got = ort_out[0].astype(np.float32)
        if not np.allclose(got, expected, atol=tol, rtol=tol):
            raise RuntimeError(
                f"exported graph disagrees with PyTorch at tokens {start}:{stop}: "
                f"max abs diff {np.abs(got - expected).max():.3g}"
            )
        past = ort_out[1:]


def build_genai_model(hf_dir: str | Path, out_dir: str | Path, *, precision: str = "fp32",
                      execution_provider: str = "cpu") -> Path:
    """Build onnxruntime-genai's variant of a saved transformers model (offline, from the local folder).

    The builder writes a fused-attention graph (GroupQueryAttention) plus ``genai_config.json``; the tokenizer
    files are copied from ``hf_dir``. Used by the benchmark to run both engines on the same weights.
    """
    import contextlib
    import io

    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    hf_dir, out = Path(hf_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / ".builder-cache"
    positional = (str(hf_dir), str(hf_dir), str(out), precision, execution_provider, str(cache_dir))
    # The builder prints progress to stdout; keep it out of callers' output (logged at debug level instead).
    chatter = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
        warnings.simplefilter("ignore")
        options = parse_extra_options(*positional, [])
        create_model(*positional, **options)
    logger.debug("onnxruntime-genai builder: %s", chatter.getvalue())
    shutil.rmtree(cache_dir, ignore_errors=True)
    # config.json too: the builder writes only genai_config.json, and our engine reads the HF config.
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (hf_dir / name).is_file() and not (out / name).is_file():
            shutil.copy2(hf_dir / name, out / name)
    return out


def export_fused(hf_dir: str | Path, out_dir: str | Path, reference_dir: str | Path) -> Path:
    """The shipped form: onnxruntime-genai's fused graph of ``hf_dir`` plus the tokenizer and config files of
    ``reference_dir`` (an Optimum export of the same weights, whose logits the fused graph must reproduce).

    The builder writes its own ``tokenizer_config.json`` (no chat template inlined) and a ``chat_template.jinja``:
    both are replaced by the reference's, so the engine reads one template, the one the tests check.
    """
    out, reference = Path(out_dir), Path(reference_dir)
    for stale in (ONNX_FILE, ONNX_FILE + ".data", "chat_template.jinja", "genai_config.json"):
        (out / stale).unlink(missing_ok=True)
    build_genai_model(hf_dir, out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(reference / name, out / name)
    verify_same_logits(reference / ONNX_FILE, out / ONNX_FILE)
    return out


def verify_same_logits(reference: Path, candidate: Path, *, tol: float = 1e-3) -> float:
    """Prefill 9 tokens, then decode 3 one by one, through both graphs (each with its own cache layout: the fused
    graph's past/present share one buffer per layer); raise if their logits differ by more than ``tol``.
    Returns the largest difference seen."""
    import numpy as np
    import onnxruntime as ort

    def runner(path: Path) -> Any:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in session.get_inputs()}
        past_names = [n for n in inputs if n.startswith("past_key_values.")]
        config = json.loads((path.parent / "config.json").read_text(encoding="utf-8"))
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or config["num_attention_heads"]
        past = {n: np.zeros((1, kv_heads, 0, head_dim), dtype=np.float32) for n in past_names}

        def run(ids: np.ndarray, start: int) -> np.ndarray:
            stop = start + ids.shape[1]
            feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": np.ones((1, stop), dtype=np.int64), **past}
            if "position_ids" in inputs:
                feeds["position_ids"] = np.arange(start, stop, dtype=np.int64)[None, :]
            outputs = session.run(None, feeds)
            names = [o.name for o in session.get_outputs()]
            for name, value in zip(names, outputs, strict=True):
                if name.startswith("present."):
                    past[name.replace("present.", "past_key_values.", 1)] = value
            return outputs[names.index("logits")]

        return run

    ref, cand = runner(reference), runner(candidate)
    tokens = np.random.default_rng(0).integers(4, 200, size=(1, 12))
    worst = 0.0
    for start, stop in ((0, 9), (9, 10), (10, 11), (11, 12)):
        ids = tokens[:, start:stop]
        worst = max(worst, float(np.abs(ref(ids, start) - cand(ids, start)).max()))
    if worst > tol:
        raise RuntimeError(f"{candidate} disagrees with {reference}: max abs logit difference {worst:.3g}")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hf_dir", help="a saved transformers model folder (save_pretrained)")
    parser.add_argument("out_dir", help="where to write the ONNX folder")
    parser.add_argument("--fp16", action="store_true", help="half-precision weights and KV cache")
    parser.add_argument("--no-position-ids", action="store_true", help="derive positions inside the graph")
    parser.add_argument("--genai", metavar="DIR", help="also build the onnxruntime-genai variant into DIR")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.hf_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.hf_dir)
    except (OSError, ValueError):
        tokenizer = None
    export_decoder(model, args.out_dir, tokenizer=tokenizer, fp16=args.fp16,
                   with_position_ids=not args.no_position_ids)
    print(f"wrote {args.out_dir}")
    if args.genai:
        build_genai_model(args.hf_dir, args.genai, precision="fp16" if args.fp16 else "fp32")
        print(f"wrote {args.genai}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
