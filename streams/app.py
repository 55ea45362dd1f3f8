"""The Faust side of the processors: consume an inbox, run a core, publish.

Effectively-once without trusting any single mechanism:

- a core's output depends only on its input partition and its own prior state;
- every output names its cause (input partition and offset);
- outputs of a batch are durably written before Faust may commit its offsets;
- after any restart or rebalance, the first offset Faust delivers for a
  partition is where processing resumes; the core's state is rebuilt from its
  own output log, keeping only what inputs *before* that offset caused;
- what is re-processed is re-emitted byte for byte, and every consumer drops
  such duplicates by (aggregate id, version), checking they are identical.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaProducer
from eventsourcing.persistence import StoredEvent
from faust.streams import Stream

from domain.markets import Market
from infra.event_records import EVENT_ID, cause_offset, header, message_headers, stored_event
from infra.faust_app import batches, faust_app
from infra.kafka_io import end_offsets, read_partition
from infra.logs import json_logs, log_level, logging_config
from infra.metrics import (
    BATCH_SECONDS,
    CONSUMER_LAG,
    PROCESSING_LATENCY,
    RECORDS_PROCESSED,
    RECORDS_WRITTEN,
)
from infra.settings import Settings
from infra.topics import SNAPSHOT_MAX_BYTES, TopicMap
from infra.tracing import TRACEPARENT, continued_span, setup_tracing, traceparent_of
from infra.worker_http import WorkerHttp, metrics_port, serve_alongside
from streams.account_processor import AccountProcessor
from streams.matching_processor import MatchingProcessor
from streams.records import InRecord, OutRecord
from streams.snapshots import Json, Snapshot

log = logging.getLogger(__name__)

BATCH_SIZE = 500
SNAPSHOT_EVERY = 50_000
"""Inputs a partition takes between two snapshots (BITEX_SNAPSHOT_EVERY overrides)."""
BATCH_WITHIN = 0.001


class Core(Protocol):
    snapshot_due: bool
    """Set when the core took an input its own logs do not record (a market listing
    relayed to an account partition): the runtime snapshots it after the batch, so
    the state survives the inbox's retention."""

    def restore(self, stored: StoredEvent, headers: Any) -> None: ...

    def note_processed(self, record: InRecord) -> None: ...

    def handle(self, record: InRecord) -> list[OutRecord]: ...

    def snapshot(self) -> Json: ...

    def load(self, state: Json) -> None: ...


@dataclass(frozen=True)
class Role:
    name: str
    inbox: Callable[[TopicMap], str]
    own_logs: Callable[[TopicMap], tuple[str, ...]]
    """Output topics whose partition *p* holds everything partition *p* of the inbox
    built, in the order they are read back."""
    snapshots: Callable[[TopicMap], str]
    make_core: Callable[[dict[str, Market], TopicMap, int], Core]


ACCOUNTS = Role(
    "accounts",
    inbox=lambda topics: topics.account_commands,
    own_logs=lambda topics: (topics.user_events,),
    snapshots=lambda topics: topics.account_snapshots,
    make_core=AccountProcessor,
)
MATCHING = Role(
    "matching",
    inbox=lambda topics: topics.matching_commands,
    own_logs=lambda topics: (topics.market_events, topics.order_events),
    snapshots=lambda topics: topics.matching_snapshots,
    make_core=MatchingProcessor,
)
ROLES = {role.name: role for role in (ACCOUNTS, MATCHING)}


class _RoleMetrics:
    """A role's metric children, labelled once rather than on every batch."""

    def __init__(self, role: str) -> None:
        self.processed = RECORDS_PROCESSED.labels(role)
        self.latency = PROCESSING_LATENCY.labels(role)
        self.batch = BATCH_SECONDS.labels(role)


class ProcessorRuntime:
    """One core per assigned inbox partition, each rebuilt from its own log."""

    def __init__(
        self, role: Role, settings: Settings, topics: TopicMap, markets: dict[str, Market]
    ) -> None:
        self.role = role
        self.settings = settings
        self.topics = topics
        self.markets = markets
        self.cores: dict[int, Core] = {}
        self.next_offsets: dict[int, int] = {}
        self.since_snapshot: dict[int, int] = {}
        self.snapshot_every = int(os.environ.get("BITEX_SNAPSHOT_EVERY", SNAPSHOT_EVERY))
        self._producer: AIOKafkaProducer | None = None
        self._metrics = _RoleMetrics(role.name)

    async def process(self, batch: Sequence[InRecord]) -> None:
        """Run a batch through the cores and make every output durable.

        A core is (re)built whenever its partition's next input is not the one
        it expects: after a start or a rebalance, or when Faust seeks. What the
        batch produced so far is written first, so the rebuild sees it. An
        input a core has already taken (redelivered after a seek) is skipped.
        """
        started = time.perf_counter()
        out: list[OutRecord] = []
        taken: list[InRecord] = []
        for record in batch:
            partition = record.partition
            core = self.cores.get(partition)
            if core is None or record.offset > self.next_offsets[partition]:
                await self.publish(out)
                out = []
                core = await self._rebuild(partition, record.offset)
            if record.offset < self.next_offsets[partition]:
                continue
            traceparent = traceparent_of(record.headers)
            if traceparent is None:
                out += core.handle(record)
            else:
                out += self._handle_traced(core, record, traceparent)
            taken.append(record)
            self.next_offsets[partition] = record.offset + 1
            self.since_snapshot[partition] = self.since_snapshot.get(partition, 0) + 1
        await self.publish(out)
        self._measure(taken, out, started)
        for partition, count in self.since_snapshot.items():
            core = self.cores.get(partition)
            if core is not None and (count >= self.snapshot_every or core.snapshot_due):
                await self._snapshot(partition)

    def _handle_traced(self, core: Core, record: InRecord, traceparent: bytes) -> list[OutRecord]:
        """``core.handle`` in a span of the command's trace; what it causes carries it on."""
        where = {
            "messaging.destination.partition.id": record.partition,
            "messaging.kafka.offset": record.offset,
        }
        with continued_span(f"{self.role.name} process", traceparent, where) as span:
            outputs = core.handle(record)
            if span.is_recording():
                log.info(
                    "processed",
                    extra={
                        "role": self.role.name,
                        "input": record.cause.decode(),
                        "outputs": len(outputs),
                        "aggregates": sorted(
                            {
                                value.decode()
                                for output in outputs
                                if (value := header(output.headers, EVENT_ID)) is not None
                            }
                        ),
                    },
                )
        carried = (TRACEPARENT, traceparent)
        return [replace(output, headers=[*output.headers, carried]) for output in outputs]

    def _measure(self, taken: Sequence[InRecord], out: Sequence[OutRecord], started: float) -> None:
        if not taken:
            return
        self._metrics.processed.inc(len(taken))
        written: dict[str, int] = {}
        for output in out:
            written[output.topic] = written.get(output.topic, 0) + 1
        for topic, count in written.items():
            RECORDS_WRITTEN.labels(self.role.name, topic).inc(count)
        now = time.time()
        for record in taken:
            if record.timestamp:
                self._metrics.latency.observe(max(0.0, now - record.timestamp))
        self._metrics.batch.observe(time.perf_counter() - started)

    async def measure_lag(self, assigned: Mapping[int, int | None]) -> None:
        """Set the consumer lag of each assigned inbox partition, from its end right now.

        ``assigned`` gives, per partition, the consumer's position: where a partition
        without a core yet (it has had no record since it was assigned) stands.
        """
        inbox = self.role.inbox(self.topics)
        ends = await end_offsets(self.settings, [inbox])
        CONSUMER_LAG.clear()
        for tp, end in ends.items():
            if tp.partition not in assigned:
                continue
            done = self.next_offsets.get(tp.partition, assigned[tp.partition])
            if done is not None:
                CONSUMER_LAG.labels(self.role.name, inbox, str(tp.partition)).set(end - done)

    async def ping(self) -> None:
        """Raises unless Kafka answers this worker's producer."""
        producer = await self._the_producer()
        await producer.client.fetch_all_metadata()

    async def _snapshot(self, partition: int) -> None:
        """Record the core's state as of its next input (its outputs are all durable)."""
        own_logs = self.role.own_logs(self.topics)
        ends = await end_offsets(self.settings, list(own_logs))
        snapshot = Snapshot(
            input_offset=self.next_offsets[partition],
            outputs={tp.topic: offset for tp, offset in ends.items() if tp.partition == partition},
            state=self.cores[partition].snapshot(),
        )
        producer = await self._the_producer()
        await producer.send_and_wait(
            self.role.snapshots(self.topics), snapshot.encode(), key=b"state", partition=partition
        )
        self.since_snapshot[partition] = 0
        self.cores[partition].snapshot_due = False
        log.info(
            "%s partition %d: snapshot at input offset %d",
            self.role.name,
            partition,
            snapshot.input_offset,
        )

    async def _rebuild(self, partition: int, first_offset: int) -> Core:
        """A core for ``partition`` as of ``first_offset`` or later (see _restore)."""
        core = self.role.make_core(self.markets, self.topics, partition)
        resume, restored = await self._restore(core, partition, first_offset)
        log.info(
            "%s partition %d: rebuilt (%d events replayed), resuming at offset %d",
            self.role.name,
            partition,
            restored,
            resume,
        )
        self.cores[partition] = core
        self.next_offsets[partition] = resume
        self.since_snapshot[partition] = 0
        return core

    def forget(self, partitions: Sequence[int]) -> None:
        """Drop the state of partitions this worker no longer owns."""
        for partition in partitions:
            self.cores.pop(partition, None)
            self.next_offsets.pop(partition, None)

    async def publish(self, records: Sequence[OutRecord]) -> None:
        """Write records and wait until Kafka has every one (acks=all).

        Records are grouped into one batch per partition (kept in order), which
        costs far less per record than sending them one by one.
        """
        if not records:
            return
        producer = await self._the_producer()
        by_partition: dict[tuple[str, int], list[OutRecord]] = {}
        for record in records:
            by_partition.setdefault((record.topic, record.partition), []).append(record)
        futures = []
        for (topic, partition), group in by_partition.items():
            batch = producer.create_batch()
            for record in group:
                if (
                    batch.append(
                        key=record.key, value=record.value, timestamp=None, headers=record.headers
                    )
                    is None
                ):
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(
                        key=record.key, value=record.value, timestamp=None, headers=record.headers
                    )
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _the_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                client_id=f"bitex-{self.role.name}",
                enable_idempotence=True,
                acks="all",
                linger_ms=0,
                max_batch_size=256 * 1024,
                max_request_size=SNAPSHOT_MAX_BYTES,
            )
            await self._producer.start()
        return self._producer

    async def _restore(self, core: Core, partition: int, first_offset: int) -> tuple[int, int]:
        """Bring a new core to the state before input ``resume``; returns (resume, events).

        From the latest snapshot (if any) at input offset *s*, resuming at
        ``max(first_offset, s)``: inputs before *s* were processed and their
        outputs are durable, so they need no second pass. The inbox from *s*
        to the resume point is noted (what the core has seen), and the own
        output logs, from where the snapshot left them, are replayed for what
        those inputs caused.
        """
        snapshot = await self._latest_snapshot(partition)
        start = snapshot.input_offset if snapshot else 0
        resume = max(first_offset, start)
        if snapshot is not None:
            core.load(snapshot.state)
        inbox = self.role.inbox(self.topics)
        async with aclosing(read_partition(self.settings, inbox, partition, start)) as records:
            async for offset, value, headers in records:
                if offset >= resume:
                    break
                core.note_processed(InRecord(partition, offset, value, headers))
        restored = 0
        for topic in self.role.own_logs(self.topics):
            begin = snapshot.outputs.get(topic, 0) if snapshot else 0
            async with aclosing(read_partition(self.settings, topic, partition, begin)) as log_:
                async for _, value, headers in log_:
                    cause = cause_offset(headers)
                    stored = stored_event(value, headers)
                    if stored is None or cause is None or not start <= cause[1] < resume:
                        continue
                    core.restore(stored, headers)
                    restored += 1
        return resume, restored

    async def _latest_snapshot(self, partition: int) -> Snapshot | None:
        latest = None
        topic = self.role.snapshots(self.topics)
        async with aclosing(read_partition(self.settings, topic, partition)) as records:
            async for _, value, _ in records:
                latest = value
        return None if latest is None else Snapshot.decode(latest)


def build_app(role: Role, settings: Settings | None = None, instance: int = 0) -> faust.App:
    settings = settings or Settings.from_env()
    topics = TopicMap.from_env()
    runtime = ProcessorRuntime(role, settings, topics, {})  # every market is listed on the log
    app = faust_app(
        f"{topics.prefix}bitex-{role.name}", settings, BATCH_SIZE, instance, producer_acks=-1
    )
    inbox_name = role.inbox(topics)
    inbox = app.topic(inbox_name, value_serializer="raw", key_serializer="raw")

    @app.agent(inbox, name=f"bitex-{role.name}-processor")
    async def process(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, Stream)
        async for events in batches(stream, BATCH_SIZE, BATCH_WITHIN):
            batch = [
                InRecord(
                    event.message.partition,
                    event.message.offset,
                    event.message.value or b"",
                    message_headers(event.message),
                    event.message.timestamp or 0.0,
                )
                for event in events
            ]
            await runtime.process(batch)

    def on_revoked(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", ())
        runtime.forget([tp.partition for tp in revoked if tp.topic == inbox_name])

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]  # mode is untyped
    port = metrics_port(role.name, instance)
    if port is not None:
        serve_alongside(app, _probes_and_metrics(app, runtime, settings.http_host, port))
    return app


def _probes_and_metrics(
    app: faust.App, runtime: ProcessorRuntime, host: str, port: int
) -> WorkerHttp:
    """Ready once Kafka answers and the group is not rebalancing; lag measured per scrape."""
    inbox = runtime.role.inbox(runtime.topics)

    async def settled_group() -> None:
        if app.rebalancing:
            msg = "the consumer group is rebalancing"
            raise RuntimeError(msg)

    async def refresh() -> None:
        positions = {
            tp.partition: await app.consumer.position(tp)
            for tp in app.consumer.assignment()
            if tp.topic == inbox
        }
        await runtime.measure_lag(positions)

    return WorkerHttp(host, port, lambda: {"kafka": runtime.ping, "group": settled_group}, refresh)


def run_worker(role_name: str, instance: int = 0) -> None:
    """Run one processor role until stopped (``bitex worker accounts|matching``).

    ``instance`` numbers this worker among its role's (a StatefulSet's ordinal):
    it is the worker's static group membership, so a restart takes its place back.
    """
    role = ROLES[role_name]
    setup_tracing(f"bitex-{role_name}")
    app = build_app(role, instance=instance)
    worker = faust.Worker(
        app, loglevel=log_level(), logging_config=logging_config(), quiet=json_logs()
    )
    worker.execute_from_commandline()
