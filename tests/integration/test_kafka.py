"""Kafka is real and set up the way BitEx needs: idempotent producers, transactions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from infra.kafka_admin import ensure_topics, event_topic
from infra.settings import Settings

pytestmark = pytest.mark.integration


async def _consume(
    consumer: AIOKafkaConsumer, count: int, timeout: float = 30.0
) -> list[ConsumerRecord]:
    """Read until `count` records arrived (or fail after `timeout` seconds)."""
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        assert time.monotonic() < deadline, f"got {len(records)} of {count} records"
        batches = await consumer.getmany(timeout_ms=500)
        for batch in batches.values():
            records.extend(batch)
    return records


async def test_idempotent_producer_round_trip(
    settings: Settings, unique: Callable[[str], str], topics: list[str]
) -> None:
    topic = unique("roundtrip")
    topics.append(topic)
    await ensure_topics([event_topic(topic, partitions=1)], settings)
    sent = [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(50)]

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        results = await asyncio.gather(
            *[await producer.send(topic, value=v, key=k) for k, v in sent]
        )
        # The broker handed this producer an id (InitProducerId): idempotence is on.
        assert producer._txn_manager is not None
        assert producer._txn_manager.producer_id >= 0
    finally:
        await producer.stop()
    assert [r.offset for r in results] == list(range(len(sent)))

    group = unique("group")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        records = await _consume(consumer, len(sent))
        await consumer.commit()
        committed = await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()
    assert [(r.key, r.value) for r in records] == sent
    assert committed == len(sent)  # the group's offset is stored (__consumer_offsets works)


async def test_transactions_committed_and_aborted(
    settings: Settings, unique: Callable[[str], str], topics: list[str]
) -> None:
    topic = unique("txn")
    topics.append(topic)
    await ensure_topics([event_topic(topic, partitions=1)], settings)

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, transactional_id=unique("txn-producer")
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-1")
            await producer.send_and_wait(topic, b"committed-2")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted-1")
        await producer.send_and_wait(topic, b"aborted-2")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-3")
    finally:
        await producer.stop()

    async def read(isolation_level: str, count: int) -> list[bytes | None]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level=isolation_level,
        )
        await consumer.start()
        try:
            return [r.value for r in await _consume(consumer, count)]
        finally:
            await consumer.stop()

    # read_committed sees exactly the committed records, in order...
    assert await read("read_committed", 3) == [b"committed-1", b"committed-2", b"committed-3"]
    # ...although the aborted ones are in the log (a read_uncommitted consumer sees them).
    assert await read("read_uncommitted", 5) == [
        b"committed-1",
        b"committed-2",
        b"aborted-1",
        b"aborted-2",
        b"committed-3",
    ]
