"""``fit_context`` picks its probes by estimate (a performance fix measured by ``bench.overhead``); whatever it
probes, the answer must be the one an exhaustive search gives: the longest history tail that fits, starting on a
user message, with the exact token count of the whole prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clawdbot.inference.exceptions import ContextLengthExceededError
from clawdbot.inference.types import ChatMessage
from clawdbot.sessions.context import fit_context

if TYPE_CHECKING:
    from collections.abc import Sequence

    from clawdbot.inference.tokenizer_bundle import TokenizerBundle

WORDS = ["pack", "boots", "a", "jacket", "mountain", "weather", "🙂", "über", "snacks!", "water,", "map", "1234"]


def exhaustive(system: list[ChatMessage], history: list[ChatMessage], new: list[ChatMessage], budget: int,
               count: object) -> tuple[list[ChatMessage], int]:
    """The reference: try every tail from the longest down, keep the first that fits."""
    for start in [i for i, m in enumerate(history) if m.role != "assistant"]:
        candidate = [*system, *history[start:], *new]
        tokens = count(candidate)  # type: ignore[operator]
        if tokens <= budget:
            return candidate, tokens
    minimal = [*system, *new]
    return minimal, count(minimal)  # type: ignore[operator]


texts = st.lists(st.sampled_from(WORDS), min_size=0, max_size=60).map(" ".join)
turns = st.lists(st.tuples(texts, texts, st.booleans()), max_size=40)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=turns, question=texts, budget=st.integers(min_value=1, max_value=700),
       with_system=st.booleans())
def test_the_tail_is_the_longest_that_fits(bundle: TokenizerBundle, turns: list[tuple[str, str, bool]],
                                           question: str, budget: int, with_system: bool) -> None:
    # GIVEN a history of user/assistant turns (some turns with two user messages in a row)
    history: list[ChatMessage] = []
    for user, reply, double in turns:
        history.append(ChatMessage("user", user))
        if double:
            history.append(ChatMessage("user", reply))
        else:
            history.append(ChatMessage("assistant", reply))
    system = [ChatMessage("system", "You are Clawdbot.")] if with_system else []
    new = [ChatMessage("user", question or "hi")]
    calls: list[int] = []

    def count(messages: Sequence[ChatMessage]) -> int:
        calls.append(len(messages))
        return bundle.count_prompt_tokens(messages)

    # WHEN the context is fitted THEN it is exactly the exhaustive answer, or both refuse
    try:
        expected = exhaustive(system, history, new, budget, bundle.count_prompt_tokens)
    except ContextLengthExceededError:
        pytest.fail("the reference never raises")
    if bundle.count_prompt_tokens([*system, *new]) > budget:
        with pytest.raises(ContextLengthExceededError):
            fit_context(system, history, new, budget, count)
        return
    assert fit_context(system, history, new, budget, count) == expected
    # AND it never counts more prompts than one per candidate tail plus the minimal one
    assert len(calls) <= 1 + sum(1 for m in history if m.role != "assistant")


def test_a_long_history_costs_few_counts(bundle: TokenizerBundle) -> None:
    # GIVEN 32 turns of history, far more than a 400-token budget holds
    history = [ChatMessage(role, text) for _ in range(32) for role, text in (
        ("user", "I'm planning a trip to the mountains next week. What should I pack for three days?"),
        ("assistant", "Sure! Pack layers, a warm jacket, good boots, water, snacks and a map."))]
    new = [ChatMessage("user", "And for the evenings?")]
    calls: list[int] = []

    def count(messages: Sequence[ChatMessage]) -> int:
        calls.append(len(messages))
        return bundle.count_prompt_tokens(messages)

    messages, tokens = fit_context([], history, new, 400, count)

    assert (messages, tokens) == exhaustive([], history, new, 400, bundle.count_prompt_tokens)
    # THEN the estimate lands next to the answer: the minimal prompt plus a handful of probes, none of them the
    # whole window (bisection would start with half of it)
    assert len(calls) <= 4
    assert max(calls) < len(history) // 2
