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

#: Probes placed by the estimate before plain bisection takes over (bounds the worst case at O(log n) more).
GUIDED_PROBES = 4


def fit_context(system: Sequence[ChatMessage], history: Sequence[ChatMessage], new: Sequence[ChatMessage],
                budget: int, count_tokens: Callable[[Sequence[ChatMessage]], int]) -> tuple[list[ChatMessage], int]:
    """Return ``(messages, prompt_tokens)``: ``system + tail(history) + new`` with the longest tail that fits.

    ``budget`` is the number of prompt tokens allowed (context length minus the completion reserve). Every
    decision rests on exact counts of whole rendered prompts (templates are not additive), but which tails get
    counted is guided by an estimate: characters per token, calibrated on the counts already made. A counted
    prompt costs time in proportion to its length, and the window usually holds far more history than fits, so
    probing near the answer (typically 2-3 prompts of about the budget's size) beats a plain bisection, whose
    first probes render half the window or more; bisection takes over if the estimate keeps missing.
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
    # Candidates are positions in ``starts``: a smaller position is a longer tail. The answer lies in [lo, hi];
    # hi == len(starts) stands for "no history" (the minimal prompt, known to fit).
    lo, hi = 0, len(starts)
    chars_after = [0] * (len(history) + 1)  # characters of history[i:]
    for i in range(len(history) - 1, -1, -1):
        chars_after[i] = chars_after[i + 1] + len(history[i].content) + len(history[i].role)
    minimal_chars = sum(len(m.content) + len(m.role) for m in minimal)
    chars_per_token = max(1.0, minimal_chars / max(1, minimal_tokens))
    room = budget - minimal_tokens
    guided = 0
    while lo < hi:
        if guided < GUIDED_PROBES:
            guided += 1
            # The longest tail whose estimate fits, kept inside the interval still open.
            fits_chars = room * chars_per_token
            guess = next((p for p in range(lo, hi) if chars_after[starts[p]] <= fits_chars), hi - 1)
        else:
            guess = (lo + hi - 1) // 2
        candidate = build(starts[guess])
        tokens = count_tokens(candidate)
        if tokens <= budget:
            best, best_tokens = candidate, tokens
            hi = guess
        else:
            lo = guess + 1
        history_tokens = tokens - minimal_tokens
        if history_tokens > 0:
            chars_per_token = max(1.0, chars_after[starts[guess]] / history_tokens)
    return best, best_tokens
