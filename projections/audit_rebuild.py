"""``bitex replay --rebuild``: drop the MySQL and Redis read models and project the log again.

The projections that rebuild are the live ones (``projections.runner``'s
``ProjectionRuntime`` over ``MySQLProjection`` and ``RedisProjection``), fed
every partition from offset 0 in batches, so the rebuilt stores equal what
the live worker had built: every table and key, except each book snapshot's
``sequence``, which counts batches. That sequence is carried past the old one
(the old value plus one is seeded before the rebuild), so a client holding the
old book sees a gap and resynchronises. A rebuild publishes nothing: replaying
history is not news for subscribers.

The projections worker must be stopped while a rebuild runs, or both would
write the same stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from domain.markets import Market
from infra.migrate import downgrade, upgrade
from infra.mysql import create_engine
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from infra.topics import TopicMap
from projections.audit_read import EventReader
from projections.audit_replay import Cut, plan, records_in
from projections.mysql_projection import MySQLProjection
from projections.redis_projection import Plan, RedisProjection
from projections.runner import ProjectionRuntime, event_topics

BATCH = 2000
"""Records a rebuild hands the projections at once (the live worker takes up to 1,000)."""


class QuietRedisProjection(RedisProjection):
    """The Redis projection, publishing nothing (see the module docstring)."""

    async def _publish(self, plan: Plan) -> None:
        return None


def read_model_patterns(keys: RedisKeys) -> list[str]:
    """Every key the Redis read model writes (sessions and rate limits are not read models)."""
    return [
        keys.offsets("*"),
        keys.versions("*"),
        keys.book_side("*", "*"),
        keys.resting_order("*"),
        keys.ticker("*"),
        keys.ticker_minutes("*"),
        keys.recent_trades("*"),
    ]


async def drop_redis(redis: aioredis.Redis, keys: RedisKeys) -> int:
    dropped = 0
    for pattern in read_model_patterns(keys):
        batch: list[Any] = []
        async for key in redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                dropped += await redis.delete(*batch)
                batch = []
        if batch:
            dropped += await redis.delete(*batch)
    return dropped


async def book_sequences(
    redis: aioredis.Redis, keys: RedisKeys, symbols: Sequence[str]
) -> dict[str, int]:
    found = {}
    for symbol in symbols:
        raw = await redis.get(keys.book_snapshot(symbol))
        if raw is not None:
            found[symbol] = int(orjson.loads(raw)["sequence"])
    return found


def drop_mysql(settings: Settings) -> None:
    """Every read-model table dropped and created again, empty (the migrations do both)."""
    downgrade(settings)
    upgrade(settings)


async def rebuild_read_models(
    settings: Settings,
    topics: TopicMap,
    markets: dict[str, Market],
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Drop and rebuild both read models from the whole log; the records projected."""
    import asyncio

    keys = RedisKeys.for_prefix(topics.prefix)
    redis = create_redis(settings)
    try:
        sequences = await book_sequences(redis, keys, sorted(markets))
        await drop_redis(redis, keys)
        for symbol, sequence in sequences.items():
            seed = {"symbol": symbol, "sequence": sequence + 1, "bids": [], "asks": []}
            await redis.set(keys.book_snapshot(symbol), orjson.dumps(seed))
    finally:
        await redis.aclose()
    await asyncio.to_thread(drop_mysql, settings)

    runtime = ProjectionRuntime(
        [
            MySQLProjection(create_engine(settings), None, keys, markets),
            QuietRedisProjection(create_redis(settings), keys, markets),
        ]
    )
    spans = await plan(settings, list(event_topics(topics)), Cut())
    total = records_in(spans)
    done = 0
    try:
        async with EventReader(settings) as reader:
            for (topic, partition), start, end in spans:
                async for fetched in reader.batches(topic, partition, start, end):
                    records = list(fetched)
                    for first in range(0, len(records), BATCH):
                        chunk = records[first : first + BATCH]
                        await runtime.process(
                            [
                                (topic, partition, offset, value, headers)
                                for offset, value, headers in chunk
                            ]
                        )
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
    finally:
        await runtime.close()
    return done
