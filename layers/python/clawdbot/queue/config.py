"""Behaviour settings of the worker that are not the app's: read from ``CLAWDBOT_QUEUE_*``.

The queue's URL stays in the app's ``Settings`` (``CLAWDBOT_QUEUE_URL``, which the API needs too); what only the
worker needs to know about the queue it drains lives here.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLAWDBOT_QUEUE_", extra="ignore", frozen=True)

    #: The queue's ``maxReceiveCount`` (its redrive policy). On that delivery, a turn that fails again for a
    #: passing reason is given up: stored as ``failed`` (so clients stop polling ``pending``), then parked in the
    #: DLQ as before. Unset, the worker never gives up and a dead-lettered turn reads ``pending`` forever.
    max_receive_count: int | None = Field(default=None, ge=1)
    #: The longest one turn may take (the model call with its retries, plus the store). A record is not started
    #: with less than this left in the invocation, unless it is the invocation's first or on its last delivery:
    #: it fails unstarted and SQS delivers it again, rather than the Lambda timeout cutting it off mid-generation
    #: and sending back every record of the batch, finished ones included. Unset: no such check.
    turn_budget_seconds: float | None = Field(default=None, gt=0)
