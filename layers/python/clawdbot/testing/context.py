"""A Lambda context object for calling handlers in-process, shaped like the one AWS's runtime passes.

The attributes and their types follow ``awslambdaric``'s ``LambdaContext`` (even ``memory_limit_in_mb`` is a
string there, read from the environment), so code that reads the context behaves in a test as it does on Lambda.
Out-of-process invocations (``clawdbot invoke``) get the runtime's real object instead.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LambdaContext:
    function_name: str = "clawdbot-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: str = "128"
    #: Seconds the invocation may run: ``get_remaining_time_in_millis`` counts down from construction.
    timeout_s: float = 30.0
    region: str = "us-east-1"
    account_id: str = "123456789012"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: Any = None
    client_context: Any = None
    tenant_id: str | None = None
    _deadline_ms: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.invoked_function_arn = self.invoked_function_arn or (
            f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"
        )
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"
        self.log_stream_name = self.log_stream_name or (
            f"{time.strftime('%Y/%m/%d', time.gmtime())}/[{self.function_version}]{uuid.uuid4().hex}"
        )
        self._deadline_ms = int(time.time() * 1000 + self.timeout_s * 1000)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))
