"""The Redis session store (ElastiCache, or any Redis 6.2+), standalone or cluster mode.

Keys of one session (``{<id>}`` is a hash tag: both keys land in one slot, so one Lua script may touch both on a
cluster-mode endpoint)::

    <prefix>{<id>}:meta   hash   created_at, updated_at, next_seq, owner?, expires_at?, a:<attribute> = JSON
    <prefix>{<id>}:log    list   one JSON document per entry; an entry's index in the list is its ``seq``

Every mutation is one Lua script, so it is atomic without WATCH/MULTI round trips: the append script reads
``next_seq``, pushes the entries and bumps ``next_seq`` with nothing in between, which is what keeps 50 racing
turns gap-free. Reads run as scripts too because they slide the TTL (``PEXPIREAT`` on both keys at
``expires_at``), so Redis itself forgets an idle session at the moment the base class starts hiding it.

Attributes are one hash field each, so merging them is an ``HSET``, never a read-modify-write.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from clawdbot.sessions.base import SessionStore, StoreConfig
from clawdbot.sessions.exceptions import SessionExistsError, SessionNotFoundError, StoreUnavailableError
from clawdbot.sessions.types import EntryPage, SessionMeta, TranscriptEntry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from clawdbot.sessions.types import NewEntry

logger = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "clawdbot:"
_ATTR = "a:"


class RedisClient(Protocol):
    """What the store needs of ``redis.Redis`` / ``redis.cluster.RedisCluster`` (``decode_responses=True``)."""

    def register_script(self, script: str) -> Any: ...
    def hgetall(self, name: str) -> Any: ...
    def close(self) -> None: ...


# Shared by every script: KEYS[1] = meta hash, KEYS[2] = entry list. A session whose expires_at has passed is
# deleted on the spot (Redis' own expiry may lag by milliseconds) and treated as absent.
_PRELUDE = """
local function live(now)
  if redis.call('EXISTS', KEYS[1]) == 0 then return false end
  local exp = redis.call('HGET', KEYS[1], 'expires_at')
  if exp and tonumber(exp) <= tonumber(now) then
    redis.call('DEL', KEYS[1], KEYS[2])
    return false
  end
  return true
end
local function set_expiry(expires_at)
  if expires_at == '' then
    redis.call('HDEL', KEYS[1], 'expires_at')
    redis.call('PERSIST', KEYS[1])
    redis.call('PERSIST', KEYS[2])
  else
    redis.call('HSET', KEYS[1], 'expires_at', expires_at)
    redis.call('PEXPIREAT', KEYS[1], tonumber(expires_at) * 1000)
    redis.call('PEXPIREAT', KEYS[2], tonumber(expires_at) * 1000)
  end
end
local function init(now, has_owner, owner)
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'created_at', now, 'updated_at', now, 'next_seq', 0)
  if has_owner == '1' then redis.call('HSET', KEYS[1], 'owner', owner) end
end
"""

# ARGV: now, expires_at|'', has_owner, owner, then attribute field/value pairs. Returns 0 if a live one exists.
_CREATE = _PRELUDE + """
if live(ARGV[1]) then return 0 end
init(ARGV[1], ARGV[3], ARGV[4])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
set_expiry(ARGV[2])
return 1
"""

# ARGV: now, expires_at|'', create, has_owner, owner, then one JSON entry each. Returns the first seq, or -1.
_APPEND = _PRELUDE + """
if not live(ARGV[1]) then
  if ARGV[3] ~= '1' then return -1 end
  init(ARGV[1], ARGV[4], ARGV[5])
end
local start = tonumber(redis.call('HGET', KEYS[1], 'next_seq'))
local len = redis.call('LLEN', KEYS[2])
if len ~= start then
  return redis.error_reply('clawdbot: session log has ' .. len .. ' entries but next_seq is ' .. start)
end
for i = 6, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('HSET', KEYS[1], 'next_seq', start + #ARGV - 5, 'updated_at', ARGV[1])
set_expiry(ARGV[2])
return start
"""

# ARGV: now, expires_at|'', first index, last index (LRANGE's). Returns {next_seq, entries} or {-1, {}}.
_READ = _PRELUDE + """
if not live(ARGV[1]) then return {-1, {}} end
if ARGV[2] ~= '' then set_expiry(ARGV[2]) end
local n = tonumber(redis.call('HGET', KEYS[1], 'next_seq'))
return {n, redis.call('LRANGE', KEYS[2], ARGV[3], ARGV[4])}
"""

# ARGV: now. Returns 1 if a live session was deleted.
_DELETE = _PRELUDE + """
local existed = live(ARGV[1])
redis.call('DEL', KEYS[1], KEYS[2])
if existed then return 1 end
return 0
"""

# ARGV: now, then attribute field/value pairs. Returns the updated hash (flat), or an empty list if absent.
_UPDATE = _PRELUDE + """
if not live(ARGV[1]) then return {} end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _meta(session_id: str, fields: dict[str, str]) -> SessionMeta:
    return SessionMeta(
        session_id=session_id,
        created_at=float(fields["created_at"]),
        updated_at=float(fields["updated_at"]),
        next_seq=int(fields["next_seq"]),
        owner=fields.get("owner"),
        expires_at=int(fields["expires_at"]) if "expires_at" in fields else None,
        attributes={k[len(_ATTR):]: json.loads(v) for k, v in fields.items() if k.startswith(_ATTR)},
    )


def _entry(seq: int, raw: Any) -> TranscriptEntry:
    doc = json.loads(_text(raw))
    return TranscriptEntry(seq=seq, role=doc["r"], content=doc["c"], created_at=doc["t"], turn_id=doc.get("u"),
                           attributes=doc.get("a", {}))


def _attr_args(attributes: dict[str, Any]) -> list[str]:
    return [x for k, v in attributes.items() for x in (_ATTR + k, _dumps(v))]


class RedisSessionStore(SessionStore):
    """Sessions in Redis. ``client``: a ``redis.Redis`` or ``redis.cluster.RedisCluster``; use ``from_url``."""

    def __init__(self, client: RedisClient, config: StoreConfig | None = None, *,
                 key_prefix: str = DEFAULT_KEY_PREFIX) -> None:
        super().__init__(config)
        if "{" in key_prefix or "}" in key_prefix:
            raise ValueError("key_prefix must not contain braces: the session id is the key's hash tag")
        self.client = client
        self.key_prefix = key_prefix
        self._create_script = client.register_script(_CREATE)
        self._append_script = client.register_script(_APPEND)
        self._read_script = client.register_script(_READ)
        self._delete_script = client.register_script(_DELETE)
        self._update_script = client.register_script(_UPDATE)

    @classmethod
    def from_url(cls, url: str, config: StoreConfig | None = None, *, cluster: bool | None = None,
                 key_prefix: str = DEFAULT_KEY_PREFIX) -> RedisSessionStore:
        """Connect to ``redis://`` or ``rediss://`` (TLS, as ElastiCache in-transit encryption requires; a
        password/ACL user goes in the URL). ``cluster=None`` asks the server whether it runs in cluster mode."""
        import redis
        from redis.cluster import RedisCluster

        options: dict[str, Any] = {"decode_responses": True, "socket_timeout": 5, "socket_connect_timeout": 3}
        if cluster is None:
            probe = redis.Redis.from_url(url, **options)
            try:
                cluster = int(probe.info("cluster").get("cluster_enabled", 0)) == 1
            except redis.exceptions.ConnectionError as exc:
                raise StoreUnavailableError(f"Redis unreachable: {exc}") from exc
            except redis.exceptions.ResponseError:  # INFO disabled (some managed offerings): assume standalone
                cluster = False
            finally:
                probe.close()
        client: RedisClient
        if cluster:
            client = RedisCluster.from_url(url, **options)
        else:
            client = redis.Redis.from_url(url, **options, health_check_interval=30)
        logger.debug("Redis session store (cluster=%s)", cluster)
        return cls(client, config, key_prefix=key_prefix)

    def close(self) -> None:
        self.client.close()

    # ----------------------------------------------------------------- helpers
    def _keys(self, session_id: str) -> list[str]:
        base = f"{self.key_prefix}{{{session_id}}}"
        return [f"{base}:meta", f"{base}:log"]

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """An unreachable, failing-over or loading server is a 503, not a 500."""
        from redis import exceptions as rx

        try:
            yield
        except (rx.ConnectionError, rx.TimeoutError, rx.ClusterDownError, rx.ReadOnlyError,
                rx.TryAgainError) as exc:
            raise StoreUnavailableError(f"Redis unavailable: {type(exc).__name__}") from exc

    @staticmethod
    def _exp(expires_at: int | None) -> str:
        return "" if expires_at is None else str(expires_at)

    def _run(self, script: Any, session_id: str, *args: Any) -> Any:
        with self._errors():
            return script(keys=self._keys(session_id), args=list(args))

    # ----------------------------------------------------------------- engine primitives
    def _create(self, session_id: str, owner: str | None, attributes: dict[str, Any], now: float,
                expires_at: int | None) -> SessionMeta:
        created = self._run(self._create_script, session_id, repr(now), self._exp(expires_at),
                            "0" if owner is None else "1", owner or "", *_attr_args(attributes))
        if not int(created):
            raise SessionExistsError(f"Session '{session_id}' already exists.", param="session_id")
        return SessionMeta(session_id=session_id, created_at=now, updated_at=now, next_seq=0, owner=owner,
                           expires_at=expires_at, attributes=attributes)

    def _get_meta(self, session_id: str) -> SessionMeta | None:
        with self._errors():
            fields = self.client.hgetall(self._keys(session_id)[0])
        if not fields:
            return None
        return _meta(session_id, {_text(k): _text(v) for k, v in fields.items()})

    def _append(self, session_id: str, entries: list[NewEntry], now: float, expires_at: int | None,
                create: bool, owner: str | None) -> list[TranscriptEntry]:
        docs = []
        for e in entries:
            doc: dict[str, Any] = {"r": e.role, "c": e.content, "t": now}
            if e.turn_id is not None:
                doc["u"] = e.turn_id
            if e.attributes:
                doc["a"] = e.attributes
            docs.append(_dumps(doc))
        start = int(self._run(self._append_script, session_id, repr(now), self._exp(expires_at),
                              "1" if create else "0", "0" if owner is None else "1", owner or "", *docs))
        if start < 0:
            raise SessionNotFoundError(f"No session with id '{session_id}'.", param="session_id")
        return [
            TranscriptEntry(seq=start + i, role=e.role, content=e.content, created_at=now, turn_id=e.turn_id,
                            attributes=dict(e.attributes))
            for i, e in enumerate(entries)
        ]

    def _read_range(self, session_id: str, first: int, last: int) -> tuple[int, list[Any]]:
        now = time.time()
        next_seq, raw = self._run(self._read_script, session_id, repr(now), self._exp(self._expiry(now)),
                                  first, last)
        return int(next_seq), raw

    def _read(self, session_id: str, after: int | None, limit: int) -> EntryPage:
        first = 0 if after is None else after + 1
        next_seq, raw = self._read_range(session_id, first, first + limit - 1)
        page = [_entry(first + i, r) for i, r in enumerate(raw)]
        more = bool(page) and page[-1].seq + 1 < next_seq
        return EntryPage(entries=page, next_after=page[-1].seq if more else None)

    def _read_recent(self, session_id: str, limit: int) -> list[TranscriptEntry]:
        next_seq, raw = self._read_range(session_id, -limit, -1)
        if next_seq < 0:
            return []
        first = next_seq - len(raw)
        return [_entry(first + i, r) for i, r in enumerate(raw)]

    def _delete(self, session_id: str) -> bool:
        return bool(int(self._run(self._delete_script, session_id, repr(time.time()))))

    def _update_attributes(self, session_id: str, attributes: dict[str, Any], now: float) -> SessionMeta:
        flat = self._run(self._update_script, session_id, repr(now), *_attr_args(attributes))
        if not flat:
            raise SessionNotFoundError(f"No session with id '{session_id}'.", param="session_id")
        fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
        return _meta(session_id, fields)
