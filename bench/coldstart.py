"""Cold start of each Lambda handler module, and the zipped size of each function and of the layer.

Cold start = import + init of ``functions/<name>/handler.py`` in a fresh interpreter, configured as the AWS stack
configures it (``CLAWDBOT_INFERENCE=sagemaker``, DynamoDB sessions in an existing table, the tokenizer bundle as
the model folder, a deploy key): the app or worker is built at import, so the time covers imports, settings, the
store's botocore client and the tokenizer. No AWS call is made: the deploy key (``CLAWDBOT_BOOTSTRAP_KEY_SHA256``
here, the stack's Secrets Manager ARN there) is imported when first presented (``clawdbot.traffic.deploy_key``).
botocore is the venv's as the layer ships it (:func:`layer_botocore`).

Packages installed here but not in the layer (``aws_xray_sdk``, ``numpy``, ...), and the sub-packages the layer
leaves out (``pydantic.v1``), are made unimportable in the probe, so a handler that needs one fails here as it
would on Lambda. Reported per function: median wall milliseconds
over ``--runs`` fresh processes (``<name>_cold_start_ms``), the
modules that took longest (self time, one extra run under ``python -X importtime``), and whether heavy modules
were imported at all. Each handler run alternates with a run that imports only the third-party packages the
handlers use (``FRAMEWORKS``): ``<name>_frameworks_import_ms`` is the floor no code of ours can go below, and
``<name>_cold_start_ratio_to_frameworks`` (paired per run) is the part that is ours, steady under machine load.
Sizes: each function folder plus its tokenizer bundle, and the layer (pinned wheels for
Lambda's arm64 + the ``clawdbot`` package), built by ``cdk/bundling.py`` as ``cdk synth`` builds them, then
zipped with deflate as the CDK CLI uploads them.

``<name>_cold_start_ms`` has compiled bytecode at hand (as a layer that ships ``.pyc`` files for Lambda's Python
would); ``<name>_cold_start_no_bytecode_ms`` compiles every module from source, as a bundle synthesized without a
Python 3.14 at hand does (``cdk/bundling.py``).

This machine is not a Lambda: its CPU, its Python (Lambda runs 3.14 on arm64) and its disk cache differ, so the
figures compare handlers and commits with each other, and the budget (250 ms for chat_api) is checked here.

    python -m bench.coldstart [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "coldstart.json"
FUNCTIONS = ("chat_api", "chat_worker")
#: Modules a Lambda must never import (inference runs on SageMaker; tracing is off without the X-Ray SDK).
HEAVY = ("numpy", "onnxruntime", "torch", "transformers", "redis", "aws_xray_sdk", "uvicorn", "prometheus_client")
TABLE = "clawdbot-bench-coldstart"
#: The third-party packages chat_api imports, imported alone: the floor no code of ours can go below (ratio to it).
#: botocore, not boto3: the library makes its clients with botocore (``clawdbot.aws_clients``), so boto3 (and
#: s3transfer, which it imports) is not among them.
FRAMEWORKS = ("import fastapi, pydantic_settings, mangum, botocore.session, jinja2, tokenizers, "
              "aws_lambda_powertools.logging")
#: The deploy key the probes are configured with (its hash, as the stack passes it).
DEPLOY_KEY = "cb-bench-cold-start-key-0123456789"
#: The chat_api budget from the issue.
CHAT_API_BUDGET_MS = 250.0

_PROBE = """
import json, sys, time
for blocked in {blocked!r}:  # installed here but not in the layer: absent, as on Lambda
    sys.modules[blocked] = None
started = time.perf_counter()
{target}
elapsed = (time.perf_counter() - started) * 1000
heavy = {heavy!r}
report = {{"ms": elapsed, "heavy": [m for m in heavy if sys.modules.get(m) is not None]}}
{after}
print(json.dumps(report))
"""
#: After chat_api's init, in the same process: its first request, an authenticated read of a session that does not
#: exist (404) - the key, the rate limiter's bucket and the session store, each on a client the init may or may not
#: have made. What init leaves to the first request shows here, so the two are reported side by side and summed.
_FIRST_REQUEST = """
from clawdbot.testing.context import LambdaContext
event = json.loads({event!r})
context = LambdaContext(function_name="clawdbot-chat_api", memory_limit_in_mb="1024")
from functions.chat_api import handler as module
began = time.perf_counter()
answer = module.handler(event, context)
report["first_request_ms"] = (time.perf_counter() - began) * 1000
report["first_request_status"] = answer["statusCode"]
"""


def keyed_session_read() -> dict[str, Any]:
    """The sample read of a session that does not exist, with the deploy key: a request that needs the key, the
    rate limiter's bucket and the session store, and no model (inference is SageMaker's in this set-up)."""
    from clawdbot.testing.events import load_event

    event = load_event("session-read")
    event["headers"] = {**event["headers"], "authorization": f"Bearer {DEPLOY_KEY}"}
    return event


def layer_botocore(scratch: Path) -> Path | None:
    """A folder holding this environment's botocore as the layer ships it (``cdk.layer_slimming``: the kept
    services' models without their documentation, ``endpoints.json`` cut to them), to put first on the probes'
    path; ``None`` without the cdk extra.

    botocore lists every service folder it has when it loads a model (~450 of them in the full package: ~20 ms of
    a cold start here) and parses ``endpoints.json`` whole for its first client; the probes use the venv's packages
    otherwise (the layer's are built for arm64), so without this the figure would count data the function does not
    have.
    """
    try:
        from cdk.layer_slimming import ignore_for_layer, slim_botocore_data
    except ModuleNotFoundError:
        return None
    import botocore

    site = scratch / "layer-botocore"
    shutil.copytree(Path(botocore.__file__).parent, site / "botocore", ignore=ignore_for_layer)
    slim_botocore_data(site / "botocore" / "data")
    return site


def _lambda_env(bundle: Path, endpoint: str, name: str, site: Path | None = None) -> dict[str, str]:
    from clawdbot.traffic.keys import hash_key
    from tests.fixtures.servers import FAKE_AWS_ENV

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAWDBOT_", "AWS_", "POWERTOOLS_"))}
    env |= FAKE_AWS_ENV | {
        "AWS_LAMBDA_FUNCTION_NAME": f"clawdbot-{name}", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "POWERTOOLS_SERVICE_NAME": "clawdbot", "POWERTOOLS_METRICS_NAMESPACE": "Clawdbot",
        "CLAWDBOT_INFERENCE": "sagemaker", "CLAWDBOT_SAGEMAKER_ENDPOINT": "clawdbot-bench",
        "CLAWDBOT_MODEL_DIR": str(bundle), "CLAWDBOT_MODEL_NAME": "clawdbot-tiny-chat",
        "CLAWDBOT_SESSION_STORE": "dynamodb", "CLAWDBOT_DYNAMODB_TABLE": TABLE,
        # The stack's table exists; against DynamoDB Local the factory would otherwise describe it at start.
        "CLAWDBOT_DYNAMODB_CREATE_TABLE": "false",
        "CLAWDBOT_BOOTSTRAP_KEY_SHA256": hash_key(DEPLOY_KEY),
        "PYTHONDONTWRITEBYTECODE": "", "PYTHONPATH": os.pathsep.join([*([str(site)] if site else []), str(REPO)]),
    }
    return env


def _probe(name: str, env: dict[str, str], blocked: list[str], importtime: bool = False,
           target: str | None = None, first_request: bool = False) -> tuple[dict[str, Any], str]:
    """One fresh process importing ``target`` (default: the handler); with ``first_request``, chat_api's first
    request is timed after it (:data:`_FIRST_REQUEST`)."""
    after = _FIRST_REQUEST.format(event=json.dumps(keyed_session_read())) if first_request else ""
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c",
           _PROBE.format(target=target or f"import functions.{name}.handler", heavy=HEAVY, blocked=blocked,
                         after=after)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"functions/{name}/handler.py failed to import:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _slowest_modules(importtime_log: str, count: int = 8) -> dict[str, float]:
    """Top-level packages by the self time of all their modules (``-X importtime`` lines), slowest first:
    ``{package: ms}``."""
    totals: dict[str, int] = {}
    for line in importtime_log.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, module = line.split(":", 1)[1].split("|")
        package = module.strip().split(".")[0]
        totals[package] = totals.get(package, 0) + int(self_us)
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:count]
    return {package: round(us / 1000, 1) for package, us in ranked}


def not_in_layer(layer_python: Path | None) -> list[str]:
    """Top-level packages installed in this environment but absent from the layer (``HEAVY`` without one), and
    the sub-packages the layer leaves out of the packages it has (``pydantic.v1``)."""
    if layer_python is None:
        return list(HEAVY)
    import sysconfig

    from cdk.layer_slimming import omitted_modules

    def names(folder: Path) -> set[str]:
        return {p.name.removesuffix(".py") for p in folder.iterdir()
                if not p.name.endswith((".dist-info", ".pth")) and not p.name.startswith(("_", "."))
                and (p.is_dir() or p.suffix in (".py", ".so"))}

    here = names(Path(sysconfig.get_paths()["purelib"]))
    omitted = [name for name in omitted_modules() if not (layer_python / name.replace(".", "/")).exists()]
    return sorted(here - names(layer_python) - {"clawdbot"}) + omitted


def cold_starts(runs: int, scratch: Path, blocked: list[str]) -> dict[str, Any]:
    import boto3

    from clawdbot.inference.tokenizer_bundle import copy_bundle
    from clawdbot.sessions.factory import ensure_dynamodb_table
    from tests.fixtures.servers import FAKE_AWS_ENV, run_dynamodb_local

    bundle = copy_bundle(REPO / "models" / "clawdbot-tiny-chat", scratch / "model")
    site = layer_botocore(scratch)
    results: dict[str, Any] = {"botocore_services_as_in_layer": site is not None}
    with run_dynamodb_local(scratch) as endpoint:
        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name=FAKE_AWS_ENV["AWS_REGION"],
                              aws_access_key_id="bench", aws_secret_access_key="bench")
        ensure_dynamodb_table(client, TABLE)
        for name in FUNCTIONS:
            env = _lambda_env(bundle, endpoint, name, site)
            first_request = name == "chat_api"
            # The first run warms the OS file cache, as a provisioned Lambda image is warm (and its first request
            # imports the deploy key, which every later one finds, as in a deployed stack after its first use).
            _probe(name, env, blocked, first_request=first_request)
            samples = []
            floor = []
            first: list[float] = []
            heavy: list[str] = []
            for _ in range(runs):  # each handler run next to a run of its frameworks alone
                result, _ = _probe(name, env, blocked, first_request=first_request)
                samples.append(result["ms"])
                heavy = result["heavy"]
                if "first_request_ms" in result:
                    if result["first_request_status"] != 404:
                        raise RuntimeError(f"{name}'s first request answered {result['first_request_status']}")
                    first.append(result["first_request_ms"])
                floor.append(_probe(name, env, blocked, target=FRAMEWORKS)[0]["ms"])
            _, log = _probe(name, env, blocked, importtime=True)
            # As bundled without a Python 3.14 at hand: cdk/bundling.py then ships no bytecode (the build host's would
            # not match Lambda's Python) and /opt is read-only, so every cold start compiles every module from source.
            source_env = env | {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(scratch / "no-pyc")}
            no_bytecode = [_probe(name, source_env, blocked)[0]["ms"] for _ in range(max(1, runs // 2))]
            results[f"{name}_cold_start_no_bytecode_ms"] = round(statistics.median(no_bytecode), 1)
            results[f"{name}_cold_start_ms"] = round(statistics.median(samples), 1)
            results[f"{name}_cold_start_min_ms"] = round(min(samples), 1)
            if first:
                results[f"{name}_first_request_ms"] = round(statistics.median(first), 1)
                results[f"{name}_cold_start_with_first_request_ms"] = round(
                    statistics.median(s + f for s, f in zip(samples, first, strict=True)), 1)
            results[f"{name}_frameworks_import_ms"] = round(statistics.median(floor), 1)
            results[f"{name}_cold_start_ratio_to_frameworks"] = round(
                statistics.median(s / f for s, f in zip(samples, floor, strict=True)), 3)
            results[f"{name}_heavy_modules_imported"] = heavy
            # flat keys, slowest first: chat_api_import_self_ms_fastapi, ...
            results |= {f"{name}_import_self_ms_{package}": ms for package, ms in _slowest_modules(log).items()}
            print(f"{name}: cold start {results[f'{name}_cold_start_ms']} ms (median of {runs}); heavy imports: "
                  f"{heavy or 'none'}", flush=True)
        results |= snapstart_restore(env_for_invoke(_lambda_env(bundle, endpoint, "chat_api", site)), runs)
    return results


def env_for_invoke(env: dict[str, str]) -> dict[str, str]:
    """The probe's Lambda configuration as ``invoke_function`` overrides (it builds the rest of the environment)."""
    return {k: v for k, v in env.items() if k.startswith(("CLAWDBOT_", "AWS_", "POWERTOOLS_"))
            and k not in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE")}


def snapstart_restore(env: dict[str, str], runs: int) -> dict[str, Any]:
    """chat_api as a SnapStart version, through AWS's runtime client and the local Runtime API: what a restored
    cold start still runs of ours (the after-restore hooks), next to the init the snapshot took off it.

    AWS's own restore (resuming the microVM) is not in it: it happens outside the process and cannot be measured
    here. The first event is the sample chat completion without a key: answered 401 by the key check, a trip
    through Mangum, the middleware and the key store that needs no model (inference is SageMaker's in this
    set-up). The second, ``..._first_store_request_ms``, is an authenticated read of a session that does not
    exist (404): the key, the rate limiter's DynamoDB bucket and the session store, each reconnecting after the
    snapshot; ``clawdbot.api.priming`` made their clients at init.
    """
    from clawdbot.local import invoke_function
    from clawdbot.testing.events import load_event

    session_read = keyed_session_read()
    restore, init, first, first_store = [], [], [], []
    for _ in range(max(1, runs // 2)):
        for event, durations in ((load_event("chat-completion"), first), (session_read, first_store)):
            result = invoke_function(REPO / "functions" / "chat_api", event, env=env, timeout_s=60,
                                     memory_mb=1024, snapstart=True)
            if result.restore_duration_ms is None or result.duration_ms is None:
                raise RuntimeError(f"chat_api did not restore:\n{result.logs[-3000:]}")
            status = result.json().get("statusCode")
            if status != (401 if durations is first else 404):
                raise RuntimeError(f"chat_api answered {status}:\n{result.logs[-3000:]}")
            restore.append(result.restore_duration_ms)
            init.append(result.init_duration_ms or 0.0)
            durations.append(result.duration_ms)
    print(f"chat_api with SnapStart: restore hooks {statistics.median(restore):.2f} ms (init "
          f"{statistics.median(init):.0f} ms moved to the publish); first request reading the stores "
          f"{statistics.median(first_store):.1f} ms", flush=True)
    return {"chat_api_snapstart_restore_hooks_ms": round(statistics.median(restore), 2),
            "chat_api_snapstart_init_at_publish_ms": round(statistics.median(init), 1),
            "chat_api_snapstart_first_invocation_ms": round(statistics.median(first), 1),
            "chat_api_snapstart_first_store_request_ms": round(statistics.median(first_store), 1)}


def sizes(scratch: Path) -> tuple[dict[str, Any], Path | None]:
    """Zipped and unzipped bytes of the layer and of each function, bundled by ``cdk/bundling.py``; and the
    layer's ``python/`` folder (``None`` if it could not be built)."""
    from cdk.node_banner import silence_end_of_life_banner

    silence_end_of_life_banner()  # before cdk.bundling starts jsii
    from cdk.bundling import BundlingError, FunctionBundling, LayerBundling, unzipped_size, zipped_size

    results: dict[str, Any] = {}
    tokenizer_dir = REPO / "models" / "clawdbot-tiny-chat"
    for name in FUNCTIONS:
        out = scratch / f"fn-{name}"
        FunctionBundling(REPO / "functions" / name, tokenizer_dir).try_bundle(str(out), None)  # type: ignore[arg-type]
        results[f"{name}_zipped_bytes"] = zipped_size(out)
        results[f"{name}_unzipped_bytes"] = unzipped_size(out)
    out = scratch / "layer"
    try:
        LayerBundling().try_bundle(str(out), None)  # type: ignore[arg-type]
    except BundlingError as exc:  # the first bundle needs the package index
        print(f"layer not bundled: {exc}", file=sys.stderr)
        results["layer_zipped_bytes"] = results["layer_unzipped_bytes"] = None
        return results, None
    results["layer_zipped_bytes"] = zipped_size(out)
    results["layer_unzipped_bytes"] = unzipped_size(out)
    return results, out / "python"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per handler")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="clawdbot-bench-coldstart-") as name:
        scratch = Path(name)
        results: dict[str, Any] = {}
        layer_python = None
        with contextlib.suppress(ModuleNotFoundError):  # aws-cdk-lib (the cdk extra) bundles; without it no sizes
            results, layer_python = sizes(scratch)
        blocked = not_in_layer(layer_python)
        results["packages_hidden_as_not_in_layer"] = blocked
        results |= cold_starts(args.runs, scratch, blocked)
    results = {
        "python_version": platform.python_version(), "machine": platform.machine(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "load_average_1min_start": round(load_start, 2), "load_average_1min_end": round(os.getloadavg()[0], 2),
        "chat_api_budget_ms": CHAT_API_BUDGET_MS, "wall_s": round(time.perf_counter() - started, 1), **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for name in FUNCTIONS:
        zipped = results.get(f"{name}_zipped_bytes")
        print(f"{name}: {results[f'{name}_cold_start_ms']} ms ({results[f'{name}_frameworks_import_ms']} ms importing "
              f"frameworks alone), {zipped} bytes zipped")
    print(f"layer: {results.get('layer_zipped_bytes')} bytes zipped; results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
