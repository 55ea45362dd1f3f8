"""Read-your-writes on the real stores: a wait ends exactly when both read models
have applied the versions an outcome names, or at its bound."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from sqlalchemy import insert, update
from sqlalchemy.engine import Engine

from infra.read_models import aggregate_versions
from infra.read_your_writes import REDIS_PROJECTION, ReadYourWrites
from infra.redis_keys import RedisKeys

pytestmark = pytest.mark.integration


async def test_a_wait_ends_when_both_stores_have_the_versions(
    db: Engine, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    order, account = str(uuid.uuid4()), str(uuid.uuid4())
    waiter = ReadYourWrites(db, redis_client, keys)
    try:
        assert await waiter.wait({}, timeout=0.01), "nothing written, nothing to wait for"
        assert not await waiter.wait({order: 2, account: 5}, timeout=0.2)

        waiting = asyncio.create_task(waiter.wait({order: 2, account: 5}, timeout=10))
        with db.begin() as connection:
            connection.execute(
                insert(aggregate_versions),
                [{"aggregate_id": order, "version": 2}, {"aggregate_id": account, "version": 4}],
            )
        await redis_client.hset(keys.versions(REDIS_PROJECTION), mapping={order: 2, account: 5})
        await asyncio.sleep(0.1)
        assert not waiting.done(), "MySQL has the account at 4, not 5"
        with db.begin() as connection:
            connection.execute(
                update(aggregate_versions)
                .where(aggregate_versions.c.aggregate_id == account)
                .values(version=6)
            )
        assert await asyncio.wait_for(waiting, 5), "a later version includes the one waited for"

        several = [waiter.wait({order: 1}, timeout=5) for _ in range(50)]
        assert all(await asyncio.gather(*several))
    finally:
        await waiter.close()
