"""Text handling around the decode loop: stop strings, incremental detokenization, chat template rendering."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawdbot.exceptions import InvalidRequestError
from clawdbot.inference.onnx import ChatTemplate
from clawdbot.inference.onnx.detokenizer import IncrementalDetokenizer
from clawdbot.inference.onnx.stopping import StopMatcher
from tests.inference.tiny_models import CHAT_TEMPLATE

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast


# ---------------------------------------------------------------------------------------------- stop strings
def run_stops(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    """What the backend does: feed pieces until a stop string completes, then flush unless stopped."""
    matcher = StopMatcher(stops)
    out = ""
    for piece in pieces:
        out += matcher.feed(piece)
        if matcher.stopped:
            return out, True
    return out + matcher.flush(), False


def test_stop_string_split_over_pieces_is_cut() -> None:
    assert run_stops(["Hello\nUs", "er: hi"], ["\nUser:"]) == ("Hello", True)
    assert run_stops(["a", "b", "c", "d"], ["bc"]) == ("a", True)


def test_partial_match_that_breaks_off_is_released() -> None:
    matcher = StopMatcher(["\nUser:"])
    assert matcher.feed("Hi\nUs") == "Hi"  # "\nUs" could start the stop string: held
    assert matcher.feed("ual text") == "\nUsual text"
    assert not matcher.stopped


def test_earliest_of_several_stops_wins() -> None:
    assert run_stops(["one two three"], ["three", "two"]) == ("one ", True)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="ab\nU:é🎉", max_size=40), cuts=st.lists(st.integers(0, 40), max_size=8),
       stops=st.lists(st.text(alphabet="ab\nU:é🎉", min_size=1, max_size=4), max_size=3))
def test_stop_matching_does_not_depend_on_how_text_is_split(text: str, cuts: list[int], stops: list[str]) -> None:
    # Whatever the piece boundaries, the output is what character-by-character generation gives: the text
    # before the stop string that completes first (the longest one if several complete at once).
    bounds = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    expected = (text, False)
    for end in range(1, len(text) + 1):
        done = [s for s in stops if text[:end].endswith(s)]
        if done:
            expected = (text[:end - max(map(len, done))], True)
            break
    assert run_stops(pieces, stops) == expected


# ---------------------------------------------------------------------------------------------- detokenizer
@pytest.mark.parametrize("text", [
    "Grüße aus München: schöne Straße",
    "日本語のテキスト 🎉🚀 café naïve",
    "Привет, как дела?",
    "plain ascii, with spaces  and\nnewlines",
])
def test_incremental_detokenization_round_trips_without_broken_characters(
        tokenizer: PreTrainedTokenizerFast, text: str) -> None:

    fast: Tokenizer = tokenizer.backend_tokenizer
    ids = fast.encode(text, add_special_tokens=False).ids
    detok = IncrementalDetokenizer(fast)
    pieces = [detok.step(i) for i in ids]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert detok.pending == 0


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=60)
       | st.sampled_from(["Grüße 🦜 日本語 naïve", "a 🎉🚀 b", "plain words, and more"]),
       cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=12))
def test_detokenizing_groups_of_tokens_gives_the_text_of_one_by_one(
        tokenizer: PreTrainedTokenizerFast, text: str, cuts: list[int]) -> None:
    # GIVEN a text's tokens, and the same tokens cut into groups anywhere (inside characters too)
    fast: Tokenizer = tokenizer.backend_tokenizer
    ids = fast.encode(text, add_special_tokens=False).ids
    bounds = sorted({0, len(ids), *(c for c in cuts if c < len(ids))})
    groups = [ids[a:b] for a, b in itertools.pairwise(bounds)]
    one_by_one = IncrementalDetokenizer(fast)
    grouped = IncrementalDetokenizer(fast)
    # WHEN one detokenizer takes them one at a time and the other a group at a time
    pieces = [one_by_one.step(i) for i in ids]
    group_pieces = [grouped.extend(group) for group in groups]
    # THEN both give the same text, never half a character, and hold back the same incomplete tail
    assert "".join(group_pieces) == "".join(pieces)
    assert all("\ufffd" not in p or "\ufffd" in text for p in group_pieces)
    assert grouped.pending == one_by_one.pending


def test_detokenizer_holds_an_incomplete_character(tokenizer: PreTrainedTokenizerFast) -> None:
    # GIVEN an emoji split over byte tokens (an untrained emoji becomes 4 byte-level tokens)
    fast = tokenizer.backend_tokenizer
    ids = fast.encode("🦜", add_special_tokens=False).ids
    assert len(ids) > 1, "precondition: the character spans several tokens"
    detok = IncrementalDetokenizer(fast)
    assert [detok.step(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert detok.pending == len(ids) - 1
    assert detok.step(ids[-1]) == "🦜"


# ---------------------------------------------------------------------------------------------- chat template
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Grüße! 🎉"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "And now?"},
]

TEMPLATES = {
    "fixture (trim/lstrip blocks, bos, raise_exception)": CHAT_TEMPLATE,
    "tojson and loop controls": (
        "{% for m in messages %}{% if loop.index0 == 2 %}{% continue %}{% endif %}"
        "{{ m | tojson }}\n{% endfor %}{% if add_generation_prompt %}{{ eos_token }}{% endif %}"
    ),
    "llama-2 style with system folding": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
        "{% set system_message = false %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
        "{% endfor %}"
    ),
}


@pytest.mark.parametrize("template", TEMPLATES.values(), ids=TEMPLATES.keys())
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_rendering_matches_transformers(tokenizer: PreTrainedTokenizerFast, template: str,
                                        add_generation_prompt: bool) -> None:
    expected = tokenizer.apply_chat_template(CONVERSATION, chat_template=template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    ours = ChatTemplate(template, {"bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token})
    assert ours.render(CONVERSATION, add_generation_prompt=add_generation_prompt) == expected


def test_raise_exception_in_template_is_a_client_error() -> None:
    ours = ChatTemplate(CHAT_TEMPLATE, {"bos_token": "<s>"})
    with pytest.raises(InvalidRequestError) as info:
        ours.render([{"role": "wizard", "content": "hi"}])
    assert info.value.status_code == 400
    assert "unknown role: wizard" in info.value.message
    assert info.value.param == "messages"
