"""``clawdbot invoke``: run a Lambda function folder on a sample event locally, as ``sam local invoke`` would.

The function runs in a fresh process under AWS's runtime interface client against a local Runtime API
(:mod:`clawdbot.local`), so init, the context object, logs and error JSON are Lambda's own. The response
payload goes to stdout (pipe it to ``jq``); the function's log goes to stderr. Exit status: 0 on success, 1 when
the function failed (Lambda's error JSON is printed instead), 2 for a usage error.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "invoke", help="Invoke a Lambda function folder locally on a sample event.",
        description="Run FUNCTION_DIR's handler on EVENT_FILE in a fresh process through AWS's runtime "
                    "interface client (awslambdaric) and a local Lambda Runtime API; print the response "
                    "(or Lambda's error JSON) on stdout and the function's log on stderr.")
    parser.add_argument("function_dir", metavar="FUNCTION_DIR", help="Function folder, e.g. functions/chat_api.")
    parser.add_argument("event_file", metavar="EVENT_FILE",
                        help="Event JSON file, e.g. events/chat-completion.json (or a name in events/).")
    parser.add_argument("--handler", default="handler.handler",
                        help="MODULE.FUNCTION inside the folder (default handler.handler).")
    parser.add_argument("--env", action="append", default=[], metavar="K=V",
                        help="Environment variable for the function (repeatable). CLAWDBOT_* variables of "
                             "this shell are passed on too.")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="Function timeout in seconds (default 30); init gets Lambda's 10 s on top.")
    parser.add_argument("--memory", type=int, default=128, metavar="MB",
                        help="Memory size reported to the function (default 128; not enforced).")
    parser.add_argument("--function-name", help="Function name (default: the folder's name).")
    parser.add_argument("--snapstart", action="store_true",
                        help="Run as a SnapStart version: init and before-snapshot hooks, a restore, after-restore "
                             "hooks, then the event (the REPORT line gives the restore's duration).")
    parser.add_argument("--quiet", "-q", action="store_true", help="Do not print the function's log.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clawdbot.cli.main import CommandError
    from clawdbot.local import invoke_function
    from clawdbot.testing.events import load_event

    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--env expects K=V, got {item!r}")
        env[key] = value
    if args.timeout <= 0:
        raise CommandError(f"--timeout must be positive, got {args.timeout}")
    try:
        event = load_event(args.event_file)
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from exc

    def show(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        result = invoke_function(args.function_dir, event, handler=args.handler, env=env,
                                 timeout_s=args.timeout, memory_mb=args.memory,
                                 function_name=args.function_name, log=None if args.quiet else show,
                                 snapstart=args.snapstart)
    except (NotADirectoryError, ModuleNotFoundError) as exc:
        raise CommandError(str(exc)) from exc
    sys.stdout.write(result.payload.decode("utf-8", "replace") + "\n")
    sys.stdout.flush()
    return 0 if result.ok else 1
