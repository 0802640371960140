"""Tiny random-init models built with transformers + torch and exported with ``training.export_onnx``.

They differ on purpose in every way the engine must not assume: architecture (Llama with grouped-query
attention and ``position_ids``; GPT-2 with multi-head attention, learned positions and no ``position_ids``
input), head counts, head size, precision (fp32 / fp16), weights inline or in external data, and the KV-cache
convention (Optimum's concatenating graph vs onnxruntime-genai's fused in-place GroupQueryAttention).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

#: ChatML with a BOS, an explicit role check and Jinja whitespace control: exercises trim_blocks/lstrip_blocks,
#: raise_exception and special-token variables the way transformers renders them.
CHAT_TEMPLATE = """{{ bos_token }}
{% for message in messages %}
    {% if message['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('unknown role: ' + message['role']) }}
    {% endif %}
<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""

CORPUS = [
    "Hello! How are you today? I am fine, thank you.",
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus München: schöne Straße, Käse und Brötchen.",
    "日本語のテキストも大丈夫です。東京は大きい都市です。",
    "Emoji work too 🎉🚀 and accents: café, naïve, résumé.",
    "Привет, как дела? Всё хорошо.",
    "user\n", "assistant\n", "system\n",
]


def build_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Byte-level BPE (lossless for any UTF-8) with ChatML special tokens and the chat template above."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_llama(out: Path, tokenizer: PreTrainedTokenizerFast, *, hf_dir: Path | None = None) -> Path:
    """Llama, 4 query / 2 KV heads of 16, fp32, weights in external data; optionally also saved for HF."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.export_onnx import export_decoder

    torch.manual_seed(0)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=192,
                         bos_token_id=0, eos_token_id=eos, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    if hf_dir is not None:
        model.save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
    return export_decoder(model, out, tokenizer=tokenizer, external_data=True)


def build_gpt2_fp16(out: Path, tokenizer: PreTrainedTokenizerFast) -> Path:
    """GPT-2, 3 heads of 12, 3 layers, fp16 weights/cache/logits, no ``position_ids`` input."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from training.export_onnx import export_decoder

    torch.manual_seed(1)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=36, n_layer=3, n_head=3, n_positions=160,
                        bos_token_id=0, eos_token_id=eos)
    model = GPT2LMHeadModel(config).eval()
    return export_decoder(model, out, tokenizer=tokenizer, fp16=True, with_position_ids=False)
