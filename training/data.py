"""Dialogue data for the shipped model, read from two permissively licensed PyPI packages.

Why these two: they install with pip (so the build needs no download beyond the ``train`` extra) and their
licenses allow redistributing a model trained on them:

* ``chitchat-dataset`` 0.9.0 (MIT, BYU PCC lab): ~7k open-domain conversations between two crowd workers.
* ``chatterbot-corpus`` 1.3.3 (BSD-3-Clause, per its classifier and upstream repository): ~2k short English
  question/answer exchanges (greetings, small talk, trivia, tech support), written for a chatbot persona.

Everything is normalised into ``Conversation`` objects with OpenAI-style roles. The first speaker is the
``user`` and the second the ``assistant``, so the model learns to answer whoever opens a conversation.
The held-out split is a pure function of a stable key per conversation, so it never changes between runs
or when the other source changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypedDict

logger = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant"]

#: Generic system prompts put in front of some training conversations. The model is far too small to follow
#: instructions; they are there so a system message (which clients and ``CLAWDBOT_SYSTEM_PROMPT`` send) is
#: a familiar prefix rather than something that derails it.
SYSTEM_PROMPTS: tuple[str, ...] = (
    "You are a helpful assistant.",
    "You are clawdbot, a friendly chat assistant.",
    "You are a friendly assistant. Keep your answers short.",
    "You are a chatbot. Be polite and answer the user's questions.",
    "You are clawdbot. Answer briefly and kindly.",
    "You are a helpful, honest assistant.",
)

_WHITESPACE = re.compile(r"\s+")


class Message(TypedDict):
    role: Role
    content: str


@dataclass(frozen=True)
class Conversation:
    """One dialogue: ``messages`` alternate user/assistant (after an optional leading system message)."""

    source: str
    #: Stable identity used for the held-out split (and for dedup).
    key: str
    messages: tuple[Message, ...]


def normalise_text(text: str) -> str:
    """NFC and single spaces: the corpora mix newlines, tabs and runs of spaces that carry no meaning."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def _alternating(turns: list[str]) -> tuple[Message, ...]:
    roles: tuple[Role, Role] = ("user", "assistant")
    return tuple(Message(role=roles[i % 2], content=t) for i, t in enumerate(turns))


def chitchat_path() -> Path:
    """The JSON file the ``chitchat-dataset`` package ships."""
    import chitchat_dataset

    return Path(chitchat_dataset.__file__).with_name("dataset.json")


def load_chitchat(path: Path | None = None) -> list[Conversation]:
    """Conversations from ``chitchat-dataset``: each message group is one speaker's turn.

    A speaker often sends several short lines in a row; they are joined with spaces into one turn, and
    consecutive groups by the same sender are merged so roles strictly alternate.
    """
    data = json.loads((path or chitchat_path()).read_text(encoding="utf-8"))
    conversations: list[Conversation] = []
    for key in sorted(data):
        turns: list[str] = []
        last_sender: str | None = None
        for group in data[key]["messages"]:
            text = " ".join(t for t in (normalise_text(u["text"]) for u in group) if t)
            if not text:
                continue
            sender = group[0]["sender"]
            if sender == last_sender:
                turns[-1] = f"{turns[-1]} {text}"
            else:
                turns.append(text)
                last_sender = sender
        if len(turns) >= 2:
            conversations.append(Conversation("chitchat", f"chitchat:{key}", _alternating(turns)))
    logger.debug("chitchat: %d conversations", len(conversations))
    return conversations


def chatterbot_dir(language: str = "english") -> Path:
    """The folder of YAML files the ``chatterbot-corpus`` package ships for ``language``."""
    from chatterbot_corpus.corpus import DATA_DIRECTORY

    return Path(DATA_DIRECTORY) / language


def load_chatterbot(data_dir: Path | None = None) -> list[Conversation]:
    """English conversations from ``chatterbot-corpus`` (YAML lists of alternating lines), deduplicated.

    The key is the file plus the opening line, so the several canned answers the corpus has for one
    question all land on the same side of the held-out split.
    """
    import yaml

    seen: set[tuple[str, ...]] = set()
    conversations: list[Conversation] = []
    for path in sorted((data_dir or chatterbot_dir()).glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for raw in doc.get("conversations") or []:
            turns = [normalise_text(str(t)) for t in raw]
            turns = [t for t in turns if t]
            if len(turns) < 2 or tuple(turns) in seen:
                continue
            seen.add(tuple(turns))
            key = f"chatterbot:{path.stem}:{turns[0].lower()}"
            conversations.append(Conversation("chatterbot", key, _alternating(turns)))
    logger.debug("chatterbot: %d conversations", len(conversations))
    return conversations


def is_heldout(key: str, heldout_per_mille: int) -> bool:
    """Deterministic split on a hash of the key: independent of order, seeds and the other source."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < heldout_per_mille


def split(
    conversations: list[Conversation], heldout_per_mille: int = 30
) -> tuple[list[Conversation], list[Conversation]]:
    """(train, held-out) by :func:`is_heldout`."""
    train = [c for c in conversations if not is_heldout(c.key, heldout_per_mille)]
    heldout = [c for c in conversations if is_heldout(c.key, heldout_per_mille)]
    return train, heldout


def add_system_prompts(
    conversations: list[Conversation], fraction: float, seed: int
) -> list[Conversation]:
    """Prefix a seeded ``fraction`` of conversations with one of :data:`SYSTEM_PROMPTS`."""
    rng = random.Random(seed)
    out: list[Conversation] = []
    for conv in conversations:
        if rng.random() < fraction:
            system = Message(role="system", content=rng.choice(SYSTEM_PROMPTS))
            conv = replace(conv, messages=(system, *conv.messages))
        out.append(conv)
    return out


def load_all() -> list[Conversation]:
    """Both sources, in a fixed order."""
    return load_chitchat() + load_chatterbot()
