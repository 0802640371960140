"""Which stored history goes into the model's context.

The engine never truncates; this module decides what to keep so a session can run forever on a fixed window:
the system prompt and the new messages always stay, and as much of the newest history as fits, dropped from the
oldest end and never starting on an orphaned assistant reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clawdbot.inference.exceptions import ContextLengthExceededError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from clawdbot.inference.types import ChatMessage


def fit_context(system: Sequence[ChatMessage], history: Sequence[ChatMessage], new: Sequence[ChatMessage],
                budget: int, count_tokens: Callable[[Sequence[ChatMessage]], int]) -> tuple[list[ChatMessage], int]:
    """Return ``(messages, prompt_tokens)``: ``system + tail(history) + new`` with the longest tail that fits.

    ``budget`` is the number of prompt tokens allowed (context length minus the completion reserve). A binary
    search over the tail length keeps this at O(log n) prompt renders instead of one per dropped entry.
    Raises ``ContextLengthExceededError`` when even ``system + new`` alone does not fit.
    """
    starts = [i for i, m in enumerate(history) if m.role != "assistant"]  # tails start on a user turn

    def build(start: int | None) -> list[ChatMessage]:
        tail = [] if start is None else list(history[start:])
        return [*system, *tail, *new]

    minimal = build(None)
    minimal_tokens = count_tokens(minimal)
    if minimal_tokens > budget:
        raise ContextLengthExceededError(
            f"This model's maximum context leaves {budget} tokens for the prompt, but the system prompt and the "
            f"new messages alone take {minimal_tokens} tokens. Shorten the messages or lower max_tokens.",
            param="messages",
        )
    best, best_tokens = minimal, minimal_tokens
    lo, hi = 0, len(starts) - 1  # candidate start indexes; smaller index = longer tail
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = build(starts[mid])
        tokens = count_tokens(candidate)
        if tokens <= budget:
            best, best_tokens = candidate, tokens
            hi = mid - 1
        else:
            lo = mid + 1
    return best, best_tokens
