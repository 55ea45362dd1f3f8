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
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaProducer
from eventsourcing.persistence import StoredEvent
from faust.streams import Stream

from domain.markets import Market, demo_markets
from infra.event_records import cause_offset, stored_event
from infra.kafka_io import read_partition
from infra.settings import Settings
from infra.topics import TopicMap
from streams.account_processor import AccountProcessor
from streams.matching_processor import MatchingProcessor
from streams.records import InRecord, OutRecord

log = logging.getLogger(__name__)

BATCH_SIZE = 500
BATCH_WITHIN = 0.001


class Core(Protocol):
    def restore(self, stored: StoredEvent, headers: Any) -> None: ...

    def note_processed(self, record: InRecord) -> None: ...

    def handle(self, record: InRecord) -> list[OutRecord]: ...


@dataclass(frozen=True)
class Role:
    name: str
    inbox: Callable[[TopicMap], str]
    own_logs: Callable[[TopicMap], tuple[str, ...]]
    """Output topics whose partition *p* holds everything partition *p* of the inbox
    built, in the order they are read back."""
    make_core: Callable[[dict[str, Market], TopicMap, int], Core]


ACCOUNTS = Role(
    "accounts",
    inbox=lambda topics: topics.account_commands,
    own_logs=lambda topics: (topics.user_events,),
    make_core=AccountProcessor,
)
MATCHING = Role(
    "matching",
    inbox=lambda topics: topics.matching_commands,
    own_logs=lambda topics: (topics.market_events, topics.order_events),
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
            core = self.cores.get(record.partition)
            expected = self.next_offsets.get(record.partition)
            if core is not None and expected is not None and record.offset < expected:
                continue
            if core is None or record.offset != expected:
                await self.publish(out)
                out = []
                core = await self._rebuild(record.partition, record.offset)
            out += core.handle(record)
            self.next_offsets[record.partition] = record.offset + 1
        await self.publish(out)

    async def _rebuild(self, partition: int, first_offset: int) -> Core:
        core = self.role.make_core(self.markets, self.topics, partition)
        restored = await self._restore(core, partition, first_offset)
        log.info(
            "%s partition %d: rebuilt from %d events, resuming at offset %d",
            self.role.name,
            partition,
            restored,
            first_offset,
        )
        self.cores[partition] = core
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
            )
            await self._producer.start()
        return self._producer

    async def _restore(self, core: Core, partition: int, first_offset: int) -> int:
        """Apply the partition's own outputs caused by inputs before ``first_offset``,
        and let the core note those inputs (what it has seen, for deduplication)."""
        inbox = self.role.inbox(self.topics)
        async with aclosing(read_partition(self.settings, inbox, partition)) as records:
            async for offset, value, headers in records:
                if offset >= first_offset:
                    break
                core.note_processed(InRecord(partition, offset, value, headers))
        restored = 0
        for topic in self.role.own_logs(self.topics):
            async for _, value, headers in read_partition(self.settings, topic, partition):
                cause = cause_offset(headers)
                stored = stored_event(value, headers)
                if stored is None or cause is None or cause[1] >= first_offset:
                    continue
                core.restore(stored, headers)
                restored += 1
        return restored


def build_app(role: Role, settings: Settings | None = None, instance: int = 0) -> faust.App:
    settings = settings or Settings.from_env()
    topics = TopicMap.from_env()
    runtime = ProcessorRuntime(role, settings, topics, demo_markets())
    app = faust.App(
        f"{topics.prefix}bitex-{role.name}",
        broker=f"kafka://{settings.kafka_bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        producer_acks=-1,
        stream_buffer_maxsize=4 * BATCH_SIZE,
        # Static membership: a restarted worker takes its place back at once.
        consumer_group_instance_id=f"{topics.prefix}bitex-{role.name}-{instance}",
        broker_max_poll_records=BATCH_SIZE,
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
                    _headers(event.message),
                )
                for event in events
            ]
            await runtime.process(batch)

    def on_revoked(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", ())
        runtime.forget([tp.partition for tp in revoked if tp.topic == inbox_name])

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]  # mode is untyped

    return app


def _headers(message: Any) -> list[tuple[str, bytes]]:
    raw = message.headers or ()
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(key), bytes(value)) for key, value in items]


def run_worker(role_name: str) -> None:
    """Run one processor role until stopped (``bitex worker accounts|matching``)."""
    role = ROLES[role_name]
    app = build_app(role)
    worker = faust.Worker(app, loglevel="info")
    worker.execute_from_commandline()
