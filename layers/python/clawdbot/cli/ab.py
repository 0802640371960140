"""``clawdbot ab report|export``: the A/B report from the local store or from exported session data."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from clawdbot.traffic.report import SessionRecord


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("ab", help="A/B test report and export.",
                            description="Per variant: turns, conversations, completed conversations, p50/p95 "
                                        "latency, tokens, mean satisfaction with a 95%% confidence interval, and "
                                        "Welch's t-test against the control.")
    actions = parser.add_subparsers(dest="ab_command", metavar="ACTION")
    actions.required = True

    report = actions.add_parser("report", help="Print the report.")
    report.add_argument("--input", metavar="FILE",
                        help="Exported sessions (JSON Lines or a JSON array of GET /v1/sessions/{id} objects); "
                             "default: the local store in CLAWDBOT_DATA_DIR.")
    report.add_argument("--data-dir", metavar="DIR", help="Local data directory (default CLAWDBOT_DATA_DIR).")
    report.add_argument("--control", help="Control variant (default: the first configured one).")
    report.add_argument("--idle-seconds", type=float,
                        help="Idle time after which a conversation counts as completed "
                             "(default CLAWDBOT_CONVERSATION_IDLE_SECONDS).")
    report.add_argument("--json", action="store_true", help="Machine-readable output.")
    report.set_defaults(func=run_report)

    export = actions.add_parser("export", help="Write the local store's sessions as JSON Lines.")
    export.add_argument("--data-dir", metavar="DIR")
    export.add_argument("--out", metavar="FILE", help="Output file (default stdout).")
    export.set_defaults(func=run_export)


def _local(data_dir: str | None) -> list[SessionRecord]:
    from clawdbot.cli.main import CommandError
    from clawdbot.config.settings import Settings
    from clawdbot.traffic.report import load_sqlite

    try:
        return load_sqlite(data_dir or Settings().data_dir)
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from exc


def run_report(args: argparse.Namespace) -> int:
    from clawdbot.cli.main import CommandError
    from clawdbot.config.settings import Settings
    from clawdbot.traffic.report import build_report, load_export, render

    settings = Settings()
    if args.input:
        try:
            records = load_export(args.input)
        except (OSError, ValueError, KeyError) as exc:
            raise CommandError(f"cannot read {args.input}: {exc}") from exc
    else:
        records = _local(args.data_dir)
    idle = settings.conversation_idle_seconds if args.idle_seconds is None else args.idle_seconds
    report = build_report(records, variants=[v.name for v in settings.ab_variants], control=args.control,
                          idle_seconds=idle)
    print(json.dumps(report.to_dict(), indent=2) if args.json else render(report))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from clawdbot.traffic.report import export_objects

    lines = [json.dumps(obj, ensure_ascii=False) for obj in export_objects(_local(args.data_dir))]
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + ("\n" if lines else ""))
    else:
        sys.stdout.write("\n".join(lines) + ("\n" if lines else ""))
    return 0
