"""Generation speed: our ONNX Runtime engine vs onnxruntime-genai on the same weights, on this machine's CPU.

What runs, side by side in one process, interleaved run by run (so background load hits every engine alike):

- ``ours_kv``: our engine on the shipped model folder (onnxruntime-genai's builder graph: fused
  GroupQueryAttention, cache written in place), KV cache;
- ``ours_nokv``: the same without a cache (the whole sequence recomputed per token: the baseline a cache beats);
- ``ours_optimum_kv``: our engine on the plain Optimum export of the same weights (unfused attention): what a
  user's own export runs like, and why the project ships the fused graph;
- ``genai``: onnxruntime-genai's own generator on the shipped folder (it reads ``genai_config.json``).

Every engine gets the same prompt ids, generates exactly ``--tokens`` greedy tokens (EOS ignored, so the work is
identical) with the same intra-op thread count. Reported: median tokens/s (generated tokens / wall time from the
call to the last token), median time to first token, and median tokens per CPU-second of the process (less
sensitive than wall time to other work on a shared machine). The Optimum export comes from the trainer's
checkpoint when its architecture is the shipped one (``checkpoint/optimum``, written by ``training.train``), else
from a random-init model of the shipped ``config.json`` (speed does not depend on the weights' values when the
token count is fixed; ``optimum_weights`` in the results says which, and the same-tokens check runs only on the
trained weights).

    python -m bench.generation [--model-dir DIR] [--hf-dir DIR] [--tokens 128] [--runs 30] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO / "models" / "clawdbot-tiny-chat"
DEFAULT_CHECKPOINT = REPO / "training" / ".cache" / "checkpoint"
RESULTS = REPO / "bench" / "results" / "generation.json"
PROMPT = "Hi! I'm planning a trip to the mountains next week. What should I pack?"
SYSTEM = "You are Clawdbot, a friendly and concise assistant."

#: One measured run: (seconds to first token, seconds to last token, tokens generated, CPU seconds used).
Timing = tuple[float, float, int, float]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _same_architecture(a: Path, b: Path) -> bool:
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size")
    try:
        ca, cb = (json.loads((d / "config.json").read_text(encoding="utf-8")) for d in (a, b))
    except (OSError, ValueError):
        return False
    return all(ca.get(k) == cb.get(k) for k in keys)


def _optimum_folder(model_dir: Path, hf_dir: Path | None, scratch: Path) -> tuple[Path, str]:
    """An Optimum-layout export of the shipped weights when they are at hand, else of a random-init model of the
    same architecture; with a description of which."""
    from training.export_onnx import export_decoder

    if hf_dir is None and (DEFAULT_CHECKPOINT / "optimum" / "model.onnx").is_file() \
            and _same_architecture(DEFAULT_CHECKPOINT / "optimum", model_dir):
        return DEFAULT_CHECKPOINT / "optimum", "trained (the shipped weights)"
    if hf_dir is None and _same_architecture(DEFAULT_CHECKPOINT, model_dir):
        hf_dir = DEFAULT_CHECKPOINT
    if hf_dir is not None:
        model, weights = _load(hf_dir), f"transformers folder {hf_dir}"
    else:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
        weights = "random-init with the shipped config.json (no checkpoint)"
    out = export_decoder(model, scratch / "optimum")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):  # the served model's
        shutil.copy2(model_dir / name, out / name)
    return out, weights


def _load(hf_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(hf_dir)


def _time_ours(engine: Any, prompt: Sequence[int], tokens: int, use_cache: bool) -> Timing:
    from clawdbot.inference.onnx import Sampler

    sampler = Sampler(0.0)
    cpu = time.process_time()
    start = time.perf_counter()
    first = 0.0
    count = 0
    for _ in engine.generate(prompt, max_new_tokens=tokens, sampler=sampler, use_cache=use_cache):
        count += 1
        if count == 1:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start, count, time.process_time() - cpu


def _genai_runner(folder: Path, threads: int) -> Callable[[Sequence[int], int], Timing]:
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.clear_providers()  # CPU
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)

    def run(prompt: Sequence[int], tokens: int) -> Timing:
        params = og.GeneratorParams(model)
        total = len(prompt) + tokens
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        cpu = time.process_time()
        start = time.perf_counter()
        generator = og.Generator(model, params)
        generator.append_tokens(list(prompt))
        first = 0.0
        count = 0
        while not generator.is_done():
            generator.generate_next_token()
            generator.get_next_tokens()
            count += 1
            if count == 1:
                first = time.perf_counter() - start
        return first, time.perf_counter() - start, count, time.process_time() - cpu

    return run


def _summary(timings: list[Timing]) -> tuple[float, float, float]:
    """(median tokens/s, median ms to first token, median tokens per CPU second)."""
    return (statistics.median(n / total for _, total, n, _ in timings),
            statistics.median(first * 1000 for first, _, _, _ in timings),
            statistics.median(n / cpu for _, _, n, cpu in timings if cpu > 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                        help="the served model folder (with genai_config.json for onnxruntime-genai)")
    parser.add_argument("--hf-dir", type=Path, default=None,
                        help="transformers folder with the same weights (default: the trainer's checkpoint)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per run")
    parser.add_argument("--nokv-tokens", type=int, default=32, help="tokens per run without the KV cache")
    parser.add_argument("--runs", type=int, default=30, help="measured runs per engine (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: the engine's automatic choice)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import onnxruntime
    import onnxruntime_genai

    from clawdbot.inference.onnx import OnnxBackend, RuntimeOptions, Sampler, available_cpus, default_threads
    from clawdbot.inference.types import ChatMessage

    if not (args.model_dir / "model.onnx").is_file():
        print(f"no model at {args.model_dir} (train it: python -m training.train)", file=sys.stderr)
        return 1
    if not (args.model_dir / "genai_config.json").is_file():
        print(f"{args.model_dir} has no genai_config.json: onnxruntime-genai cannot load it "
              "(build it with training.export_onnx.export_fused)", file=sys.stderr)
        return 1
    threads = args.threads or default_threads(
        sum(p.stat().st_size for p in args.model_dir.glob("model.onnx*") if p.is_file()))
    # No prefix cache: each case repeats one prompt, and onnxruntime-genai has none to compare with.
    options = RuntimeOptions(threads=threads, providers=("CPUExecutionProvider",), prefix_cache_bytes=0)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None

    with tempfile.TemporaryDirectory(prefix="bench-generation-") as scratch_name:
        optimum_dir, weights = _optimum_folder(args.model_dir, args.hf_dir, Path(scratch_name))

        ours = OnnxBackend(args.model_dir, options=options)
        optimum = OnnxBackend(optimum_dir, options=options)
        genai = _genai_runner(args.model_dir, threads)
        prompt = ours.encode_prompt([ChatMessage("system", SYSTEM), ChatMessage("user", PROMPT)])
        tokens = min(args.tokens, ours.context_length - len(prompt))

        cases: dict[str, Callable[[], Timing]] = {
            "ours_kv": lambda: _time_ours(ours.engine, prompt, tokens, True),
            "ours_nokv": lambda: _time_ours(ours.engine, prompt, args.nokv_tokens, False),
            "ours_optimum_kv": lambda: _time_ours(optimum.engine, prompt, tokens, True),
            "genai": lambda: genai(prompt, tokens),
        }
        timings: dict[str, list[Timing]] = {name: [] for name in cases}
        order = list(cases)
        for run in range(args.runs + 1):
            # Alternate the order every round so no engine always runs right after the same other one.
            for name in order if run % 2 else reversed(order):
                result = cases[name]()
                if run:  # the first round warms caches and allocators
                    timings[name].append(result)
        # Same weights, same greedy decoding: the shipped graph must reproduce the Optimum export's tokens.
        same_tokens = None
        if weights.startswith("trained"):
            same_tokens = (list(ours.engine.generate(prompt, max_new_tokens=64, sampler=Sampler(0.0)))
                           == list(optimum.engine.generate(prompt, max_new_tokens=64, sampler=Sampler(0.0))))

    results: dict[str, Any] = {
        "model_dir": str(args.model_dir.relative_to(REPO) if args.model_dir.is_relative_to(REPO)
                         else args.model_dir),
        "model_layers": ours.engine.spec.num_layers,
        "model_kv_heads": ours.engine.spec.kv_heads,
        "model_head_dim": ours.engine.spec.head_dim,
        "model_vocab_size": ours.engine.vocab_size,
        "model_weights_bytes": ours.folder.weights_bytes,
        "optimum_weights": weights,
        "shipped_kv_cache_in_place": ours.engine.in_place_cache,
        "shipped_same_greedy_tokens_as_optimum": same_tokens,
        "prompt_tokens": len(prompt),
        "generated_tokens": tokens,
        "nokv_generated_tokens": args.nokv_tokens,
        "runs": args.runs,
        "threads": threads,
        "cpu_model": _cpu_model(),
        "cpus_available": available_cpus(),
        "load_average_1min_start": round(load_start[0], 2) if load_start else None,
        "load_average_1min_end": round(os.getloadavg()[0], 2) if load_start else None,
        "onnxruntime_version": onnxruntime.__version__,
        "onnxruntime_genai_version": onnxruntime_genai.__version__,
        "python_version": platform.python_version(),
    }
    for name, values in timings.items():
        rate, ttft, per_cpu = _summary(values)
        results[f"{name}_tokens_per_s"] = round(rate, 1)
        results[f"{name}_ttft_ms"] = round(ttft, 2)
        results[f"{name}_tokens_per_cpu_s"] = round(per_cpu, 1)
    # Paired per round (both engines ran seconds apart, under the same background load): the median of the
    # per-round speed ratios is steadier on a shared machine than the ratio of the two medians.
    # Paired per round (both engines ran seconds apart, under the same background load): the median of the
    # per-round ratios is steadier on a shared machine than the ratio of the two medians.
    for name, (mine, theirs) in {"ours_vs_genai": ("ours_kv", "genai"),
                                 "fused_vs_optimum": ("ours_kv", "ours_optimum_kv")}.items():
        # speed = tokens / wall time; both generate the same count, so the speed ratio is their time ratio
        paired = sorted(t[1] / o[1] for o, t in zip(timings[mine], timings[theirs], strict=True))
        results[f"{name}_speed_ratio"] = round(statistics.median(paired), 3)
        results[f"{name}_speed_ratio_q25"] = round(paired[len(paired) // 4], 3)
        results[f"{name}_speed_ratio_q75"] = round(paired[(3 * len(paired)) // 4], 3)
    paired_cpu = [t[3] / o[3] for o, t in zip(timings["ours_kv"], timings["genai"], strict=True) if o[3] > 0]
    results["ours_vs_genai_cpu_efficiency_ratio"] = round(statistics.median(paired_cpu), 3)
    results["ours_kv_vs_nokv_speed_ratio"] = round(
        results["ours_kv_tokens_per_s"] / results["ours_nokv_tokens_per_s"], 3)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    _print_table(results)
    print(f"results: {args.out}")
    return 0


def _print_table(results: dict[str, Any]) -> None:
    rows = [
        ("ours, shipped graph (fused GQA), KV cache", "ours_kv"),
        ("ours, shipped graph, no cache", "ours_nokv"),
        ("ours, Optimum export, KV cache", "ours_optimum_kv"),
        ("onnxruntime-genai generator", "genai"),
    ]
    print(f"{results['model_dir']}: {results['model_layers']} layers, prompt {results['prompt_tokens']} tokens, "
          f"{results['generated_tokens']} generated, {results['threads']} thread(s), {results['cpu_model']}")
    print(f"{'engine':<44} {'tokens/s':>10} {'TTFT ms':>9} {'tokens/CPU-s':>13}")
    for label, key in rows:
        print(f"{label:<44} {results[key + '_tokens_per_s']:>10.1f} {results[key + '_ttft_ms']:>9.2f} "
              f"{results[key + '_tokens_per_cpu_s']:>13.1f}")
    print(f"ours / genai, paired per round: median {results['ours_vs_genai_speed_ratio']:.3f}x "
          f"(quartiles {results['ours_vs_genai_speed_ratio_q25']:.3f}-{results['ours_vs_genai_speed_ratio_q75']:.3f}),"
          f" per CPU-second {results['ours_vs_genai_cpu_efficiency_ratio']:.3f}x; fused / Optimum graph "
          f"{results['fused_vs_optimum_speed_ratio']:.2f}x; KV cache / no cache: "
          f"{results['ours_kv_vs_nokv_speed_ratio']:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
