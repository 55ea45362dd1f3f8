"""The projections worker: one Faust agent reads every event topic and feeds each read model.

``bitex worker projections`` runs it. Batches come from ``infra.faust_app.batches``;
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
from opentelemetry.trace import use_span

from domain.markets import Market
from infra.event_records import message_headers
from infra.faust_app import batches, faust_app
from infra.health import Check, mysql_check
from infra.kafka_io import end_offsets
from infra.logs import json_logs, log_level, logging_config
from infra.metrics import CONSUMER_LAG, EVENTS_PROJECTED, PROJECTION_LAG
from infra.mysql import create_engine
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from infra.topics import TopicMap
from infra.tracing import finished_span, setup_tracing, traceparent_of
from infra.worker_http import WorkerHttp, metrics_port, serve_alongside
from projections.base import Decoder, EventRecord, Projection
from projections.listings import MarketListings
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
    settings: Settings,
    keys: RedisKeys,
    markets: dict[str, Market],
    listings: MarketListings | None = None,
) -> list[Projection]:
    """Both read models; they know ``markets`` and whatever ``listings`` read from the log."""
    redis = create_redis(settings)
    return [
        MySQLProjection(create_engine(settings), redis, keys, markets, listings),
        RedisProjection(redis, keys, markets, listings),
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
        started_ns = time.time_ns()
        batch: list[EventRecord] = []
        traces: dict[bytes, list[EventRecord]] = {}
        for topic, partition, offset, value, headers in records:
            record = self.decoder.decode(topic, partition, offset, value, headers)
            if record is not None:
                batch.append(record)
                traceparent = traceparent_of(headers)
                if traceparent is not None:
                    traces.setdefault(traceparent, []).append(record)
        # The stores are independent, and each records what it applied: they apply
        # the batch side by side (MySQL in its thread while Redis awaits its reply).
        results = await asyncio.gather(
            *(projection.apply(batch) for projection in self.projections), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        self._measure(batch)
        for traceparent, traced in traces.items():
            self._trace(traceparent, traced, started_ns)

    def _measure(self, batch: Sequence[EventRecord]) -> None:
        by_topic: dict[str, int] = {}
        for record in batch:
            by_topic[record.topic] = by_topic.get(record.topic, 0) + 1
        for topic, count in by_topic.items():
            EVENTS_PROJECTED.labels(topic).inc(count)

    def _trace(self, traceparent: bytes, records: Sequence[EventRecord], started_ns: int) -> None:
        """A span, and a log line, for the events of one trace in the batch just applied."""
        span = finished_span(
            "projections apply", traceparent, started_ns, {"bitex.events": len(records)}
        )
        if span.get_span_context().trace_flags.sampled:
            with use_span(span):
                log.info(
                    "projected",
                    extra={
                        "events": len(records),
                        "aggregates": sorted({str(record.aggregate_id) for record in records}),
                        "read_models": [projection.name for projection in self.projections],
                    },
                )

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
    projections = default_projections(settings, keys, {})  # only their offsets are read
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
    listings = MarketListings(settings, topics)  # the markets come from the log
    runtime = ProjectionRuntime(default_projections(settings, keys, {}, listings))
    app = faust_app(f"{topics.prefix}bitex-projections", settings, BATCH_SIZE)
    port = metrics_port("projections")
    if port is not None:
        serve_alongside(app, _probes_and_metrics(runtime, settings, topics, port))
    channel = app.topic(*event_topics(topics), value_serializer="raw", key_serializer="raw")

    @app.agent(channel, name="bitex-projections")
    async def project(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, Stream)
        async for events in batches(stream, BATCH_SIZE, BATCH_WITHIN):
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


def _probes_and_metrics(
    runtime: ProjectionRuntime, settings: Settings, topics: TopicMap, port: int
) -> WorkerHttp:
    """Ready when Kafka and both stores answer; each read model's lag measured per scrape."""
    engine = create_engine(settings)
    redis = create_redis(settings)

    async def kafka() -> None:
        await end_offsets(settings, [topics.order_events])

    async def lag() -> None:
        """Each store's lag; the worker's (its consumer lag) is its slowest store's."""
        PROJECTION_LAG.clear()
        worker: dict[tuple[str, str], int] = {}
        for row in await measure_lag(runtime.projections, settings, topics):
            partition = str(row.partition)
            PROJECTION_LAG.labels(row.projection, row.topic, partition).set(row.behind)
            worker[row.topic, partition] = max(worker.get((row.topic, partition), 0), row.behind)
        CONSUMER_LAG.clear()
        for (topic, partition), behind in worker.items():
            CONSUMER_LAG.labels("projections", topic, partition).set(behind)

    def checks() -> dict[str, Check]:
        return {"kafka": kafka, "mysql": mysql_check(engine), "redis": redis.ping}

    return WorkerHttp(settings.http_host, port, checks, lag)


def run_worker() -> None:
    """Run the projections until stopped (``bitex worker projections``)."""
    setup_tracing("bitex-projections")
    worker = faust.Worker(
        build_app(), loglevel=log_level(), logging_config=logging_config(), quiet=json_logs()
    )
    worker.execute_from_commandline()
