"""``TokenTexts``: each token's own bytes, for OpenAI's ``logprobs`` (a token may hold part of a character)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from clawdbot.config.settings import DEFAULT_MODEL_DIR
from clawdbot.inference.onnx.token_text import TokenTexts

TEXTS = ["Hello there!", "café crème brûlée", "日本語のテキスト", "emoji 🙂🚀 and tabs\tand\nnewlines"]


def byte_fallback_tokenizer() -> Tokenizer:
    """SentencePiece's scheme: a few whole pieces, and ``<0xNN>`` tokens for every byte nothing else covers."""
    vocab = {f"<0x{b:02X}>": b for b in range(256)}
    for piece in ("▁", "a", "e", "l", "o", "t", "▁the", "é"):
        vocab[piece] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer


@pytest.mark.parametrize("kind", ["byte-level (the shipped model)", "byte fallback"])
@pytest.mark.parametrize("text", TEXTS)
def test_the_tokens_bytes_make_the_decoded_text(kind: str, text: str) -> None:
    tokenizer = (Tokenizer.from_file(str(DEFAULT_MODEL_DIR / "tokenizer.json")) if kind.startswith("byte-level")
                 else byte_fallback_tokenizer())
    texts = TokenTexts(tokenizer)
    ids = tokenizer.encode(text).ids
    joined = b"".join(bytes(texts.of(token)[1]) for token in ids)
    assert joined.decode() == tokenizer.decode(ids)
    # a token that is part of a character shows its bytes as escapes, never a replacement character
    for token in ids:
        shown, raw = texts.of(token)
        assert "\ufffd" not in shown
        assert shown == bytes(raw).decode("utf-8", errors="backslashreplace")
    if any(ord(char) > 127 for char in text):
        assert any("\\x" in texts.of(token)[0] for token in ids)
