"""A token's own bytes and text, for OpenAI's ``logprobs`` (``token``, ``bytes``).

A token of a byte-level BPE vocabulary (GPT-2's scheme, the shipped model's) may hold part of a UTF-8 character, so
its text alone is not always valid: OpenAI reports each token's ``bytes`` so that a client can join them, and a
text that shows the bytes it cannot decode. Decoding a token on its own through the tokenizer would turn such a
part into U+FFFD and lose the bytes, so they are read from the vocabulary: byte-level symbols map back to bytes
one for one, SentencePiece's byte-fallback tokens (``<0x0A>``) are a byte, and other tokens are their decoded text.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from clawdbot.inference.logprobs import TokenLogprob, TopLogprob

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tokenizers import Tokenizer

    from clawdbot.inference.onnx.sampling import LogprobRecord


@lru_cache(maxsize=1)
def _byte_level_table() -> dict[str, int]:
    """GPT-2's byte-level alphabet, symbol -> byte: printable bytes stand for themselves, the others for 256+n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class TokenTexts:
    """Bytes and text of a tokenizer's tokens, each worked out once."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        decoder = getattr(tokenizer, "decoder", None)
        self._byte_level = type(decoder).__name__ == "ByteLevel"
        self._cache: dict[int, tuple[str, tuple[int, ...]]] = {}

    def of(self, token_id: int) -> tuple[str, tuple[int, ...]]:
        """``(text, bytes)`` of one token; the text shows bytes that are not whole UTF-8 as ``\\xNN`` escapes."""
        known = self._cache.get(token_id)
        if known is None:
            raw = self._bytes(token_id)
            known = self._cache[token_id] = (raw.decode("utf-8", errors="backslashreplace"), tuple(raw))
        return known

    def _bytes(self, token_id: int) -> bytes:
        symbol = self._tokenizer.id_to_token(token_id)
        if symbol is None:
            return b""
        if self._byte_level:
            table = _byte_level_table()
            if all(char in table for char in symbol):
                return bytes(table[char] for char in symbol)
        elif len(symbol) == 6 and symbol.startswith("<0x") and symbol.endswith(">"):
            try:
                return bytes([int(symbol[3:5], 16)])
            except ValueError:
                pass
        return self._tokenizer.decode([token_id], skip_special_tokens=False).encode()

    def logprobs(self, records: Iterable[LogprobRecord]) -> tuple[TokenLogprob, ...]:
        """The sampler's records (``Sampler.records``) as OpenAI's ``logprobs.content`` items."""
        entries = []
        for token, logprob, top in records:
            text, raw = self.of(token)
            alternatives = []
            for alternative, alternative_logprob in top:
                alternative_text, alternative_raw = self.of(alternative)
                alternatives.append(TopLogprob(alternative_text, alternative_logprob, alternative_raw))
            entries.append(TokenLogprob(text, logprob, raw, tuple(alternatives)))
        return tuple(entries)
