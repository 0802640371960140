"""Entry point of the ``clawdbot`` console script.

Each command module exposes ``register(subparsers)`` and sets ``func`` on its parser; heavy imports happen
inside the command functions, so ``clawdbot --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from clawdbot.exceptions import ClawdbotError

#: Modules under ``clawdbot.cli`` that contribute sub-commands, in help order.
COMMAND_MODULES = ("serve", "invoke", "model", "keys", "ab", "deploy", "cost")


class CommandError(Exception):
    """A user-facing CLI failure: printed as ``clawdbot: error: ...`` with exit status 2 (or ``code``)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clawdbot", description="An OpenAI-compatible chat assistant.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"clawdbot.cli.{name}")
        except ModuleNotFoundError as exc:  # a command module not written yet must not break the others
            if exc.name != f"clawdbot.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except CommandError as exc:
        print(f"clawdbot: error: {exc}", file=sys.stderr)
        return exc.code
    except ClawdbotError as exc:
        print(f"clawdbot: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    # ``python -m clawdbot.cli.main`` runs this file as ``__main__``, a second copy of the module: the commands raise
    # the package module's CommandError, which this copy's ``except`` would not catch (a traceback, not a message).
    from clawdbot.cli.main import main as package_main

    sys.exit(package_main())
