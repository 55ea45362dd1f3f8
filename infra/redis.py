"""redis.asyncio clients for hot read models and pub/sub notifications."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from infra.settings import Settings


def create_redis(settings: Settings | None = None, **kwargs: Any) -> aioredis.Redis:
    """A client for the configured Redis URL (responses are bytes unless told otherwise)."""
    settings = settings or Settings.from_env()
    return aioredis.Redis.from_url(settings.redis_url, **kwargs)
