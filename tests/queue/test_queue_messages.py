"""The turn message schema and how records become turns (no model, no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from clawdbot.queue import PoisonMessageError, TurnMessage, TurnQueue, parse_record
from clawdbot.queue.exceptions import TurnTooLargeError
from clawdbot.queue.messages import MAX_MESSAGE_BYTES
from clawdbot.queue.replies import parse_topic_list
from clawdbot.testing import load_event


def _record(body: str, group: str | None = "sess_a") -> SQSRecord:
    record = load_event("sqs-chat-turn")["Records"][0]
    record["body"] = body
    if group is None:
        del record["attributes"]["MessageGroupId"]
    else:
        record["attributes"]["MessageGroupId"] = group
    return SQSRecord(record)


def _message(**overrides: Any) -> TurnMessage:
    fields: dict[str, Any] = {"session_id": "sess_a", "turn_id": "t-1", "content": "hi", "enqueued_at": 1}
    return TurnMessage(**{**fields, **overrides})


def test_the_sample_events_carry_valid_turns_grouped_by_session() -> None:
    for name in ("sqs-chat-turn", "sqs-chat-turn-redelivered"):
        record = SQSRecord(load_event(name)["Records"][0])
        message = parse_record(record)
        assert record.attributes.message_group_id == message.session_id
        assert record.attributes.message_deduplication_id == message.deduplication_id()


def test_a_message_survives_the_round_trip_through_a_body() -> None:
    message = _message(owner="key_1", reply_topic_arn="arn:aws:sns:us-east-1:123456789012:replies")
    assert parse_record(_record(message.to_body())) == message


def test_unset_optional_fields_are_left_out_of_the_body() -> None:
    assert set(json.loads(_message().to_body())) == {"v", "session_id", "turn_id", "content", "enqueued_at"}


def test_unknown_fields_from_a_newer_producer_are_ignored() -> None:
    body = json.loads(_message().to_body()) | {"priority": "high"}
    assert parse_record(_record(json.dumps(body))) == _message()


@pytest.mark.parametrize(("body", "mentions"), [
    ("not json at all", "body"),
    ('{"session_id": "sess_a", "turn_id": "t-1", "content": ', "body"),
    ('{"session_id": "sess_a", "turn_id": "t-1", "enqueued_at": 1}', "content"),
    ('{"session_id": "sess_a", "turn_id": "t-1", "content": "", "enqueued_at": 1}', "content"),
    ('{"session_id": "sess a", "turn_id": "t-1", "content": "hi", "enqueued_at": 1}', "session_id"),
    ('{"session_id": "sess_a", "turn_id": "t/1", "content": "hi", "enqueued_at": 1}', "turn_id"),
    ('{"v": 2, "session_id": "sess_a", "turn_id": "t-1", "content": "hi", "enqueued_at": 1}', "v"),
    ("[1, 2]", "body"),
])
def test_a_body_that_is_not_a_turn_is_poison(body: str, mentions: str) -> None:
    with pytest.raises(PoisonMessageError) as caught:
        parse_record(_record(body))
    assert caught.value.code == "poison_message"
    assert mentions in caught.value.message


def test_a_turn_outside_its_sessions_message_group_is_poison() -> None:
    with pytest.raises(PoisonMessageError, match="message group"):
        parse_record(_record(_message().to_body(), group="sess_b"))


def test_a_standard_queue_record_has_no_group_to_check() -> None:
    assert parse_record(_record(_message().to_body(), group=None)) == _message()


def test_deduplication_ids_differ_per_session_and_owner_for_one_turn_id() -> None:
    ids = {_message().deduplication_id(), _message(session_id="sess_b").deduplication_id(),
           _message(owner="key_1").deduplication_id()}
    assert len(ids) == 3
    assert all(len(i) <= 128 for i in ids)  # SQS's limit
    assert _message().deduplication_id() == _message(content="other text").deduplication_id()


def test_a_turn_over_the_size_limit_is_refused_before_anything_is_sent() -> None:
    queue = TurnQueue("https://sqs.us-east-1.amazonaws.com/123456789012/turns.fifo")
    with pytest.raises(TurnTooLargeError) as caught:
        queue.send(_message(content="é" * (MAX_MESSAGE_BYTES // 2)))  # 2 bytes each in UTF-8: just over
    assert caught.value.status_code == 400
    assert not queue._client.created  # no SQS client was even created


def test_reply_topic_lists_split_on_commas_and_whitespace() -> None:
    assert parse_topic_list(" arn:a, arn:b\narn:c,,") == {"arn:a", "arn:b", "arn:c"}
    assert parse_topic_list("") == frozenset()
