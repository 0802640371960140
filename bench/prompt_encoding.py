"""Prompt encoding per turn as a conversation's history grows: the whole rendered prompt through the tokenizer
(what every turn did before ``clawdbot.inference.prompt_pieces``) vs. joined from cached pieces (what it does now),
with the shipped model's tokenizer and chat template, side by side in one process.

A conversation of ``n`` turns (a user message and a reply each, varied text) is asked ``--samples`` new questions,
each the next turn after those ``n``: its prompt (the whole history, the system prompt first, as a model with a
context that holds it all would get it, and the new question) is rendered once and encoded both ways, alternating
which goes first; the piece cache is warm from the conversation's earlier turns, as it is on a server, so only the
new question is new to it. Both ways give the
same ids (checked on every sample). Rendering the template is timed too: it is the part that still grows with the
history (and splitting the text at the added tokens, inside the pieces figure).

The shipped model's context (512 tokens) holds only a few turns, so the server itself never encodes a history
this long; a model with a long context (a user's own) does, on every turn, in the local server and in the
SageMaker container, even when the prefix cache spares it the history's prefill.

    python -m bench.prompt_encoding [--samples 40]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "prompt_encoding.json"
SIZES = (10, 100, 1000)
SYSTEM = "You are Clawdbot, a friendly and concise assistant."
_WORDS = ("bread", "mountain", "river", "quiet", "assistant", "tomorrow", "seventeen", "blue", "recipe", "garden",
          "winter", "why", "because", "perhaps", "train", "coffee", "ÉTÉ", "naïve", "😀", "42")


def _message(turn: int, role: str) -> str:
    """Varied text (30 words), different for every turn and role, deterministic."""
    words = [_WORDS[(turn * 7 + i * (3 if role == "user" else 5)) % len(_WORDS)] for i in range(30)]
    return f"{role} turn {turn}: " + " ".join(words) + ("?" if role == "user" else ".")


def _history(turns: int) -> list[Any]:
    from clawdbot.inference.types import ChatMessage

    messages = [ChatMessage("system", SYSTEM)]
    for turn in range(turns):
        messages += [ChatMessage("user", _message(turn, "user")), ChatMessage("assistant", _message(turn, "assistant"))]
    return messages


def measure(turns: int, samples: int) -> dict[str, float]:
    """Median milliseconds per turn at a history of ``turns`` turns: render, whole encode, encode from pieces."""
    from clawdbot.config.settings import DEFAULT_MODEL_DIR
    from clawdbot.inference.tokenizer_bundle import TokenizerBundle
    from clawdbot.inference.types import ChatMessage

    bundle = TokenizerBundle(Path(DEFAULT_MODEL_DIR))
    if not bundle.pieces.exact_pieces:
        raise RuntimeError("the shipped tokenizer is encoded whole: nothing to compare")
    tokenizer, pieces = bundle.tokenizer, bundle.pieces
    messages = _history(turns)
    bundle.encode_prompt(messages)  # the earlier turns' pieces are in the cache, as on a server
    render_s: list[float] = []
    whole_s: list[float] = []
    pieces_s: list[float] = []
    tokens = 0
    for sample in range(samples):
        started = time.perf_counter()
        text = bundle._render([*messages, ChatMessage("user", _message(turns + sample, "user"))])
        render_s.append(time.perf_counter() - started)
        order = ("whole", "pieces") if sample % 2 else ("pieces", "whole")
        got: dict[str, list[int]] = {}
        for way in order:
            started = time.perf_counter()
            if way == "whole":
                got[way] = tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids
                whole_s.append(time.perf_counter() - started)
            else:
                got[way] = pieces.encode(text)
                pieces_s.append(time.perf_counter() - started)
        if got["whole"] != got["pieces"]:
            raise RuntimeError(f"pieces and whole text differ at {turns} turns, sample {sample}")
        tokens = len(got["whole"])

    def ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 4)

    return {"prompt_tokens": tokens, "render_ms": ms(render_s), "whole_ms": ms(whole_s), "pieces_ms": ms(pieces_s),
            "whole_over_pieces": round(statistics.median(whole_s) / statistics.median(pieces_s), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prompt_encoding", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=40, help="new turns timed at each history size")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {"python_version": platform.python_version(), "machine": platform.machine(),
                               "prompt_encoding_samples": args.samples}
    for turns in SIZES:
        for name, value in measure(turns, args.samples).items():
            results[f"prompt_encoding_h{turns}_{name}"] = value
        print(f"{turns:5d} turns ({results[f'prompt_encoding_h{turns}_prompt_tokens']} tokens): render "
              f"{results[f'prompt_encoding_h{turns}_render_ms']} ms, encode whole "
              f"{results[f'prompt_encoding_h{turns}_whole_ms']} ms, from pieces "
              f"{results[f'prompt_encoding_h{turns}_pieces_ms']} ms", flush=True)
    first, last = SIZES[0], SIZES[-1]
    for way in ("whole", "pieces"):
        results[f"prompt_encoding_{way}_ratio_{last}_vs_{first}"] = round(
            results[f"prompt_encoding_h{last}_{way}_ms"] / results[f"prompt_encoding_h{first}_{way}_ms"], 1)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
