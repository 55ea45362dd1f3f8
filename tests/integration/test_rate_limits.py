"""Rate limits on the real Redis: a subject over its limit in a window is refused with
a Retry-After, and subjects and scopes count apart."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from infra.rate_limits import Limits, RateLimited, RateLimiter
from infra.redis_keys import RedisKeys

pytestmark = pytest.mark.integration


def test_limits_come_from_the_environment() -> None:
    limits = Limits.from_env({"BITEX_RATE_IP": "7", "BITEX_RATE_AUTH": "2"})
    assert (limits.per_ip, limits.per_key, limits.auth_per_ip) == (7, Limits().per_key, 2)


async def test_the_request_over_the_limit_is_refused(
    redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    limiter = RateLimiter(redis_client, keys, Limits())
    refusals: list[RateLimited] = []
    for _ in range(12):
        try:
            await limiter.check(("ip", "10.0.0.1", 5), ("key", "k1", 100))
        except RateLimited as limited:
            refusals.append(limited)
    # At most two one-second windows pass during the loop: 5 allowed in each.
    assert 12 - 2 * 5 <= len(refusals) <= 12 - 5
    assert {(r.scope, r.limit, r.retry_after) for r in refusals} == {("ip", 5, 1)}
    await limiter.check(("ip", "10.0.0.2", 5))  # another address counts apart

    async def flood() -> None:  # 250 checks span at most two windows: one sees 101+
        for _ in range(250):
            await limiter.check(("key", "k2", 100))

    with pytest.raises(RateLimited):
        await flood()
