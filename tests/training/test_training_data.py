"""The corpora load into well-formed conversations, and the held-out split is fixed and disjoint."""

from __future__ import annotations

from importlib.metadata import metadata
from typing import TYPE_CHECKING

import pytest

from training import data

if TYPE_CHECKING:
    from training.data import Conversation


def test_both_sources_load_with_alternating_roles(conversations: list[Conversation]) -> None:
    sources = {c.source for c in conversations}
    assert sources == {"chitchat", "chatterbot"}
    for conv in conversations:
        roles = [m["role"] for m in conv.messages]
        assert len(roles) >= 2
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"] * (len(roles) % 2)
        assert all(m["content"] and m["content"] == m["content"].strip() for m in conv.messages)


def test_keys_are_unique(conversations: list[Conversation]) -> None:
    keys = [c.key for c in conversations if c.source == "chitchat"]
    assert len(keys) == len(set(keys))


def test_normalise_text_collapses_whitespace_and_composes_unicode() -> None:
    assert data.normalise_text("  cafe\u0301 \n\t ok  ") == "caf\u00e9 ok"


def test_split_is_deterministic_disjoint_and_roughly_the_asked_size(conversations: list[Conversation]) -> None:
    train, heldout = data.split(conversations, heldout_per_mille=30)
    again_train, again_heldout = data.split(list(reversed(conversations)), heldout_per_mille=30)
    assert {c.key for c in heldout} == {c.key for c in again_heldout}
    assert {c.key for c in train} == {c.key for c in again_train}
    assert not {c.key for c in train} & {c.key for c in heldout}
    assert 0.015 < len(heldout) / len(conversations) < 0.045


def test_system_prompts_go_to_the_asked_fraction_and_only_in_front(conversations: list[Conversation]) -> None:
    with_system = data.add_system_prompts(conversations, fraction=0.25, seed=7)
    prompted = [c for c in with_system if c.messages[0]["role"] == "system"]
    assert 0.2 < len(prompted) / len(conversations) < 0.3
    assert all(c.messages[0]["content"] in data.SYSTEM_PROMPTS for c in prompted)
    assert all(m["role"] != "system" for c in with_system for m in c.messages[1:])
    assert with_system == data.add_system_prompts(conversations, fraction=0.25, seed=7)


@pytest.mark.parametrize(
    ("package", "license_marker"),
    [("chitchat-dataset", "MIT"), ("chatterbot-corpus", "BSD")],
)
def test_corpus_packages_are_permissively_licensed(package: str, license_marker: str) -> None:
    # GIVEN the installed distributions' metadata (what MODEL.md states as the data licenses)
    meta = metadata(package)
    declared = " ".join([meta.get("License") or "", *meta.get_all("Classifier", [])])
    # THEN the license we rely on is still the one they declare
    assert license_marker in declared
