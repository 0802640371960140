"""``clawdbot.aws_clients``: botocore clients (no boto3 import on the Lambda path) that find the local stand-ins
through the standard ``AWS_ENDPOINT_URL_<SERVICE>`` variables, made once even when request threads race."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

from clawdbot.aws_clients import LazyClient


def test_a_lazy_client_is_made_once_for_racing_threads_and_reaches_the_endpoint(sqs_endpoint_env: str) -> None:
    # GIVEN a lazy SQS client, not yet made
    lazy = LazyClient("sqs")
    assert not lazy.created
    # WHEN 16 threads ask for it at once
    start = threading.Barrier(16)
    got: list[Any] = []

    def take() -> None:
        start.wait()
        got.append(lazy.get())

    threads = [threading.Thread(target=take) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # THEN they all got the same client, which talks to the local SQS server named by AWS_ENDPOINT_URL_SQS
    assert len({id(client) for client in got}) == 1
    client = got[0]
    url = client.create_queue(QueueName="clawdbot-aws-clients")["QueueUrl"]
    assert url in client.list_queues()["QueueUrls"]
    # AND after close() the next get() makes a new, working client
    lazy.close()
    assert not lazy.created
    assert lazy.get() is not client
    assert url in lazy.get().list_queues()["QueueUrls"]


def test_making_a_client_does_not_import_boto3() -> None:
    # GIVEN a fresh interpreter (a Lambda cold start); WHEN a DynamoDB client is made and used for nothing
    code = (
        "import sys\n"
        "from clawdbot.aws_clients import make_client\n"
        "make_client('dynamodb', region_name='us-east-1')\n"
        "print(sorted(m for m in ('boto3', 's3transfer') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    # THEN neither boto3 nor its S3 transfer manager was imported (~45 ms of a cold start)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
