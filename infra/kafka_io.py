"""Reading whole topics back: for processor recovery, audits and tests."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.event_records import Headers
from infra.settings import Settings


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )


async def end_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    """The end offset of every partition of the given topics, as of now."""
    consumer = _consumer(settings)
    await consumer.start()
    try:
        known = await consumer._client.fetch_all_metadata()
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(known.partitions_for_topic(topic) or ())
        ]
        # The client's own metadata must know the topics' leaders first, else the
        # consumer finds out by retrying, after a backoff: 0.1 s a topic, not 1 ms.
        await consumer._client.set_topics([topic for topic in topics if topic in known.topics()])
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def read_partition(
    settings: Settings, topic: str, partition: int, start: int = 0
) -> AsyncGenerator[tuple[int, bytes, Headers], None]:
    """(offset, value, headers) of every record of one partition from ``start`` (the
    beginning by default) up to its end as of now."""
    consumer = _consumer(settings)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        if start:
            consumer.seek(tp, start)
        else:
            await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for record in batches.get(tp, []):
                yield record.offset, record.value or b"", list(record.headers)
    finally:
        await consumer.stop()


async def read_topic(settings: Settings, topic: str) -> list[tuple[int, bytes, Headers]]:
    """(partition, value, headers) of every record, partition 0 first, in offset order."""
    out: list[tuple[int, bytes, Headers]] = []
    for tp in sorted(await end_offsets(settings, [topic]), key=lambda tp: tp.partition):
        async for _, value, headers in read_partition(settings, topic, tp.partition):
            out.append((tp.partition, value, headers))
    return out
