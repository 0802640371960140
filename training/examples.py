"""Turn conversations into token sequences with a loss mask, cut to the model's context.

Each message is encoded as a block ``<|im_start|>{role}\\n{content}<|im_end|>\\n``. Only an assistant's
``{content}<|im_end|>`` carries loss: the model should learn to answer and to stop, not to imitate users or
system prompts. Encoding block by block (rather than the whole string, then locating spans) keeps the mask
exact; the tests check it yields the same ids as encoding the rendered string in one go.

A conversation longer than the context is cut into segments of whole user→assistant exchanges; a segment
repeats the conversation's system message, if any, so every example looks like a real request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from training.tokenizer import IM_END, IM_START

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tokenizers import Tokenizer

    from training.data import Conversation, Message

#: Label value ignored by the loss (PyTorch's ``cross_entropy`` default).
IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: tuple[int, ...]
    #: Same length as ``input_ids``: ``input_ids[i]`` where token ``i`` is a target, else ``IGNORE``
    #: (the transformers convention: the loss shifts, predicting token ``i`` from position ``i - 1``).
    labels: tuple[int, ...]


class BlockEncoder:
    """Encodes chat blocks with one tokenizer; caches the fixed pieces."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.im_start = tokenizer.token_to_id(IM_START)
        self.im_end = tokenizer.token_to_id(IM_END)
        self.newline = self._encode("\n")
        self.headers = {role: self._encode(f"{role}\n") for role in ("system", "user", "assistant")}

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def block(self, message: Message) -> tuple[list[int], list[int]]:
        """(ids, labels) for one message block."""
        content = self._encode(message["content"])
        prefix = [self.im_start, *self.headers[message["role"]]]
        ids = [*prefix, *content, self.im_end, *self.newline]
        if message["role"] == "assistant":
            labels = [IGNORE] * len(prefix) + content + [self.im_end] + [IGNORE] * len(self.newline)
        else:
            labels = [IGNORE] * len(ids)
        return ids, labels


def conversation_examples(conv: Conversation, encoder: BlockEncoder, max_len: int) -> list[Example]:
    """Segments of ``conv`` that fit ``max_len`` tokens, each starting at a user turn, ending at an answer.

    An exchange that alone does not fit (rare: a very long monologue) is dropped, as is a trailing user
    turn with no answer.
    """
    messages = list(conv.messages)
    system: tuple[list[int], list[int]] | None = None
    if messages and messages[0]["role"] == "system":
        system = encoder.block(messages.pop(0))
    exchanges: list[tuple[list[int], list[int]]] = []
    for i in range(0, len(messages) - 1, 2):
        user_ids, user_labels = encoder.block(messages[i])
        bot_ids, bot_labels = encoder.block(messages[i + 1])
        exchanges.append((user_ids + bot_ids, user_labels + bot_labels))

    examples: list[Example] = []
    base_ids, base_labels = system if system else ([], [])
    ids, labels = list(base_ids), list(base_labels)

    def flush() -> None:
        if len(ids) > len(base_ids):
            examples.append(Example(tuple(ids), tuple(labels)))

    for ex_ids, ex_labels in exchanges:
        if len(base_ids) + len(ex_ids) > max_len:
            continue
        if len(ids) + len(ex_ids) > max_len:
            flush()
            ids, labels = list(base_ids), list(base_labels)
        ids.extend(ex_ids)
        labels.extend(ex_labels)
    flush()
    return examples


def build_examples(conversations: Iterable[Conversation], tokenizer: Tokenizer, max_len: int) -> list[Example]:
    """All segments of all ``conversations``, in order."""
    encoder = BlockEncoder(tokenizer)
    return [ex for conv in conversations for ex in conversation_examples(conv, encoder, max_len)]
