"""Request rate limits kept in Redis, shared by every gateway process.

Fixed one-second windows: a counter per (scope, subject, second) that expires
with its window. It is a deliberately simple scheme: at a window's edge a
client may send up to twice its limit within a second, which is harmless for
protecting the gateways and costs one round trip per check. A bearer request's
session is read in that same round trip (``RateLimiter.session``): one Lua script
reads the session and counts the request against its address and its user.
Under load the checks of many requests share a round trip (``ScriptBatches``).

Limits (requests per second) come from the environment, so an operator can
raise them for load tests without a rebuild:

- ``BITEX_RATE_IP``: every request, per client address (default 2000);
- ``BITEX_RATE_KEY``: authenticated requests, per API key or session user (default 500);
- ``BITEX_RATE_AUTH``: registrations and logins, per client address (default 20),
  since each costs an argon2 hash.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from infra.redis_keys import RedisKeys


class RateLimited(Exception):
    """Too many requests: answer 429 with ``Retry-After``."""

    def __init__(self, scope: str, limit: int, retry_after: int) -> None:
        super().__init__(f"more than {limit} requests per second ({scope}); retry after a pause")
        self.scope = scope
        self.limit = limit
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Limits:
    per_ip: int = 2000
    per_key: int = 500
    auth_per_ip: int = 20

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        e = os.environ if env is None else env
        d = cls()
        return cls(
            per_ip=int(e.get("BITEX_RATE_IP", d.per_ip)),
            per_key=int(e.get("BITEX_RATE_KEY", d.per_key)),
            auth_per_ip=int(e.get("BITEX_RATE_AUTH", d.auth_per_ip)),
        )


COUNTER_SECONDS = 2
"""How long a window's counter lives: past its own second, then it goes."""

_COUNT = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[1])
end
return counts
"""
"""Bump each counter in KEYS (each expiring in ARGV[1] s); answer their counts in order."""

_SESSION_AND_COUNT = """
local session = redis.call('GET', KEYS[1])
local by_address = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
local by_user = false
if session then
  local ok, fields = pcall(cjson.decode, session)
  if ok and type(fields) == 'table' and type(fields.user_id) == 'string' then
    local key = ARGV[2] .. 'user:' .. fields.user_id .. ARGV[3]
    by_user = redis.call('INCR', key)
    redis.call('EXPIRE', key, ARGV[1])
  end
end
return {session, by_address, by_user}
"""
"""Read the session at KEYS[1] and bump the address's counter, KEYS[2]; if the session
names a user, bump that user's counter too (named ARGV[2] .. 'user:' .. user_id ..
ARGV[3]: the script learns the user only here). Answers the session (nil if none),
the address's count and the user's (nil if not counted)."""


_BATCHED = """
local function call(KEYS, ARGV)
%s
end
local calls = tonumber(ARGV[1])
local replies = {}
local key_at, arg_at = 0, 1 + 2 * calls
for i = 1, calls do
  local key_count, arg_count = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local keys, args = {}, {}
  for j = 1, key_count do keys[j] = KEYS[key_at + j] end
  for j = 1, arg_count do args[j] = ARGV[arg_at + j] end
  key_at, arg_at = key_at + key_count, arg_at + arg_count
  local ok, reply = pcall(call, keys, args)
  if not ok and not (type(reply) == 'table' and reply.err) then
    reply = redis.error_reply(tostring(reply))
  elseif reply == nil then
    reply = false
  end
  replies[i] = reply
end
return replies
"""
"""Runs a script (the ``%s``) once per call of a batch, each with its own KEYS and ARGV:
ARGV[1] is the number of calls, then each call's key and argument counts, then their
arguments; KEYS holds the calls' keys in order. Answers each call's reply, or its error."""


class ScriptBatches:
    """Runs a Lua script; the calls made in one event-loop turn go to Redis together.

    Under load many requests reach their Redis step in the same turn, and each
    round trip costs the gateway more CPU (a pooled connection, a write, a read,
    their timeouts) than the script costs Redis. So a call waits for the end of
    the turn, and then all the turn's calls go as one ``EVAL`` of the script
    wrapped to run once per call (one reply to read, not one per call); each
    call gets its own reply (or its own error). The script goes as ``EVAL``
    (Redis caches it by its digest), so a restarted Redis needs no reload.
    """

    def __init__(self, redis: aioredis.Redis, script: str) -> None:
        self.redis = redis
        self.script = script
        self._batched = _BATCHED % script
        self._waiting: list[tuple[Sequence[str], Sequence[str | int], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((keys, args, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)  # a running task must be referenced until it ends
        task.add_done_callback(self._sending.discard)

    async def _send(
        self, batch: list[tuple[Sequence[str], Sequence[str | int], asyncio.Future[Any]]]
    ) -> None:
        all_keys: list[str] = []
        counts: list[str | int] = [len(batch)]
        all_args: list[str | int] = []
        for keys, args, _ in batch:
            all_keys.extend(keys)
            all_args.extend(args)
            counts += (len(keys), len(args))
        try:
            replies = await self.redis.eval(
                self._batched, len(all_keys), *all_keys, *counts, *all_args
            )
        except Exception as error:  # each caller gets it
            replies = [error] * len(batch)
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, limits: Limits) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits
        self._count = ScriptBatches(redis, _COUNT)
        self._session_and_count = ScriptBatches(redis, _SESSION_AND_COUNT)

    async def check(self, *counters: tuple[str, str, int]) -> None:
        """Count one request against each (scope, subject, limit); raise if one is over.

        All counters are bumped in one round trip.
        """
        now = time.time()
        window = int(now)
        keys = [self.keys.rate_limit(scope, subject, window) for scope, subject, _ in counters]
        counts = await self._count(keys, [COUNTER_SECONDS])
        for (scope, _, limit), count in zip(counters, counts, strict=True):
            if int(count) > limit:
                raise RateLimited(scope, limit, _retry_after(now))

    async def session(self, session_key: str, address: str) -> bytes | None:
        """The session stored at ``session_key`` (None if there is none), with the request
        counted in the same round trip against ``address`` (scope ``ip``) and, if the
        session names a user, against ``user:<user_id>`` (scope ``key``): the counters
        ``check`` would bump for a session's request, in one round trip instead of two.

        Raises ``RateLimited`` if either is over its limit (the address first), valid
        session or not: a failed authentication still counts against its address.
        """
        now = time.time()
        window = int(now)
        before_subject, after_subject = self.keys.rate_limit_around("key", window)
        session, by_address, by_user = await self._session_and_count(
            [session_key, self.keys.rate_limit("ip", address, window)],
            [COUNTER_SECONDS, before_subject, after_subject],
        )
        if int(by_address) > self.limits.per_ip:
            raise RateLimited("ip", self.limits.per_ip, _retry_after(now))
        if by_user is not None and int(by_user) > self.limits.per_key:
            raise RateLimited("key", self.limits.per_key, _retry_after(now))
        return None if session is None else bytes(session)


def _retry_after(now: float) -> int:
    """Whole seconds until the current window ends (at least 1)."""
    return max(1, math.ceil(int(now) + 1 - now))
