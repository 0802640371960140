"""Counting a rendered prompt's tokens from cached counts of its pieces.

Fitting history into the context counts 2-4 whole prompts per turn (``clawdbot.sessions.context``), and from one
turn to the next those prompts repeat almost all of their text: the same stored messages, one turn longer. A
Hugging Face tokenizer first cuts the text at its added tokens (``<|im_start|>``, ``<|im_end|>``, ...) and then
normalizes, pre-tokenizes and encodes each piece between them on its own, so a prompt's token count is exactly
the sum of its pieces' counts, one per added token. :class:`PromptTokenCounter` counts each distinct piece once
(an LRU cache) and adds: a turn then encodes only its new text, not the whole window again (``bench.overhead``).

The sum is exact only under that cut; an added token that strips the whitespace around it, matches single words
only, or is matched after normalization changes the pieces, so with any such token the counter encodes the
whole text instead (``exact_pieces`` is False).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

#: Distinct pieces kept (a message's content is one piece; a few thousand cover many active sessions).
CACHE_SIZE = 8192


class PromptTokenCounter:
    """``count(text)`` == ``len(tokenizer.encode(text, add_special_tokens=False).ids)``; thread-safe."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        added = list(tokenizer.get_added_tokens_decoder().values())
        has_normalizer = tokenizer.normalizer is not None
        self.exact_pieces = bool(added) and all(
            not (t.lstrip or t.rstrip or t.single_word or (t.normalized and has_normalizer)) for t in added)
        # Longest first, so a token that contains another is matched whole (as the tokenizer matches them).
        contents = sorted({t.content for t in added}, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(c) for c in contents) + ")").split if contents else None
        self._added = frozenset(contents)
        self._piece = lru_cache(maxsize=CACHE_SIZE)(self._encode_len)
        logger.debug("prompt token counter: %s", "cached pieces" if self.exact_pieces else "whole texts")

    def _encode_len(self, text: str) -> int:
        # encode_batch_fast skips the character offsets encode() computes and nobody reads here.
        return len(self.tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids)

    def count(self, text: str) -> int:
        if not self.exact_pieces or self._split is None:
            return self._encode_len(text)
        added = self._added
        piece = self._piece
        return sum(1 if part in added else piece(part) for part in self._split(text) if part)


__all__ = ["PromptTokenCounter"]
