"""redis.asyncio clients for hot read models and pub/sub notifications."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, overload

import redis.asyncio as aioredis

from infra.settings import Settings

MAX_CONNECTIONS = 64
POOL_WAIT_SECONDS = 10.0

R = TypeVar("R", bound=aioredis.Redis)


@overload
def create_redis(settings: Settings | None = None, **kwargs: Any) -> aioredis.Redis: ...
@overload
def create_redis(settings: Settings | None, client: type[R], **kwargs: Any) -> R: ...
def create_redis(
    settings: Settings | None = None, client: type[aioredis.Redis] = aioredis.Redis, **kwargs: Any
) -> aioredis.Redis:
    """A client for the configured Redis URL (responses are bytes unless told otherwise).

    Its pool holds at most MAX_CONNECTIONS and a caller beyond them waits for
    one (redis-py's default pool would raise instead): a burst of requests
    slows down rather than failing.
    """
    settings = settings or Settings.from_env()
    kwargs.setdefault("max_connections", MAX_CONNECTIONS)
    kwargs.setdefault("timeout", POOL_WAIT_SECONDS)
    pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, **kwargs)
    return client.from_pool(pool)


async def publish_all(redis: aioredis.Redis, messages: Sequence[tuple[str, bytes]]) -> None:
    """Publish (channel, message) pairs in one round trip, in order."""
    if not messages:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for channel, message in messages:
            pipe.publish(channel, message)
        await pipe.execute()
