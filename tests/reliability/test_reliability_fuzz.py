"""Hostile input: Schemathesis runs against ``clawdbot serve`` from the app's own OpenAPI document, every
operation, all its phases (examples, coverage: boundary and invalid values; fuzzing; stateful: chains such as create
a session then read, page, rate and delete it), valid and invalid data alike. No answer may be a 5xx, and every
answer must match the document: status, content type, headers (``Allow`` included), body schema, each event of a
stream.

The server has queued turns enabled (moto's SQS) so the turn routes run for real. One check is left out:
``positive_data_acceptance`` expects every schema-valid request to succeed, but some refusals depend on more than
a schema can say (a prompt too long for the model, ``stream_options`` without ``stream``, a session owned by
someone else): those are correct 4xx answers, and ``status_code_conformance`` still holds them to the document.
The budget is Schemathesis' examples per operation and phase (``CLAWDBOT_FUZZ_EXAMPLES``, 25 in CI: about 900
cases in ~15 s on 2 cores; ``python -m bench.reliability`` runs 50), with a fixed seed so a CI failure replays.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.reliability.conftest import base_env, start_serve

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.reliability.conftest import Figures, Serve

EXAMPLES = int(os.environ.get("CLAWDBOT_FUZZ_EXAMPLES", "25"))
_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})
SEED = int(os.environ.get("CLAWDBOT_FUZZ_SEED", "20261125"))


@pytest.fixture(scope="module")
def fuzz_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory, sqs_server: str,
                aws_test_env: None) -> Iterator[Serve]:
    import boto3

    queue_url = boto3.client("sqs", endpoint_url=sqs_server).create_queue(
        QueueName=f"clawdbot-fuzz-{uuid.uuid4().hex[:8]}.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    data = tmp_path_factory.mktemp("fuzz")
    env = {**base_env(data / "data", model_dir), "CLAWDBOT_QUEUE_URL": queue_url, "AWS_ENDPOINT_URL_SQS": sqs_server}
    server = start_serve(env, data / "serve.log")
    yield server
    server.stop()


def test_every_operation_answers_within_its_documented_contract(fuzz_server: Serve, tmp_path: Path,
                                                                figures: Figures) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    done = subprocess.run(
        [str(schemathesis), "run", f"{fuzz_server.base_url}/openapi.json", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--max-examples", str(EXAMPLES), "--seed", str(SEED),
         "--generation-database", "none", "--request-timeout", "60", "--no-color",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    output = done.stdout + done.stderr
    generated = re.search(r"(\d+) generated", output)
    figures.add("fuzz_cases", int(generated.group(1)) if generated else 0)
    tested = re.search(r"Tested: (\d+)", output)
    document = httpx.get(f"{fuzz_server.base_url}/openapi.json").json()
    operations = sum(1 for item in document["paths"].values() for method in item if method in _METHODS)
    # Every operation of the document ran (routes added later included), and nothing failed.
    assert operations >= 12 and tested and int(tested.group(1)) == operations, output[-4000:]
    assert done.returncode == 0, output[-6000:]
    assert generated and int(generated.group(1)) > 100
    assert "Traceback" not in fuzz_server.log_text(), fuzz_server.log_text()[-3000:]
