"""API keys: generation, hashing, and the record a key store keeps.

Only a key's SHA-256 is ever stored. A key carries 256 bits of randomness, so a plain (unsalted, fast) hash is
enough: there is nothing to brute-force, and a fast hash keeps authentication a dictionary lookup. The
plaintext exists once, in the output of ``clawdbot keys create``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

#: Every key starts with this, so secret scanners and humans recognise one.
KEY_PREFIX = "cb-"
#: Characters of the plaintext kept for display (``keys list``): the prefix plus a few random ones.
DISPLAY_CHARS = 8


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-key limits; ``None`` means unlimited on that axis."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    daily_tokens: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.requests_per_minute is None and self.tokens_per_minute is None and self.daily_tokens is None

    def to_dict(self) -> dict[str, int | None]:
        return {"requests_per_minute": self.requests_per_minute, "tokens_per_minute": self.tokens_per_minute,
                "daily_tokens": self.daily_tokens}


#: Named presets; ``keys create --tier`` picks one and explicit ``--requests-per-minute`` etc. override it.
TIERS: dict[str, Limits] = {
    "free": Limits(requests_per_minute=20, tokens_per_minute=10_000, daily_tokens=100_000),
    "standard": Limits(requests_per_minute=60, tokens_per_minute=60_000, daily_tokens=2_000_000),
    "unlimited": Limits(),
}
DEFAULT_TIER = "standard"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What a store keeps about a key: never the key itself."""

    key_id: str
    key_hash: str
    name: str
    tier: str
    limits: Limits
    created_at: float
    #: The key's first characters, safe to show.
    display: str = ""
    revoked_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def revoked(self, at: float | None = None) -> ApiKey:
        return replace(self, revoked_at=at or time.time())

    def to_dict(self) -> dict[str, Any]:
        """The JSON form every engine stores (flat, so DynamoDB and Redis items stay readable)."""
        return {"key_id": self.key_id, "key_hash": self.key_hash, "name": self.name, "tier": self.tier,
                **self.limits.to_dict(), "created_at": self.created_at, "display": self.display,
                "revoked_at": self.revoked_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApiKey:
        def opt_int(name: str) -> int | None:
            value = data.get(name)
            return None if value is None else int(value)

        revoked = data.get("revoked_at")
        return cls(key_id=str(data["key_id"]), key_hash=str(data["key_hash"]), name=str(data["name"]),
                   tier=str(data.get("tier", DEFAULT_TIER)),
                   limits=Limits(opt_int("requests_per_minute"), opt_int("tokens_per_minute"),
                                 opt_int("daily_tokens")),
                   created_at=float(data["created_at"]), display=str(data.get("display", "")),
                   revoked_at=None if revoked is None else float(revoked))


def generate_key() -> str:
    """A new plaintext key: prefix + 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(plaintext: str) -> str:
    """The stored form of a key: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def hashes_match(stored_hash: str, presented_hash: str) -> bool:
    """Constant-time comparison, so response timing says nothing about how much of a hash matched."""
    return hmac.compare_digest(stored_hash.encode(), presented_hash.encode())


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def new_api_key(name: str, tier: str, limits: Limits, plaintext: str | None = None) -> tuple[ApiKey, str]:
    """A record and its plaintext (generated unless given, e.g. the deploy's key)."""
    plaintext = plaintext or generate_key()
    record = ApiKey(key_id=new_key_id(), key_hash=hash_key(plaintext), name=name, tier=tier, limits=limits,
                    created_at=time.time(), display=plaintext[:DISPLAY_CHARS] + "…")
    return record, plaintext


def looks_like_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
