"""``clawdbot deploy``: the whole AWS stack from three inputs — model path, API key, resource quota.

It checks what can be checked locally (so a typo fails in a second, not in a CloudFormation rollback), then runs
the repository's pinned CDK CLI: ``npx cdk deploy`` with the inputs as context values (``-c model=...``). The API
key is the one input that never becomes context — context lands in ``cdk.out`` — and goes to CloudFormation as the
stack's NoEcho ``ApiKey`` parameter, from which the stack creates the Secrets Manager secret.

For an ``s3://.../model.tar.gz`` model, the Lambdas still need the tokenizer files locally at synth; unless
``--tokenizer`` names a folder, they are streamed out of the archive once (boto3, the deploying credentials).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

logger = logging.getLogger(__name__)

PRESETS = ("small", "medium", "large")
#: Must match the stack's ``ApiKey`` parameter (cdk/security.py): printable ASCII, no spaces, 16-256 long.
API_KEY_RE = re.compile(r"^[!-~]{16,256}$")
S3_MODEL_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>.+\.tar\.gz)$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json")
MASK = "****"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "deploy", help="Deploy the serverless stack to AWS (runs the pinned CDK CLI).",
        description="Deploy clawdbot to AWS: API Gateway + Lambda + SageMaker + DynamoDB/ElastiCache + SQS. "
                    "Needs AWS credentials, Node (npm ci) and Docker for the inference image. Presets and "
                    "costs: docs/deploy.md.")
    parser.add_argument("--model", required=True,
                        help="Local model folder (packaged and uploaded) or s3://BUCKET/KEY.tar.gz.")
    parser.add_argument("--api-key", required=True,
                        help="The bearer key clients will use (16-256 printable characters); '-' reads it from "
                             "standard input, keeping it out of shell history.")
    parser.add_argument("--quota", default="small",
                        help="small | medium | large | path of a JSON quota file (default: small).")
    parser.add_argument("--session-store", choices=("dynamodb", "redis"), default="dynamodb")
    parser.add_argument("--redis-mode", choices=("serverless", "cluster"), default="serverless")
    parser.add_argument("--tokenizer", help="Folder with tokenizer.json etc. for an s3:// model (else extracted).")
    parser.add_argument("--stack-name", default="Clawdbot")
    parser.add_argument("--alarm-email", help="Subscribe this address to the alarm topic.")
    parser.add_argument("--yes", action="store_true",
                        help="Do not ask to confirm IAM/security-group changes (--require-approval never).")
    parser.add_argument("--synth-only", action="store_true",
                        help="Validate the inputs by synthesizing the stack (offline); deploy nothing.")
    parser.add_argument("--output", help="Cloud assembly folder (default cdk.out).")
    parser.add_argument("--dry-run", action="store_true", help="Print the CDK command (key masked) and stop.")
    parser.set_defaults(func=run)


def find_project_root(start: Path | None = None) -> Path:
    """The checkout holding ``cdk.json``: the CDK app and its pinned CLI live there, not in the installed package."""
    from clawdbot.cli.main import CommandError

    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "cdk.json").is_file():
            return folder
    raise CommandError("clawdbot deploy runs from the clawdbot checkout: no cdk.json in "
                       f"{here} or its parents")


def read_api_key(value: str) -> str:
    from clawdbot.cli.main import CommandError

    key = sys.stdin.readline().strip() if value == "-" else value
    if not API_KEY_RE.match(key):
        spaces = ", with whitespace" if re.search(r"\s", key) else ""
        raise CommandError(f"--api-key: expected 16-256 printable ASCII characters without spaces "
                           f"(got {len(key)} characters{spaces})")
    return key


def check_model(value: str, root: Path) -> str:
    """An absolute local folder with an ``*.onnx`` file, or a well-formed ``s3://.../*.tar.gz`` URI."""
    from clawdbot.cli.main import CommandError

    if value.startswith("s3://"):
        if not S3_MODEL_RE.match(value):
            raise CommandError(f"--model: an S3 model must be s3://BUCKET/KEY.tar.gz (got {value!r})")
        return value
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not path.is_dir():
        raise CommandError(f"--model: expected a model folder or s3://BUCKET/KEY.tar.gz; no folder {path}")
    if not any(path.glob("*.onnx")):
        raise CommandError(f"--model: {path} holds no *.onnx file (export the model first)")
    return str(path)


def check_quota(value: str) -> str:
    from clawdbot.cli.main import CommandError

    if value in PRESETS:
        return value
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise CommandError(f"--quota: expected {' | '.join(PRESETS)} or a JSON quota file; no file {path}")
    return str(path)


def fetch_tokenizer(s3_uri: str, dest: Path) -> Path:
    """Stream the archive once and keep only the tokenizer files (any depth); why: synth must stay offline."""
    import tarfile

    import boto3

    from clawdbot.cli.main import CommandError

    if all((dest / name).is_file() for name in TOKENIZER_FILES[:2]):
        return dest
    match = S3_MODEL_RE.match(s3_uri)
    assert match is not None
    body = boto3.client("s3").get_object(Bucket=match["bucket"], Key=match["key"])["Body"]
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=body, mode="r|gz") as archive:
        for member in archive:
            name = Path(member.name).name
            if member.isfile() and name in TOKENIZER_FILES:
                extracted = archive.extractfile(member)
                if extracted is not None:
                    (dest / name).write_bytes(extracted.read())
    if not (dest / "tokenizer.json").is_file():
        raise CommandError(f"--model: {s3_uri} holds no tokenizer.json; pass --tokenizer FOLDER")
    return dest


def cdk_command(args: argparse.Namespace, *, model: str, quota: str, tokenizer: str | None,
                api_key: str | None) -> list[str]:
    """The ``npx cdk`` argv; ``api_key=None`` leaves the parameter out (synth needs none)."""
    verb = "synth" if args.synth_only else "deploy"
    context = {"model": model, "quota": quota, "sessionStore": args.session_store, "redisMode": args.redis_mode,
               "stackName": args.stack_name, "tokenizerDir": tokenizer, "alarmEmail": args.alarm_email}
    command = ["npx", "--no-install", "cdk", verb, args.stack_name, "--no-notices"]
    for name, value in context.items():
        if value is not None:
            command += ["-c", f"{name}={value}"]
    if args.output:
        command += ["--output", args.output]
    if verb == "synth":
        command += ["--quiet"]
    else:
        command += ["--require-approval", "never" if args.yes else "broadening"]
        if api_key is not None:
            command += ["--parameters", f"{args.stack_name}:ApiKey={api_key}"]
    return command


def run(args: argparse.Namespace) -> int:
    from clawdbot.cli.main import CommandError

    root = find_project_root()
    api_key = read_api_key(args.api_key)
    model = check_model(args.model, root)
    quota = check_quota(args.quota)
    tokenizer = args.tokenizer
    if tokenizer is not None:
        tokenizer = str(Path(tokenizer).expanduser().resolve())
    elif model.startswith("s3://") and not args.dry_run:
        cache = root / ".clawdbot" / "deploy" / re.sub(r"[^A-Za-z0-9]+", "-", model)[-80:]
        tokenizer = str(fetch_tokenizer(model, cache))
    command = cdk_command(args, model=model, quota=quota, tokenizer=tokenizer, api_key=api_key)
    shown = [part.replace(api_key, MASK) for part in command]
    if args.dry_run:
        print(shlex.join(shown))
        return 0
    if not (root / "node_modules" / ".bin" / "cdk").exists():
        raise CommandError("the pinned CDK CLI is not installed: run 'npm ci' (or 'make test') in "
                           f"{root} first")
    env = {**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true"}
    logger.debug("running %s", shlex.join(shown))
    print(f"clawdbot: {shlex.join(shown)}", file=sys.stderr, flush=True)
    completed = subprocess.run(command, cwd=root, env=env, check=False)
    if completed.returncode != 0:
        raise CommandError(f"cdk {'synth' if args.synth_only else 'deploy'} failed (exit {completed.returncode})",
                           code=completed.returncode)
    return 0
