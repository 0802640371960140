"""The model-session wire format shared by the container and the SageMaker backend."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from clawdbot.inference.model_session import (
    EXPIRY_MARGIN_SECONDS,
    ModelSession,
    new_session,
    parse_session,
    valid_session_id,
)

#: SageMaker's pattern for the ``X-Amzn-SageMaker-New-Session-Id`` value (its API model, ``NewSessionResponseHeader``).
NEW_SESSION_RESPONSE = re.compile(
    r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*;\sExpires=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")


def test_a_new_session_is_written_as_sagemaker_expects_and_read_back() -> None:
    now = datetime(2026, 12, 3, 20, 0, 0, 123456, tzinfo=UTC)
    session = new_session(900, now=now)
    header = session.header()
    assert NEW_SESSION_RESPONSE.fullmatch(header), header
    assert header.endswith("; Expires=2026-12-03T20:15:00Z")
    assert valid_session_id(session.session_id)
    assert parse_session(header) == session
    assert new_session().session_id != new_session().session_id


def test_a_session_is_not_used_near_its_expiry() -> None:
    now = datetime(2026, 12, 3, 20, 0, 0, tzinfo=UTC)
    session = ModelSession("ms-1", now + timedelta(seconds=EXPIRY_MARGIN_SECONDS + 5))
    assert session.usable(now)
    assert not session.usable(now + timedelta(seconds=10))
    assert not session.usable(now + timedelta(days=1))


@pytest.mark.parametrize("value", [None, 42, "", "NEW_SESSION", "ms-1", "ms-1; Expires=tomorrow",
                                   "bad id; Expires=2026-12-03T20:15:00Z", "-ms; Expires=2026-12-03T20:15:00Z",
                                   "x" * 300 + "; Expires=2026-12-03T20:15:00Z"])
def test_what_is_not_a_session_reads_as_none(value: object) -> None:
    assert parse_session(value) is None


def test_session_ids_follow_sagemakers_pattern() -> None:
    assert valid_session_id("a-b--c1")
    assert not valid_session_id("-a")
    assert not valid_session_id("a_b")
    assert not valid_session_id("a" * 257)
