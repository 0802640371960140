"""``clawdbot keys create|list|revoke|import``: API keys in the configured store (``CLAWDBOT_SESSION_STORE``)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from clawdbot.traffic.keys import ApiKey
    from clawdbot.traffic.keystore.base import KeyStore


def register(sub: argparse._SubParsersAction) -> None:
    from clawdbot.traffic.keys import DEFAULT_TIER, TIERS

    parser = sub.add_parser("keys", help="Create, list and revoke API keys.",
                            description="API keys live in the configured store (SQLite in CLAWDBOT_DATA_DIR, "
                                        "DynamoDB or Redis); only their SHA-256 is stored.")
    actions = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    actions.required = True

    create = actions.add_parser("create", help="Create a key; prints it once, on the last line.")
    create.add_argument("--name", required=True, help="A label for the key (who or what uses it).")
    create.add_argument("--tier", default=DEFAULT_TIER, choices=sorted(TIERS),
                        help=f"Preset limits (default {DEFAULT_TIER}); the options below override it.")
    create.add_argument("--requests-per-minute", type=int, metavar="R", help="0 for unlimited.")
    create.add_argument("--tokens-per-minute", type=int, metavar="T", help="0 for unlimited.")
    create.add_argument("--daily-tokens", type=int, metavar="D", help="Daily token quota; 0 for unlimited.")
    create.set_defaults(func=run_create)

    listing = actions.add_parser("list", help="List keys (never the keys themselves).")
    listing.add_argument("--all", action="store_true", help="Include revoked keys.")
    listing.add_argument("--json", action="store_true", help="One JSON object per line.")
    listing.set_defaults(func=run_list)

    revoke = actions.add_parser("revoke", help="Revoke a key by id or name.")
    revoke.add_argument("key", help="Key id (key_...) or the name of exactly one active key.")
    revoke.set_defaults(func=run_revoke)

    imp = actions.add_parser("import", help="Store a key given only its SHA-256 (e.g. the deploy's key).")
    imp.add_argument("--name", required=True)
    imp.add_argument("--sha256", required=True, help="Hex SHA-256 of the key.")
    imp.add_argument("--tier", default=DEFAULT_TIER, choices=sorted(TIERS))
    imp.set_defaults(func=run_import)


def _store() -> KeyStore:
    from pydantic import ValidationError

    from clawdbot.cli.main import CommandError
    from clawdbot.config.settings import Settings
    from clawdbot.traffic.factory import build_key_store

    try:
        return build_key_store(Settings())
    except ValidationError as exc:
        raise CommandError(f"invalid configuration:\n{exc}") from exc


def _row(key: ApiKey) -> str:
    def lim(v: int | None) -> str:
        return "-" if v is None else str(v)

    created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(key.created_at))
    state = "active" if key.active else "revoked"
    return (f"{key.key_id:<21} {key.name[:24]:<24} {key.tier:<9} {lim(key.limits.requests_per_minute):>6} "
            f"{lim(key.limits.tokens_per_minute):>8} {lim(key.limits.daily_tokens):>10}  {created}  {state:<7} "
            f"{key.display}")


def run_create(args: argparse.Namespace) -> int:
    from clawdbot.traffic.keystore.base import resolve_limits

    store = _store()
    limits = resolve_limits(args.tier, args.requests_per_minute, args.tokens_per_minute, args.daily_tokens)
    record, plaintext = store.create(args.name, tier=args.tier, limits=limits)
    print(f"Created {record.key_id} '{record.name}' (tier {record.tier}; requests/min "
          f"{limits.requests_per_minute or 'unlimited'}, tokens/min {limits.tokens_per_minute or 'unlimited'}, "
          f"daily tokens {limits.daily_tokens or 'unlimited'}).")
    print("Store this key now: it cannot be shown again.")
    print(plaintext)
    return 0


def run_list(args: argparse.Namespace) -> int:
    keys = _store().list(include_revoked=args.all)
    if args.json:
        for key in keys:
            print(json.dumps({k: v for k, v in key.to_dict().items() if k != "key_hash"}))
        return 0
    print(f"{'ID':<21} {'NAME':<24} {'TIER':<9} {'RPM':>6} {'TPM':>8} {'DAILY':>10}  {'CREATED (UTC)':<16}  "
          f"{'STATE':<7} KEY")
    for key in keys:
        print(_row(key))
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    key = _store().revoke(args.key)
    print(f"Revoked {key.key_id} '{key.name}'.")
    return 0


def run_import(args: argparse.Namespace) -> int:
    key = _store().import_hash(args.sha256, name=args.name, tier=args.tier)
    print(f"{key.key_id} '{key.name}' ({'active' if key.active else 'revoked'}).")
    return 0
