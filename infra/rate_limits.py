"""Request rate limits kept in Redis, shared by every gateway process.

Fixed one-second windows: a counter per (scope, subject, second) that expires
with its window. It is a deliberately simple scheme: at a window's edge a
client may send up to twice its limit within a second, which is harmless for
protecting the gateways and costs one round trip per check.

Limits (requests per second) come from the environment, so an operator can
raise them for load tests without a rebuild:

- ``BITEX_RATE_IP``: every request, per client address (default 2000);
- ``BITEX_RATE_KEY``: authenticated requests, per API key or session user (default 500);
- ``BITEX_RATE_AUTH``: registrations and logins, per client address (default 20),
  since each costs an argon2 hash.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

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


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, limits: Limits) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits

    async def check(self, *counters: tuple[str, str, int]) -> None:
        """Count one request against each (scope, subject, limit); raise if one is over.

        All counters are bumped in one pipelined round trip.
        """
        now = time.time()
        window = int(now)
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope, subject, _ in counters:
                key = self.keys.rate_limit(scope, subject, window)
                pipe.incr(key)
                pipe.expire(key, 2)
            replies = await pipe.execute()
        for (scope, _, limit), count in zip(counters, replies[::2], strict=True):
            if int(count) > limit:
                raise RateLimited(scope, limit, max(1, math.ceil(window + 1 - now)))
