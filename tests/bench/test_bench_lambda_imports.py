"""The Lambda handlers import with only the layer's packages: ``bench.coldstart`` found that the chat API needed
``aws_xray_sdk`` (Powertools' Tracer), which the layer does not carry, so the deployed function failed at init."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clawdbot.config.settings import DEFAULT_MODEL_DIR

REPO = Path(__file__).resolve().parents[2]
#: Installed for the tests or the local server, absent from ``layers/requirements.txt``.
NOT_IN_LAYER = ("aws_xray_sdk", "numpy", "onnxruntime", "uvicorn", "prometheus_client",
                # tokenizers declares huggingface-hub, which the layer leaves out with what only it needs
                "huggingface_hub", "fsspec", "filelock", "tqdm", "yaml", "requests", "charset_normalizer", "packaging",
                # left out of the pydantic it keeps (cdk.layer_slimming): FastAPI imports it only to rule v1 out
                "pydantic.v1")
#: The deploy key the chat API's probe is configured with (its hash, as the stack passes it).
DEPLOY_KEY = "cb-lambda-imports-probe-key-0123456789"
PROBE = """
import json, sys
for name in {blocked!r}:
    sys.modules[name] = None  # unimportable, as in a Lambda whose layer lacks it
import functions.{function}.handler
print(json.dumps(sorted(n for n in {blocked!r} if sys.modules.get(n) is not None)))
print(json.dumps(sorted(n for n in sys.modules if n.startswith("clawdbot.inference.onnx."))))
"""
#: After chat_api's import: two keyed requests through its handler, a body that fails validation and a read of a
#: session that does not exist (pydantic's errors and FastAPI's answers, with what the layer has).
REQUESTS = """
from clawdbot.testing import LambdaContext, load_event
answers = []
for name in ("bad-request", "session-read"):
    event = load_event(name)
    event["headers"] = {{**event["headers"], "authorization": "Bearer {key}"}}
    answer = functions.chat_api.handler.handler(event, LambdaContext(function_name="clawdbot-chat_api"))
    answers.append([answer["statusCode"], json.loads(answer["body"])["error"]["type"]])
print(json.dumps(answers))
"""


@pytest.mark.parametrize("function", ["chat_api", "chat_worker"])
def test_the_handler_imports_without_packages_the_layer_lacks(function: str, tmp_path: Path) -> None:
    from clawdbot.traffic.keys import hash_key

    # GIVEN the environment the stack gives the function (SageMaker inference, the tokenizer bundle, a deploy key)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "AWS_LAMBDA_FUNCTION_NAME": f"clawdbot-{function}",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "CLAWDBOT_INFERENCE": "sagemaker", "CLAWDBOT_SAGEMAKER_ENDPOINT": "clawdbot-test",
           "CLAWDBOT_MODEL_DIR": str(DEFAULT_MODEL_DIR), "CLAWDBOT_SESSION_STORE": "sqlite",
           "CLAWDBOT_DATA_DIR": str(tmp_path), "CLAWDBOT_BOOTSTRAP_KEY_SHA256": hash_key(DEPLOY_KEY)}
    probe = PROBE.format(blocked=NOT_IN_LAYER, function=function)
    if function == "chat_api":
        probe += REQUESTS.format(key=DEPLOY_KEY)
    # WHEN its module is imported (cold start) THEN it succeeds and pulled in none of them
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    # (the probe's lists; Powertools prints its metrics to stdout as objects)
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("[")]
    if function == "chat_api":
        # AND the chat API answers with what the layer has: the invalid body a 400, the unknown session a 404,
        # each with the OpenAI error JSON
        assert json.loads(lines.pop()) == [[400, "invalid_request_error"], [404, "invalid_request_error"]]
    blocked_imported, onnx_modules = (json.loads(line) for line in lines[-2:])
    assert blocked_imported == []
    # AND of the in-process engine's package only what the tokenizer bundle uses (the engine's modules are
    # imported when a name is first used, not with the package)
    assert set(onnx_modules) <= {"clawdbot.inference.onnx.chat_template", "clawdbot.inference.onnx.model_folder"}


def test_the_cold_start_probe_uses_botocore_with_the_layers_service_models_only(tmp_path: Path) -> None:
    from bench.coldstart import layer_botocore
    from cdk.layer_slimming import BOTOCORE_SERVICES

    # GIVEN the botocore the cold-start probes put first on their path
    site = layer_botocore(tmp_path)
    assert site is not None
    data = site / "botocore" / "data"
    # THEN it holds the service models the layer keeps and no other, with botocore's shared files
    assert {p.name for p in data.iterdir() if p.is_dir()} == set(BOTOCORE_SERVICES)
    assert (data / "endpoints.json").is_file() or (data / "endpoints.json.gz").is_file()
    # AND a process with it first on its path makes a DynamoDB client from it, and fails for a service it lacks
    code = ("import botocore, botocore.session; s = botocore.session.get_session(); s.create_client('dynamodb'); "
            "print(botocore.__file__)\ntry:\n    s.create_client('s3')\nexcept Exception as e:\n"
            "    print(type(e).__name__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "AWS_DEFAULT_REGION": "us-east-1"},
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    path, error = done.stdout.split()
    assert path.startswith(str(site)) and error == "UnknownServiceError"
