"""redis.asyncio clients for hot read models and pub/sub notifications."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from infra.settings import Settings


def create_redis(settings: Settings | None = None, **kwargs: Any) -> aioredis.Redis:
    """A client for the configured Redis URL (responses are bytes unless told otherwise)."""
    settings = settings or Settings.from_env()
    return aioredis.Redis.from_url(settings.redis_url, **kwargs)


async def publish_all(redis: aioredis.Redis, messages: Sequence[tuple[str, bytes]]) -> None:
    """Publish (channel, message) pairs in one round trip, in order."""
    if not messages:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for channel, message in messages:
            pipe.publish(channel, message)
        await pipe.execute()
