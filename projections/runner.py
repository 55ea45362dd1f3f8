"""The projections worker: one Faust agent reads every event topic and feeds each read model.

``bitex worker projections`` runs it. Batches come from ``stream.take_events``;
each projection applies a batch in one transaction of its own store, with the
offsets and versions it applied, so the worker can die at any instant: what a
store has is exactly a prefix of each partition. Faust acknowledges a batch
only after every projection has applied it, so its committed offsets never run
ahead of the stores (and a store that is ahead skips what it already has).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
from faust.streams import Stream

from domain.markets import Market, demo_markets
from infra.event_records import message_headers
from infra.faust_app import faust_app
from infra.kafka_io import end_offsets
from infra.mysql import create_engine
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from infra.topics import TopicMap
from projections.base import Decoder, EventRecord, Projection
from projections.mysql_projection import MySQLProjection
from projections.redis_projection import RedisProjection

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
BATCH_WITHIN = 0.005
"""Seconds a partial batch waits for more events: small, since notifications wait on it."""


def event_topics(topics: TopicMap) -> tuple[str, str, str]:
    """The topics every read model is built from (the article's three event families)."""
    return topics.user_events, topics.order_events, topics.market_events


def default_projections(
    settings: Settings, keys: RedisKeys, markets: dict[str, Market]
) -> list[Projection]:
    redis = create_redis(settings)
    return [
        MySQLProjection(create_engine(settings), redis, keys, markets),
        RedisProjection(redis, keys, markets),
    ]


class ProjectionRuntime:
    """Decodes a batch once and hands it to every projection at once."""

    def __init__(self, projections: Sequence[Projection]) -> None:
        self.projections = list(projections)
        self.decoder = Decoder()
        self._started = False

    async def start(self) -> None:
        if not self._started:
            for projection in self.projections:
                await projection.start()
            self._started = True

    async def process(self, records: Sequence[tuple[str, int, int, bytes, Any]]) -> None:
        """``records`` are (topic, partition, offset, value, headers) in consumption order."""
        await self.start()
        batch: list[EventRecord] = []
        for topic, partition, offset, value, headers in records:
            record = self.decoder.decode(topic, partition, offset, value, headers)
            if record is not None:
                batch.append(record)
        # The stores are independent, and each records what it applied: they apply
        # the batch side by side (MySQL in its thread while Redis awaits its reply).
        results = await asyncio.gather(
            *(projection.apply(batch) for projection in self.projections), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def close(self) -> None:
        for projection in self.projections:
            await projection.close()


@dataclass(frozen=True, slots=True)
class Lag:
    projection: str
    topic: str
    partition: int
    applied: int
    """The next offset the projection will apply: it has everything below."""
    end: int

    @property
    def behind(self) -> int:
        return self.end - self.applied


async def measure_lag(
    projections: Sequence[Projection], settings: Settings, topics: TopicMap
) -> list[Lag]:
    """How far each projection is behind each event partition's end, right now."""
    found = await end_offsets(settings, list(event_topics(topics)))
    ends = {(tp.topic, tp.partition): end for tp, end in found.items()}
    rows = []
    for projection in projections:
        await projection.start()
        applied = await projection.positions()
        for (topic, partition), end in sorted(ends.items()):
            rows.append(
                Lag(projection.name, topic, partition, applied.get((topic, partition), 0), end)
            )
    return rows


async def wait_projected(
    settings: Settings, topics: TopicMap, timeout: float, poll: float = 0.2
) -> None:
    """Until both read models have applied every event partition to its end.

    Raises ``TimeoutError`` naming what still lags after ``timeout`` seconds.
    """
    keys = RedisKeys.for_prefix(topics.prefix)
    projections = default_projections(settings, keys, demo_markets())
    deadline = time.monotonic() + timeout
    try:
        while True:
            behind = [row for row in await measure_lag(projections, settings, topics) if row.behind]
            if not behind:
                return
            if time.monotonic() > deadline:
                msg = f"read models still behind after {timeout} s: {behind}"
                raise TimeoutError(msg)
            await asyncio.sleep(poll)
    finally:
        for projection in projections:
            await projection.close()


def build_app(settings: Settings | None = None) -> faust.App:
    settings = settings or Settings.from_env()
    topics = TopicMap.from_env()
    keys = RedisKeys.for_prefix(topics.prefix)
    runtime = ProjectionRuntime(default_projections(settings, keys, demo_markets()))
    app = faust_app(f"{topics.prefix}bitex-projections", settings, BATCH_SIZE)
    channel = app.topic(*event_topics(topics), value_serializer="raw", key_serializer="raw")

    @app.agent(channel, name="bitex-projections")
    async def project(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, Stream)
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            await runtime.process(
                [
                    (
                        event.message.topic,
                        event.message.partition,
                        event.message.offset,
                        event.message.value or b"",
                        message_headers(event.message),
                    )
                    for event in events
                ]
            )

    return app


def run_worker() -> None:
    """Run the projections until stopped (``bitex worker projections``)."""
    worker = faust.Worker(build_app(), loglevel="info")
    worker.execute_from_commandline()
