"""Read-your-writes: wait until both read models have applied what a command wrote.

An outcome names the newest version of every aggregate its command wrote
(``{"written": {aggregate id: version}}``). The MySQL projection records the
versions it applied in ``aggregate_versions`` and the Redis projection in
``keys.versions("redis")``, each in the same transaction as the rows, so once
both have reached those versions any read of either reflects the command.

One background task serves every waiter in the process: each tick it asks
each store once for all pending aggregates (one ``HMGET``, one ``SELECT``),
so a thousand waiting requests cost the stores what one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.engine import Engine

from infra.read_models import aggregate_versions
from infra.redis_keys import RedisKeys

REDIS_PROJECTION = "redis"
TICK_SECONDS = 0.005


@dataclass
class _Waiter:
    mysql: dict[str, int]
    redis: dict[str, int]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ReadYourWrites:
    def __init__(self, engine: Engine, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self.engine = engine
        self.redis = redis
        self.keys = keys
        self._waiters: list[_Waiter] = []
        self._task: asyncio.Task[None] | None = None

    async def wait(self, written: Mapping[str, int], timeout: float) -> bool:
        """True once both read models hold ``written``; False if ``timeout`` passed first."""
        if not written:
            return True
        waiter = _Waiter(dict(written), dict(written))
        self._waiters.append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        try:
            await asyncio.wait_for(asyncio.shield(waiter.done), timeout)
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while self._waiters:
            started = time.monotonic()
            waiters = [w for w in self._waiters if not w.done.done()]
            mysql_ids = sorted({a for w in waiters for a in w.mysql})
            redis_ids = sorted({a for w in waiters for a in w.redis})
            in_mysql = await asyncio.to_thread(self._mysql_versions, mysql_ids)
            in_redis = await self._redis_versions(redis_ids)
            for waiter in waiters:
                _drop_reached(waiter.mysql, in_mysql)
                _drop_reached(waiter.redis, in_redis)
                if not waiter.mysql and not waiter.redis:
                    waiter.done.set_result(None)
            await asyncio.sleep(max(0.0, TICK_SECONDS - (time.monotonic() - started)))

    def _mysql_versions(self, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        query = select(aggregate_versions.c.aggregate_id, aggregate_versions.c.version).where(
            aggregate_versions.c.aggregate_id.in_(ids)
        )
        with self.engine.connect() as connection:
            return {str(row.aggregate_id): row.version for row in connection.execute(query)}

    async def _redis_versions(self, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        raw = await self.redis.hmget(self.keys.versions(REDIS_PROJECTION), ids)
        return {i: int(v) for i, v in zip(ids, raw, strict=True) if v is not None}


def _drop_reached(pending: dict[str, int], applied: Mapping[str, int]) -> None:
    for aggregate_id in [a for a, v in pending.items() if applied.get(a, 0) >= v]:
        del pending[aggregate_id]
