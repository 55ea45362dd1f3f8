"""Rate limits on the real Redis: a subject over its limit in a window is refused with
a Retry-After, and subjects and scopes count apart; a bearer session is read and both
its counters bumped in one call."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from infra.rate_limits import COUNTER_SECONDS, Limits, RateLimited, RateLimiter, ScriptBatches
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


async def _fresh_window() -> None:
    """Sleep into the start of the next one-second window, so a test's counts share one."""
    await asyncio.sleep(1.01 - time.time() % 1)


async def test_a_session_is_read_and_counted_per_address_and_user_in_one_call(
    redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    limiter = RateLimiter(redis_client, keys, Limits(per_ip=5, per_key=3))
    stored = orjson.dumps({"user_id": "u-1", "account_id": "a-1", "role": "user", "email": "e"})
    await redis_client.set(keys.session("alice"), stored, ex=60)
    await redis_client.set(keys.session("broken"), b"not json", ex=60)
    await _fresh_window()

    for _ in range(3):
        assert await limiter.session(keys.session("alice"), "10.0.0.1") == stored
    with pytest.raises(RateLimited) as per_user:
        await limiter.session(keys.session("alice"), "10.0.0.2")  # the user counts everywhere
    assert (per_user.value.scope, per_user.value.limit, per_user.value.retry_after) == ("key", 3, 1)

    # Unknown or unreadable sessions count against their address only (the caller
    # answers 401), until the address is over its limit: then 429, session or not.
    for name in ("nobody", "broken", "nobody", "broken", "nobody"):
        found = await limiter.session(keys.session(name), "10.0.0.3")
        assert found == (b"not json" if name == "broken" else None)
    for name in ("nobody", "alice"):
        with pytest.raises(RateLimited) as per_address:
            await limiter.session(keys.session(name), "10.0.0.3")
        assert (per_address.value.scope, per_address.value.limit) == ("ip", 5)

    window = int(time.time())
    count = keys.rate_limit("key", "user:u-1", window)
    assert int(await redis_client.get(count) or 0) == 5  # 3 + 1 over + 1 refused by address
    assert 0 < await redis_client.ttl(count) <= COUNTER_SECONDS


async def test_script_calls_in_one_turn_keep_their_own_replies_and_errors(
    redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    batches = ScriptBatches(redis_client, "return redis.call('INCRBY', KEYS[1], ARGV[1])")
    counter, text = keys.rate_limit("test", "sum", 0), keys.rate_limit("test", "text", 0)
    await redis_client.set(text, "not a number")
    replies = await asyncio.gather(
        *(batches([counter], [n]) for n in range(1, 6)),
        batches([text], [1]),
        return_exceptions=True,
    )
    assert replies[:5] == [1, 3, 6, 10, 15], "in the order called"
    assert isinstance(replies[5], ResponseError)
    assert await batches([counter], [1]) == 16  # alone in its turn


async def test_script_calls_in_one_turn_each_run_with_their_own_keys_and_arguments(
    redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    """Calls of different shapes share a turn: each sees only its keys and arguments, a
    script answering nothing answers None, and a script's own failure is its caller's."""
    batches = ScriptBatches(
        redis_client,
        "if ARGV[1] == 'fail' then error('asked to') end\n"
        "if #KEYS == 0 then return nil end\n"
        "return {#KEYS, #ARGV, redis.call('INCRBY', KEYS[#KEYS], #ARGV)}",
    )
    first, second = keys.rate_limit("test", "a", 0), keys.rate_limit("test", "b", 0)
    replies = await asyncio.gather(
        batches([first, second], [1, 2, 3]),
        batches([], []),
        batches([first], ["fail"]),
        batches([first], [7]),
        return_exceptions=True,
    )
    assert replies[0] == [2, 3, 3]
    assert replies[1] is None
    assert isinstance(replies[2], ResponseError)
    assert replies[3] == [1, 1, 1]
