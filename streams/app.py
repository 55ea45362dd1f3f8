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
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaProducer
from eventsourcing.persistence import StoredEvent
from faust.streams import Stream

from domain.markets import Market, demo_markets
from infra.event_records import cause_offset, message_headers, stored_event
from infra.faust_app import faust_app
from infra.kafka_io import end_offsets, read_partition
from infra.settings import Settings
from infra.topics import SNAPSHOT_MAX_BYTES, TopicMap
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

    async def process(self, batch: Sequence[InRecord]) -> None:
        """Run a batch through the cores and make every output durable.

        A core is (re)built whenever its partition's next input is not the one
        it expects: after a start or a rebalance, or when Faust seeks. What the
        batch produced so far is written first, so the rebuild sees it. An
        input a core has already taken (redelivered after a seek) is skipped.
        """
        out: list[OutRecord] = []
        for record in batch:
            partition = record.partition
            core = self.cores.get(partition)
            if core is None or record.offset > self.next_offsets[partition]:
                await self.publish(out)
                out = []
                core = await self._rebuild(partition, record.offset)
            if record.offset < self.next_offsets[partition]:
                continue
            out += core.handle(record)
            self.next_offsets[partition] = record.offset + 1
            self.since_snapshot[partition] = self.since_snapshot.get(partition, 0) + 1
        await self.publish(out)
        for partition, count in self.since_snapshot.items():
            if count >= self.snapshot_every and partition in self.cores:
                await self._snapshot(partition)

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
    runtime = ProcessorRuntime(role, settings, topics, demo_markets())
    app = faust_app(
        f"{topics.prefix}bitex-{role.name}", settings, BATCH_SIZE, instance, producer_acks=-1
    )
    inbox_name = role.inbox(topics)
    inbox = app.topic(inbox_name, value_serializer="raw", key_serializer="raw")

    @app.agent(inbox, name=f"bitex-{role.name}-processor")
    async def process(stream: faust.StreamT[bytes]) -> None:
        assert isinstance(stream, Stream)
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            batch = [
                InRecord(
                    event.message.partition,
                    event.message.offset,
                    event.message.value or b"",
                    message_headers(event.message),
                )
                for event in events
            ]
            await runtime.process(batch)

    def on_revoked(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", ())
        runtime.forget([tp.partition for tp in revoked if tp.topic == inbox_name])

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]  # mode is untyped

    return app


def run_worker(role_name: str, instance: int = 0) -> None:
    """Run one processor role until stopped (``bitex worker accounts|matching``).

    ``instance`` numbers this worker among its role's (a StatefulSet's ordinal):
    it is the worker's static group membership, so a restart takes its place back.
    """
    role = ROLES[role_name]
    app = build_app(role, instance=instance)
    worker = faust.Worker(app, loglevel="info")
    worker.execute_from_commandline()
