"""A minimal chat loop over an exported model folder, with nothing but onnxruntime, tokenizers and jinja2.

Why not the service's engine: this checks the *artifact* (graph, tokenizer files, chat template,
``eos_token``) independently of serving code, right after export, and produces the sample conversations
quoted in MODEL.md. It renders the template the way transformers does (sandboxed Jinja, ``trim_blocks``).

    python -m training.onnx_chat models/clawdbot-tiny-chat "Hi! How are you?"
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from training.data import Message

logger = logging.getLogger(__name__)

#: Prompts for MODEL.md and the report: greetings, small talk, a question, a system prompt, two turns.
SAMPLE_CONVERSATIONS: tuple[tuple[Message, ...], ...] = (
    ({"role": "user", "content": "Hi! How are you?"},),
    ({"role": "user", "content": "What do you like to do on weekends?"},),
    ({"role": "user", "content": "Do you have any pets?"},),
    ({"role": "user", "content": "What is AI?"},),
    ({"role": "user", "content": "What is the capital of France?"},),
    (
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Can you recommend a good movie?"},
    ),
    (
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi, how are you?"},
        {"role": "user", "content": "I'm good, I just got back from a run."},
    ),
)


class OnnxChat:
    """Loads ``model.onnx`` + tokenizer files from ``model_dir`` and generates replies."""

    def __init__(self, model_dir: str | Path) -> None:
        import onnxruntime as ort
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tok_config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        self.special = {k: tok_config.get(k) for k in ("bos_token", "eos_token", "pad_token")}
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self.template = env.from_string(tok_config["chat_template"])
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self.context = int(config["max_position_embeddings"])
        # From config.json: a fused graph's cache inputs have symbolic head sizes.
        self.kv_heads = int(config.get("num_key_value_heads") or config["num_attention_heads"])
        self.head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
        self.eos_id = self.tokenizer.token_to_id(tok_config["eos_token"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.past = [i for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]

    def render(self, messages: Sequence[Message]) -> str:
        return self.template.render(messages=list(messages), add_generation_prompt=True, **self.special)

    def generate_ids(
        self,
        messages: Sequence[Message],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
    ) -> tuple[list[int], str]:
        """(new token ids, finish reason: "stop" at ``eos_token``, else "length"). Greedy at temperature 0."""
        import numpy as np

        rng = np.random.default_rng(seed)
        prompt = self.tokenizer.encode(self.render(messages), add_special_tokens=False).ids
        feeds: dict[str, Any] = {p.name: np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=np.float32)
                                  for p in self.past}
        ids, generated = list(prompt), []
        step_ids = prompt
        while len(generated) < max_new_tokens and len(ids) < self.context:
            start = len(ids) - len(step_ids)
            feeds["input_ids"] = np.array([step_ids], dtype=np.int64)
            feeds["attention_mask"] = np.ones((1, len(ids)), dtype=np.int64)
            if "position_ids" in self.input_names:
                feeds["position_ids"] = np.arange(start, len(ids), dtype=np.int64)[None, :]
            outputs = self.session.run(None, feeds)
            logits = outputs[0][0, -1].astype(np.float64)
            for i, p in enumerate(self.past):
                feeds[p.name] = outputs[1 + i]
            token = _pick(logits, ids, temperature, top_p, repetition_penalty, rng)
            if token == self.eos_id:
                return generated, "stop"
            generated.append(token)
            ids.append(token)
            step_ids = [token]
        return generated, "length"

    def reply(self, messages: Sequence[Message], **kwargs: Any) -> tuple[str, str]:
        """(reply text, finish reason)."""
        ids, finish = self.generate_ids(messages, **kwargs)
        return self.tokenizer.decode(ids, skip_special_tokens=True), finish


def _pick(logits: Any, context: list[int], temperature: float, top_p: float, penalty: float, rng: Any) -> int:
    import numpy as np

    if penalty != 1.0:
        seen = np.unique(np.array(context))
        logits[seen] = np.where(logits[seen] > 0, logits[seen] / penalty, logits[seen] * penalty)
    if temperature <= 0:
        return int(np.argmax(logits))
    probs = np.exp((logits - logits.max()) / temperature)
    probs /= probs.sum()
    order = np.argsort(-probs)
    keep = order[: int(np.searchsorted(np.cumsum(probs[order]), top_p) + 1)]
    return int(rng.choice(keep, p=probs[keep] / probs[keep].sum()))


def sample_conversations(model_dir: str | Path, *, seed: int = 0) -> list[dict[str, Any]]:
    """Replies to :data:`SAMPLE_CONVERSATIONS`: greedy, and sampled with ``generation_config.json``."""
    chat = OnnxChat(model_dir)
    gen = json.loads((Path(model_dir) / "generation_config.json").read_text(encoding="utf-8"))
    sampling = {
        "temperature": gen.get("temperature", 1.0),
        "top_p": gen.get("top_p", 1.0),
        "repetition_penalty": gen.get("repetition_penalty", 1.0),
    }
    samples = []
    for i, messages in enumerate(SAMPLE_CONVERSATIONS):
        greedy, greedy_finish = chat.reply(messages)
        sampled, sampled_finish = chat.reply(messages, seed=seed + i, **sampling)
        samples.append({
            "messages": list(messages),
            "greedy": greedy,
            "greedy_finish": greedy_finish,
            "sampled": sampled,
            "sampled_finish": sampled_finish,
            "sampling": sampling,
        })
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chat with an exported ONNX model folder (no server).")
    parser.add_argument("model_dir")
    parser.add_argument("message", nargs="*", help="user turns; the model answers after each")
    parser.add_argument("--system", default=None)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--samples", action="store_true", help="print the MODEL.md sample conversations")
    args = parser.parse_args(argv)
    if args.samples:
        print(json.dumps(sample_conversations(args.model_dir), indent=2, ensure_ascii=False))
        return 0
    chat = OnnxChat(args.model_dir)
    messages: list[Message] = [{"role": "system", "content": args.system}] if args.system else []
    for text in args.message:
        messages.append({"role": "user", "content": text})
        reply, finish = chat.reply(messages, temperature=args.temperature, top_p=0.9)
        print(f"user: {text}\nassistant: {reply}  [{finish}]")
        messages.append({"role": "assistant", "content": reply})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
