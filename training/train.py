"""Train the shipped chat model end to end: data → tokenizer → Llama decoder → ONNX folder + report.

    python -m training.train --out models/clawdbot-tiny-chat

Sized for a 2-core CPU and a ~20 minute budget (see MODEL.md for what it achieves). Seeds and the data
order are fixed. Training ends at ``--max-steps`` or after ``--max-minutes``, whichever comes first, and the
learning-rate schedule follows whichever of the two is further along: on a busy or slow machine the run
still ends on time *and* with a fully decayed learning rate, instead of being cut off mid-schedule. A run
that ends on steps is reproducible on the same machine and thread count; the report records which bound
ended it (``stopped_by``).

Why these choices:

* bfloat16 autocast (weights and optimizer stay fp32): ~1.3x the fp32 throughput on AVX-512 CPUs, and
  the exported model is fp32 anyway.
* Batches of similar-length examples under a token budget: almost no padding, so the CPU time goes to
  real tokens.
* Loss only on assistant replies (see ``training.examples``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

    from training.examples import Example

logger = logging.getLogger(__name__)

CACHE_DIR = Path("training/.cache")
DEFAULT_OUT = Path("models/clawdbot-tiny-chat")


@dataclass
class TrainConfig:
    """Every knob of a run; saved in the report so a run can be repeated."""

    seed: int = 1234
    # data
    heldout_per_mille: int = 30
    system_prompt_fraction: float = 0.25
    chatterbot_repeats: int = 3
    # tokenizer
    vocab_size: int = 4096
    # model (Llama architecture)
    context: int = 512
    hidden_size: int = 192
    layers: int = 4
    heads: int = 3
    kv_heads: int = 3
    intermediate_size: int = 512
    # optimisation
    batch_tokens: int = 6144
    max_steps: int = 1200
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 40
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bf16: bool = True
    threads: int = 2
    max_minutes: float = 19.0
    eval_every: int = 200


@dataclass
class Report:
    """What ``training_report.json`` records (and MODEL.md quotes)."""

    config: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    parameters: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    tokens_seen: int = 0
    target_tokens_seen: int = 0
    epochs: float = 0.0
    #: "steps" (reproducible) or "time" (the --max-minutes budget ended it first).
    stopped_by: str = ""
    train_loss_curve: list[tuple[int, float]] = field(default_factory=list)
    heldout_curve: list[tuple[int, float]] = field(default_factory=list)
    heldout: dict[str, Any] = field(default_factory=dict)
    files_bytes: dict[str, int] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)


def make_batches(examples: list[Example], batch_tokens: int, rng: random.Random) -> list[list[Example]]:
    """Group examples of similar length so ``rows * longest <= batch_tokens``; shuffle the batch order."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].input_ids), i))
    batches: list[list[Example]] = []
    current: list[Example] = []
    for i in order:
        ex = examples[i]
        # Sorted ascending, so this example is the longest of the batch it would join.
        if current and (len(current) + 1) * len(ex.input_ids) > batch_tokens:
            batches.append(current)
            current = []
        current.append(ex)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def collate(batch: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, labels) tensors."""
    import torch

    from training.examples import IGNORE

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels)
    return ids, mask, labels


def causal_lm_loss(model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over target positions (fp32 logits for a stable softmax)."""
    import torch.nn.functional as F

    from training.examples import IGNORE

    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum"
    )


def evaluate(model: Any, examples: list[Example], pad_id: int, bf16: bool) -> tuple[float, int]:
    """(mean NLL per target token, target tokens) over ``examples``."""
    import torch

    model.eval()
    total, count = 0.0, 0
    batches = make_batches(examples, 16384, random.Random(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for batch in batches:
            ids, mask, labels = collate(batch, pad_id)
            total += float(causal_lm_loss(model, ids, mask, labels))
            count += int((labels[:, 1:] != -100).sum())
    model.train()
    return total / max(count, 1), count


def lr_at(step: int, progress: float, cfg: TrainConfig) -> float:
    """Linear warmup over steps, then cosine decay to ``min_lr_ratio * lr`` as ``progress`` goes 0 → 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, max(0.0, progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def schedule_progress(step: int, elapsed_s: float, cfg: TrainConfig) -> float:
    """How far the run is, 0 → 1: the further along of steps done and of the time budget used."""
    by_steps = step / cfg.max_steps
    by_time = elapsed_s / (cfg.max_minutes * 60) if cfg.max_minutes > 0 else 0.0
    return max(by_steps, by_time)


def build_model(cfg: TrainConfig, tokenizer: Tokenizer) -> Any:
    """A Llama decoder with tied input/output embeddings (the vocabulary is a big share of a tiny model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.tokenizer import ENDOFTEXT, IM_END, PAD

    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.context,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.token_to_id(ENDOFTEXT),
        eos_token_id=tokenizer.token_to_id(IM_END),
        pad_token_id=tokenizer.token_to_id(PAD),
    )
    return LlamaForCausalLM(config)


def set_generation_defaults(model: Any, tokenizer: Tokenizer) -> None:
    """``generation_config.json``: stop at ``<|im_end|>``; suggested sampling (greedy repeats itself a lot).

    No repetition penalty: clawdbot's engine and the OpenAI API have none, and the card's samples should
    show what the service does.
    """
    from training.tokenizer import ENDOFTEXT, IM_END, PAD

    gen = model.generation_config
    gen.bos_token_id = tokenizer.token_to_id(ENDOFTEXT)
    gen.eos_token_id = tokenizer.token_to_id(IM_END)
    gen.pad_token_id = tokenizer.token_to_id(PAD)
    gen.do_sample = True
    gen.temperature = 0.7
    gen.top_p = 0.9


def machine_info(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def train(cfg: TrainConfig, out_dir: Path, checkpoint_dir: Path) -> Report:
    """The whole pipeline; returns the report (also written next to the model)."""
    import torch

    from training import data, examples
    from training import tokenizer as tok

    t_start = time.perf_counter()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    report = Report(config=asdict(cfg), machine=machine_info(cfg.threads))

    # --- data
    t0 = time.perf_counter()
    chitchat, chatterbot = data.load_chitchat(), data.load_chatterbot()
    train_convs, heldout_convs = data.split(chitchat + chatterbot, cfg.heldout_per_mille)
    train_convs = data.add_system_prompts(train_convs, cfg.system_prompt_fraction, cfg.seed)
    report.timings_s["data"] = time.perf_counter() - t0

    # --- tokenizer (trained on the training split only)
    t0 = time.perf_counter()
    tokenizer = tok.train_tokenizer(
        (m["content"] for c in train_convs for m in c.messages if m["role"] != "system"), cfg.vocab_size
    )
    report.timings_s["tokenizer"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    train_examples = examples.build_examples(train_convs, tokenizer, cfg.context)
    extra = [c for c in train_convs if c.source == "chatterbot"] * (cfg.chatterbot_repeats - 1)
    train_examples += examples.build_examples(extra, tokenizer, cfg.context)
    heldout_by_source = {
        src: examples.build_examples([c for c in heldout_convs if c.source == src], tokenizer, cfg.context)
        for src in ("chitchat", "chatterbot")
    }
    heldout_examples = [e for exs in heldout_by_source.values() for e in exs]
    report.timings_s["encode"] = time.perf_counter() - t0
    epoch_tokens = sum(len(e.input_ids) for e in train_examples)
    report.data = {
        "conversations": {"chitchat": len(chitchat), "chatterbot": len(chatterbot)},
        "train_conversations": len(train_convs),
        "heldout_conversations": len(heldout_convs),
        "train_examples": len(train_examples),
        "heldout_examples": len(heldout_examples),
        "tokens_per_epoch": epoch_tokens,
        "target_tokens_per_epoch": sum(sum(1 for x in e.labels if x >= 0) for e in train_examples),
        "vocab_size": tokenizer.get_vocab_size(),
    }
    logger.info("data: %s", report.data)

    # --- model
    model = build_model(cfg, tokenizer)
    report.parameters = sum(p.numel() for p in model.parameters())
    logger.info("model: %d parameters", report.parameters)
    pad_id = tokenizer.token_to_id(tok.PAD)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )

    # --- train
    rng = random.Random(cfg.seed)
    t_train = time.perf_counter()
    batches: list[list[Example]] = []
    step, epoch, window_loss, window_count = 0, 0, 0.0, 0
    model.train()
    progress = 0.0
    while progress < 1.0:
        if not batches:
            batches = make_batches(train_examples, cfg.batch_tokens, rng)
            epoch += 1
        ids, mask, labels = collate(batches.pop(), pad_id)
        targets = int((labels[:, 1:] != -100).sum())
        progress = schedule_progress(step, time.perf_counter() - t_train, cfg)
        lr = lr_at(step, progress, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss_sum = causal_lm_loss(model, ids, mask, labels)
        (loss_sum / max(targets, 1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        report.tokens_seen += int(mask.sum())
        report.target_tokens_seen += targets
        window_loss += float(loss_sum.detach())
        window_count += targets
        if step % 25 == 0:
            avg = window_loss / max(window_count, 1)
            report.train_loss_curve.append((step, round(avg, 4)))
            elapsed = time.perf_counter() - t_train
            logger.info(
                "step %d/%d epoch %d loss %.3f lr %.2e tokens %d (%.0f tok/s) %.1f min",
                step, cfg.max_steps, epoch, avg, lr, report.tokens_seen,
                report.tokens_seen / elapsed, elapsed / 60,
            )
            window_loss, window_count = 0.0, 0
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.max_steps:
            nll, _ = evaluate(model, heldout_examples, pad_id, cfg.bf16)
            report.heldout_curve.append((step, round(math.exp(nll), 3)))
            logger.info("step %d held-out perplexity %.2f", step, math.exp(nll))
        progress = schedule_progress(step, time.perf_counter() - t_train, cfg)
    report.stopped_by = "steps" if step >= cfg.max_steps else "time"
    if report.stopped_by == "time":
        logger.warning("time budget of %.1f min ended training at step %d", cfg.max_minutes, step)
    report.steps = step
    report.epochs = round(report.tokens_seen / epoch_tokens, 3)
    report.timings_s["train"] = time.perf_counter() - t_train

    # --- held-out perplexity (fp32, the precision the export runs in)
    t0 = time.perf_counter()
    model.eval()
    total_nll, total_count = 0.0, 0
    for src, exs in heldout_by_source.items():
        nll, count = evaluate(model, exs, pad_id, bf16=False)
        report.heldout[src] = {"perplexity": round(math.exp(nll), 3), "target_tokens": count}
        total_nll, total_count = total_nll + nll * count, total_count + count
    report.heldout["all"] = {
        "perplexity": round(math.exp(total_nll / max(total_count, 1)), 3),
        "target_tokens": total_count,
    }
    report.heldout_curve.append((step, report.heldout["all"]["perplexity"]))
    report.timings_s["eval"] = time.perf_counter() - t0
    logger.info("held-out: %s", report.heldout)

    # --- save + export
    t0 = time.perf_counter()
    set_generation_defaults(model, tokenizer)
    hf_tokenizer = tok.as_transformers(tokenizer, cfg.context)
    model.save_pretrained(checkpoint_dir)
    hf_tokenizer.save_pretrained(checkpoint_dir)
    export(model, hf_tokenizer, tokenizer, out_dir, cfg.context, checkpoint_dir)
    report.timings_s["export"] = time.perf_counter() - t0
    report.files_bytes = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()}

    # --- the artifact itself, through onnxruntime only: the sample conversations for MODEL.md
    from training.onnx_chat import sample_conversations

    t0 = time.perf_counter()
    report.samples = sample_conversations(out_dir, seed=cfg.seed)
    report.timings_s["samples"] = time.perf_counter() - t0
    report.timings_s["total"] = time.perf_counter() - t_start
    report.machine["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    write_report(report, out_dir)
    return report


def export(model: Any, hf_tokenizer: Any, tokenizer: Tokenizer, out_dir: Path, context: int,
           checkpoint_dir: Path) -> None:
    """The Optimum-layout export (checked against PyTorch), then the fused graph the project ships (checked
    against that export), via ``training.export_onnx``; our own tokenizer files on top.

    Our ``save_tokenizer`` writes exactly the files we test (``tokenizer_config.json`` with the chat template
    and ``add_bos_token: false``), whatever the installed transformers version's ``save_pretrained`` emits.
    The Optimum export is kept in ``checkpoint_dir/optimum`` (not shipped): the engine serves it too.
    """
    from training.export_onnx import export_decoder, export_fused
    from training.onnx_tied import share_tied_embedding
    from training.tokenizer import save_tokenizer

    optimum = checkpoint_dir / "optimum"
    export_decoder(model, optimum, tokenizer=hf_tokenizer)
    share_tied_embedding(optimum / "model.onnx")
    save_tokenizer(tokenizer, optimum, context)
    export_fused(checkpoint_dir, out_dir, optimum)


def write_report(report: Report, out_dir: Path) -> Path:
    path = out_dir / "training_report.json"
    path.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description="Train and export the clawdbot tiny chat model.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="ONNX model folder to write")
    parser.add_argument("--checkpoint", type=Path, default=CACHE_DIR / "checkpoint",
                        help="where the transformers checkpoint is saved (not committed)")
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    report = train(cfg, args.out, args.checkpoint)
    print(json.dumps({"heldout": report.heldout, "timings_s": report.timings_s, "steps": report.steps}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
