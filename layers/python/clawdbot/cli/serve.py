"""``clawdbot serve``: the API on uvicorn with the configured (by default embedded) parts."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="Run the chat API locally (uvicorn).",
                            description="Serve the OpenAI-compatible chat API. Configuration comes from "
                                        "CLAWDBOT_* environment variables (see README).")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"),
                        help="Address to bind (default 127.0.0.1, or $HOST).")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")),
                        help="Port (default 8000, or $PORT).")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clawdbot.cli.main import CommandError

    try:
        import uvicorn
    except ModuleNotFoundError as exc:
        raise CommandError("serving needs the 'local' extra: pip install 'clawdbot[local]'") from exc
    if not 0 < args.port < 65536:
        raise CommandError(f"--port must be between 1 and 65535, got {args.port}")

    from pydantic import ValidationError

    from clawdbot.api.app import create_app
    from clawdbot.config.settings import Settings

    try:
        settings = Settings(bind_host=args.host)  # keys become mandatory when bound beyond loopback
    except ValidationError as exc:
        raise CommandError(f"invalid configuration:\n{exc}") from exc
    try:
        app = create_app(settings)
    except Exception as exc:
        # AWS SDK configuration problems (no region, no credentials, unreachable endpoint) are the user's to
        # fix: say which, without a traceback. Our own errors (ClawdbotError) are reported by main().
        if type(exc).__module__.split(".")[0] in ("botocore", "boto3", "redis"):
            raise CommandError(f"cannot reach the configured {settings.session_store} store: {exc}") from exc
        raise
    print(f"clawdbot: serving model '{app.state.resources.backend.model_id}' "
          f"(sessions: {settings.session_store}) on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
