"""Buckets in Redis, one hash per key, updated by a Lua script so each admit/charge is one atomic round trip.

The script is ``base.admit``/``base.charge`` transcribed; it reads the clock from Redis (``TIME``), so servers
with skewed clocks still share one notion of "now". Hash ``clawdbot:rl:<key id>`` holds the levels ``r`` and
``t``, the update time ``u``, the UTC day ``d`` and that day's tokens ``dt``; it expires after two idle days.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clawdbot.traffic.ratelimit.base import BucketState, RateLimiter, _decision

if TYPE_CHECKING:
    from redis import Redis

    from clawdbot.traffic.keys import Limits
    from clawdbot.traffic.ratelimit.base import Decision

KEY_PREFIX = "clawdbot:rl:"

# ARGV: rpm, tpm, daily (0 = unlimited), op ("admit" | "charge"), tokens to charge.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm, daily = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local op, cost = ARGV[4], tonumber(ARGV[5])
local today = math.floor(now / 86400)
local v = redis.call('HMGET', KEYS[1], 'r', 't', 'u', 'd', 'dt')
local r, tk, u, d, dt
if not v[1] then
  r, tk, u, d, dt = rpm, tpm, now, today, 0
else
  r, tk, u, d, dt = tonumber(v[1]), tonumber(v[2]), tonumber(v[3]), tonumber(v[4]), tonumber(v[5])
  local elapsed = math.max(0, now - u)
  r = math.min(rpm, r + elapsed * rpm / 60)
  tk = math.min(tpm, tk + elapsed * tpm / 60)
  if d ~= today then d, dt = today, 0 end
  u = math.max(now, u)
end
local reason, retry = '', 0
if op == 'charge' then
  if tpm > 0 then tk = tk - cost end
  dt = dt + cost
else
  if daily > 0 and dt >= daily then reason, retry = 'daily_tokens', (d + 1) * 86400 - now
  elseif rpm > 0 and r < 1 then reason, retry = 'requests', (1 - r) * 60 / rpm
  elseif tpm > 0 and tk < 1 then reason, retry = 'tokens', (1 - tk) * 60 / tpm end
  if reason == '' and rpm > 0 then r = r - 1 end
end
if op == 'charge' or reason == '' then
  redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(tk), 'u', tostring(u), 'd', tostring(d),
             'dt', tostring(dt))
  redis.call('EXPIRE', KEYS[1], 172800)
end
return {reason, tostring(retry), tostring(r), tostring(tk), tostring(u), tostring(d), tostring(dt)}
"""


class RedisRateLimiter(RateLimiter):
    blocking = True

    def __init__(self, client: Redis, *, key_prefix: str = KEY_PREFIX) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self._script = client.register_script(_SCRIPT)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRateLimiter:
        import redis

        return cls(redis.Redis.from_url(url, decode_responses=True), **kwargs)

    def _run(self, key_id: str, limits: Limits, op: str, tokens: int) -> list[str]:
        args = [limits.requests_per_minute or 0, limits.tokens_per_minute or 0, limits.daily_tokens or 0, op, tokens]
        return [v.decode() if isinstance(v, bytes) else str(v)
                for v in self._script(keys=[self.key_prefix + key_id], args=args)]

    def _admit(self, key_id: str, limits: Limits) -> Decision:
        reason, retry, r, tk, u, d, dt = self._run(key_id, limits, "admit", 0)
        state = BucketState(float(r), float(tk), float(u), int(float(d)), int(float(dt)))
        return _decision(state, limits, reason or None, float(retry))

    def _charge(self, key_id: str, limits: Limits, tokens: int) -> None:
        self._run(key_id, limits, "charge", tokens)

    def state(self, key_id: str) -> BucketState | None:
        """The stored state (for tests and operators)."""
        raw = self.client.hmget(self.key_prefix + key_id, ["r", "t", "u", "d", "dt"])
        if raw[0] is None:
            return None
        r, tk, u, d, dt = (float(x) for x in raw)
        return BucketState(r, tk, u, int(d), int(dt))

    def close(self) -> None:
        self.client.close()
