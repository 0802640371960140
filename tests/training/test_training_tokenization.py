"""Every training conversation survives tokenization, and the loss mask covers exactly the assistant replies."""

from __future__ import annotations

from typing import TYPE_CHECKING

from training import data, examples
from training import tokenizer as tok

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from training.data import Conversation


def test_every_conversation_round_trips_through_the_shipped_tokenizer(
    conversations: list[Conversation], shipped_tokenizer: Tokenizer
) -> None:
    # GIVEN every conversation as the template renders it (system prompts included, as in training)
    texts = [tok.render_chat(c.messages) for c in data.add_system_prompts(conversations, 0.25, seed=0)]
    encodings = shipped_tokenizer.encode_batch(texts, add_special_tokens=False)
    decoded = shipped_tokenizer.decode_batch([e.ids for e in encodings], skip_special_tokens=False)
    # THEN byte-level BPE gives back exactly the text (no unknown tokens, no normalisation)
    mismatches = [i for i, (text, back) in enumerate(zip(texts, decoded, strict=True)) if text != back]
    assert not mismatches, f"{len(mismatches)} conversations do not round-trip, e.g. {texts[mismatches[0]]!r}"


def test_block_encoding_equals_encoding_the_rendered_text(
    conversations: list[Conversation], shipped_tokenizer: Tokenizer
) -> None:
    # GIVEN the per-message encoding training uses (it is what makes the loss mask exact)
    encoder = examples.BlockEncoder(shipped_tokenizer)
    sample = data.add_system_prompts(conversations[::5], 0.5, seed=1)
    for conv in sample:
        blocks = [encoder.block(m)[0] for m in conv.messages]
        # THEN it yields the ids a runtime gets by encoding the rendered conversation in one go
        whole = shipped_tokenizer.encode(tok.render_chat(conv.messages), add_special_tokens=False).ids
        assert [i for b in blocks for i in b] == whole, conv.key


def test_loss_mask_is_exactly_the_assistant_replies_and_their_end_token(shipped_tokenizer: Tokenizer) -> None:
    conv = data.Conversation(
        "test",
        "test:1",
        (
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there!"},
            {"role": "assistant", "content": "Hi, how are you?"},
            {"role": "user", "content": "Good."},
            {"role": "assistant", "content": "Glad to hear it."},
        ),
    )
    [example] = examples.conversation_examples(conv, examples.BlockEncoder(shipped_tokenizer), max_len=512)
    assert len(example.labels) == len(example.input_ids)
    assert all(lab in (examples.IGNORE, i) for lab, i in zip(example.labels, example.input_ids, strict=True))
    targets = [lab for lab in example.labels if lab != examples.IGNORE]
    assert shipped_tokenizer.decode(targets, skip_special_tokens=False) == (
        "Hi, how are you?<|im_end|>Glad to hear it.<|im_end|>"
    )


def test_long_conversations_are_cut_into_segments_that_fit(
    conversations: list[Conversation], shipped_tokenizer: Tokenizer
) -> None:
    # GIVEN long conversations with a system prompt and a short context
    encoder = examples.BlockEncoder(shipped_tokenizer)
    system = {"role": "system", "content": "You are a helpful assistant."}
    long_ones = [c for c in conversations if len(c.messages) > 20][:20]
    for conv in long_ones:
        conv = data.Conversation(conv.source, conv.key, (system, *conv.messages))
        segments = examples.conversation_examples(conv, encoder, max_len=128)
        # THEN every segment fits, repeats the system prompt, opens with a user turn, ends with an answer
        assert len(segments) > 1
        for seg in segments:
            text = shipped_tokenizer.decode(list(seg.input_ids), skip_special_tokens=False)
            assert len(seg.input_ids) <= 128
            assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
            assert text.endswith("<|im_end|>\n")
            assert text.rsplit("<|im_start|>", 1)[1].startswith("assistant\n")
