"""Where a turn stands, for ``GET /v1/sessions/{id}/turns/{turn_id}``.

Read in order of cost and authority: the turn's idempotency record (one key lookup: ``in_progress``, or the
``done``/``failed`` outcome the worker stored), then the newest transcript entries (a reply recorded by a worker
that died before marking the record, or a record past its TTL), else ``pending``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyItemNotFoundError
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import STATUS_CONSTANTS

from clawdbot.queue.exceptions import TurnStatusUnavailableError
from clawdbot.queue.idempotency import key_data
from clawdbot.queue.outcomes import IN_PROGRESS, PENDING, find_recorded_turn

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

    from clawdbot.sessions.base import SessionStore

logger = logging.getLogger(__name__)


class TurnStatusReader:
    def __init__(self, store: SessionStore, persistence: BasePersistenceLayer, window: int) -> None:
        """``persistence`` must be configured as the worker's (``build_persistence_layer`` does it)."""
        self.store = store
        self.persistence = persistence
        self.window = window

    def outcome(self, session_id: str, turn_id: str, owner: str | None) -> dict[str, Any]:
        """The turn's outcome dict (``status`` first); the caller has checked the session is the owner's."""
        record = self._record(session_id, turn_id, owner)
        if record is not None:
            status = record.status
            if status == STATUS_CONSTANTS["COMPLETED"]:
                return record.response_json_as_dict() or {"status": PENDING}
            if status == STATUS_CONSTANTS["INPROGRESS"]:
                lapsed = (record.in_progress_expiry_timestamp is not None
                          and record.in_progress_expiry_timestamp < time.time() * 1000)
                # A lapsed lock means its worker died: SQS will redeliver the turn, so it is waiting again.
                return {"status": PENDING if lapsed else IN_PROGRESS}
        recorded = find_recorded_turn(self.store, session_id, turn_id, self.window)
        return recorded or {"status": PENDING}

    def _record(self, session_id: str, turn_id: str, owner: str | None) -> DataRecord | None:
        try:
            return self.persistence.get_record(key_data(owner, session_id, turn_id))
        except IdempotencyItemNotFoundError:
            return None
        except Exception as exc:  # boto3, redis and sqlite3 each raise their own connection errors
            logger.warning("could not read the idempotency record of turn %s: %s", turn_id, exc)
            raise TurnStatusUnavailableError("The turn's status could not be read; try again.") from exc
