"""A rendered prompt's token ids and token count, from cached encodings of its pieces.

A turn's prompt is the previous turn's plus the new messages: the same stored history, one turn longer. Fitting
the history into the context counts 2-4 whole prompts per turn (``clawdbot.sessions.context``), and the model
then encodes the chosen one. Encoding the whole text each time costs in proportion to the history (3.8 ms for a
5,600-token prompt of the shipped tokenizer here), on every turn, even when the prefix cache spares the model the
history's prefill. A Hugging Face tokenizer first cuts the text at its added tokens (``<|im_start|>``,
``<|im_end|>``, ...) and then normalizes, pre-tokenizes and encodes each piece between them on its own, so a
prompt's ids are exactly its pieces' ids in order, with each added token's id between them. :class:`PromptPieces`
encodes each distinct piece once (a cache bounded in tokens, oldest out first) and joins: a turn encodes only its
new text. A hit is one dictionary read, no lock: a prompt is hundreds of pieces, counted several times per turn.

That holds only under that cut. Added tokens that strip the whitespace around them, match single words only, or
are matched after normalization change the pieces; a pre-tokenizer that treats the start of the text apart
(``Metaspace`` with ``prepend_scheme="first"``, as in Llama and Mistral tokenizers) encodes a piece differently
after an added token than alone. With such a tokenizer (found by its added tokens' flags and by encoding a probe
both ways at construction) every text is encoded whole.
"""

from __future__ import annotations

import logging
import re
import threading
from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

#: Tokens of distinct pieces kept (4 bytes each, plus the pieces' text): a message's content is one piece, so
#: this covers the recent history of many active conversations.
CACHE_TOKENS = 1 << 20
#: Text placed between the added tokens to check that a piece encodes the same after one as alone.
_PROBE_TEXTS = ("Hello world", " leading space", "\nnew line\n", "x", "é 😀 naïve", "  two  spaces ", "1234")


class PromptPieces:
    """``encode(text)`` == ``tokenizer.encode(text, add_special_tokens=False).ids`` and ``count(text)`` its
    length, from cached pieces where that is exact; thread-safe."""

    def __init__(self, tokenizer: Tokenizer, cache_tokens: int = CACHE_TOKENS) -> None:
        self.tokenizer = tokenizer
        self.cache_tokens = cache_tokens
        added = tokenizer.get_added_tokens_decoder()
        # Longest first, so a token that contains another is matched whole (as the tokenizer matches them).
        contents = sorted({t.content for t in added.values()}, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(c) for c in contents) + ")").split if contents else None
        self._added_ids = {token.content: token_id for token_id, token in added.items()}
        self._pieces: dict[str, array[int]] = {}  # in insertion order: the oldest goes out first
        self._cached = 0
        self._lock = threading.Lock()
        has_normalizer = tokenizer.normalizer is not None
        self.exact_pieces = (
            bool(contents)
            and all(not (t.lstrip or t.rstrip or t.single_word or (t.normalized and has_normalizer))
                    for t in added.values())
            and self._probe_agrees(contents)
        )
        logger.debug("prompt pieces: %s", "cached" if self.exact_pieces else "whole texts")

    def encode(self, text: str) -> list[int]:
        if not self.exact_pieces or self._split is None:
            return self._whole(text)
        return self._joined(text, self._piece)

    def count(self, text: str) -> int:
        if not self.exact_pieces or self._split is None:
            return len(self._whole(text))
        added, cached = self._added_ids, self._pieces.get
        total = 0
        for part in self._split(text):
            if part in added:
                total += 1
            elif part:
                ids = cached(part)
                total += len(ids if ids is not None else self._piece(part))
        return total

    def _whole(self, text: str) -> list[int]:
        # encode_batch_fast skips the character offsets encode() computes and nobody reads here.
        return self.tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids  # type: ignore[no-any-return]

    def _piece(self, text: str) -> array[int]:
        """``text``'s ids (text without added tokens), from the cache or encoded and kept."""
        ids = self._pieces.get(text)
        if ids is not None:
            return ids
        ids = array("i", self._whole(text))  # outside the lock: encoding is the slow part, and thread-safe
        if len(ids) > self.cache_tokens:
            return ids
        pieces = self._pieces
        with self._lock:  # writers only: a reader sees a piece whole or not at all
            if text not in pieces:
                pieces[text] = ids
                self._cached += _weight(ids)
                while self._cached > self.cache_tokens:
                    self._cached -= _weight(pieces.pop(next(iter(pieces))))
        return ids

    def _probe_agrees(self, contents: list[str]) -> bool:
        """Whether a text with every added token, between pieces of several kinds, encodes the same whole as
        joined from its pieces encoded alone (one probe: it runs at every cold start)."""
        probe = "".join(_PROBE_TEXTS[i % len(_PROBE_TEXTS)] + token for i, token in enumerate(contents))
        probe += _PROBE_TEXTS[len(contents) % len(_PROBE_TEXTS)]
        if self._joined(probe, self._whole) == self._whole(probe):
            return True
        logger.info("the tokenizer encodes a piece after an added token differently: prompts are encoded whole")
        return False

    def _joined(self, text: str, piece: Callable[[str], Iterable[int]]) -> list[int]:
        """``text``'s ids, each piece's from ``piece`` and each added token's own id between them."""
        assert self._split is not None
        added = self._added_ids
        ids: list[int] = []
        for part in self._split(text):
            if part in added:
                ids.append(added[part])
            elif part:
                ids.extend(piece(part))
        return ids


def _weight(ids: array[int]) -> int:
    """A piece's share of the budget: its tokens, and at least one, so pieces that encode to nothing (text a
    normalizer removes) cannot pile up unbounded."""
    return len(ids) or 1


__all__ = ["CACHE_TOKENS", "PromptPieces"]
