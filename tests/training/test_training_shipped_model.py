"""The committed model folder is complete, small enough to commit, and chats through onnxruntime alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from training.onnx_chat import OnnxChat

if TYPE_CHECKING:
    from pathlib import Path

MAX_FOLDER_BYTES = 20 * 1024 * 1024
REQUIRED_FILES = ("model.onnx", "tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json")


@pytest.fixture(scope="module")
def chat(model_dir: Path) -> OnnxChat:
    return OnnxChat(model_dir)


def test_folder_has_the_optimum_layout_and_fits_the_size_budget(model_dir: Path) -> None:
    for name in REQUIRED_FILES:
        assert (model_dir / name).is_file(), name
    total = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    assert total <= MAX_FOLDER_BYTES


def test_model_answers_a_greeting_and_stops_on_its_own(chat: OnnxChat) -> None:
    # GIVEN a greeting, decoded greedily
    reply, finish = chat.reply([{"role": "user", "content": "Hi! How are you?"}], max_new_tokens=64)
    # THEN it says something and ends with <|im_end|> rather than running to the token limit
    assert reply.strip()
    assert finish == "stop"


def test_model_tolerates_a_system_prompt_and_history(chat: OnnxChat) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi, how are you?"},
        {"role": "user", "content": "Good, thanks. What do you like to do?"},
    ]
    reply, finish = chat.reply(messages, max_new_tokens=64)
    assert reply.strip()
    assert finish == "stop"
    assert "<|im_start|>" not in reply


def test_report_records_what_model_md_quotes(report: dict[str, Any]) -> None:
    assert report["parameters"] > 1_000_000
    assert report["heldout"]["all"]["perplexity"] > 1
    assert report["tokens_seen"] > 0 and report["timings_s"]["train"] > 0
    assert report["stopped_by"] in ("steps", "time")
    assert len(report["samples"]) >= 5
