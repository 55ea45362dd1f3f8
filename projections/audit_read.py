"""Reading event partitions for audits and rebuilds: fast, read-committed, up to an end.

An audit reads every record ever written, and aiokafka's consumer spends
several microseconds on each one (a Python generator step and a
``ConsumerRecord``), more than the replay itself. So fetch requests go straight
to each partition's leader through aiokafka's client, and records are taken
from the batches as its C parser yields them: about a microsecond a record.
The read-committed rules are the consumer's: the broker answers up to the
last stable offset, batches of aborted transactions and control batches are
skipped. The next fetch is in flight while the caller handles a batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Any

from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import NoError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.control_record import ABORT_MARKER, ControlRecord
from aiokafka.record.memory_records import MemoryRecords

from infra.event_records import Headers
from infra.kafka_io import end_offsets
from infra.settings import Settings

Record = tuple[int, bytes, Headers]
"""(offset, value, headers) of one record."""
Position = tuple[str, int]
"""(topic, partition)."""

READ_COMMITTED = 1
FETCH_BYTES = 4 * 1024 * 1024
"""At most this much a fetch. Larger answers cost more, not less: glibc's malloc maps
each buffer of 32 MB or more afresh and unmaps it after (smaller ones it learns to
keep), a page fault every 4 KB each time. At 32 MB a fetch, reading the log took a
quarter longer."""
FETCH_WAIT_MS = 100
RETRIES = 20


class ReadError(RuntimeError):
    """A partition could not be read to the end asked for."""


async def partition_ends(settings: Settings, topics: Sequence[str]) -> dict[Position, int]:
    """Each partition's end as a read-committed reader sees it now (its last stable offset)."""
    found = await end_offsets(settings, list(topics))
    return {(tp.topic, tp.partition): end for tp, end in sorted(found.items())}


class EventReader:
    """One client for the cluster; reads partitions from their leaders (``async with``)."""

    def __init__(self, settings: Settings, fetch_bytes: int = FETCH_BYTES) -> None:
        self.fetch_bytes = fetch_bytes
        self._client = AIOKafkaClient(
            bootstrap_servers=settings.kafka_bootstrap, client_id="bitex-audit"
        )

    async def __aenter__(self) -> EventReader:
        await self._client.bootstrap()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self._client.close()

    async def batches(
        self, topic: str, partition: int, start: int, end: int
    ) -> AsyncIterator[Fetched]:
        """The records of ``[start, end)`` of one partition, fetch by fetch."""
        await self._client.set_topics([topic])
        pending = None
        if start < end:
            pending = asyncio.ensure_future(self._fetch(topic, partition, start))
        try:
            while pending is not None:
                fetched = await pending
                pending = None
                if fetched.after < end:
                    pending = asyncio.ensure_future(self._fetch(topic, partition, fetched.after))
                fetched.end = min(end, fetched.after)
                if fetched.start < fetched.end:
                    yield fetched
        finally:
            if pending is not None:
                pending.cancel()

    async def _fetch(self, topic: str, partition: int, offset: int) -> Fetched:
        """One fetch from ``offset``."""
        tp = TopicPartition(topic, partition)
        cluster = self._client.cluster
        problem = "no answer"
        for _ in range(RETRIES):
            node = cluster.leader_for_partition(tp)
            if node is None or node < 0:
                problem = "no leader"
                await self._client.force_metadata_update()
                await asyncio.sleep(0.1)
                continue
            request = FetchRequest(
                FETCH_WAIT_MS,
                1,
                self.fetch_bytes,
                READ_COMMITTED,
                [(topic, [(partition, offset, self.fetch_bytes)])],
            )
            response: Any = await self._client.send(node, request)
            ((_, answers),) = response.topics
            ((_, code, _, *data),) = answers
            error = for_code(code)
            if error is NoError:
                aborted = data[2] if response.API_VERSION >= 11 else data[-2]
                fetched = _committed(data[-1], aborted, offset)
                if fetched.after > offset:
                    return fetched
                problem = "no records"
            else:
                problem = error.__name__
                if not getattr(error, "retriable", False) and not getattr(
                    error, "invalid_metadata", False
                ):
                    break
                await self._client.force_metadata_update()
            await asyncio.sleep(0.1)
        msg = f"cannot read {topic}[{partition}] at offset {offset}: {problem}"
        raise ReadError(msg)


class Fetched:
    """The committed record batches of one fetch; iterating gives the records of
    ``[start, end)`` as (offset, value, headers), straight from the C parser, none
    held longer than the caller holds it."""

    def __init__(self, batches: list[Any], start: int, after: int) -> None:
        self.batches = batches
        self.start = start
        self.after = after
        """The offset after the last batch: the next fetch starts there."""
        self.end = after

    def __len__(self) -> int:
        """Offsets covered (records, and any control records among them)."""
        return self.end - self.start

    def __iter__(self) -> Iterator[Record]:
        start, end = self.start, self.end
        for batch in self.batches:
            for record in batch:
                offset = record.offset
                if start <= offset < end:
                    yield offset, record.value or b"", record.headers


def _committed(
    raw: bytes | None, aborted: Sequence[tuple[int, int]] | None, offset: int
) -> Fetched:
    """The batches of one fetched message set that hold committed records from
    ``offset`` on (a transaction's aborted batches and control batches left out)."""
    if not raw:
        return Fetched([], offset, offset)
    pending = sorted(aborted or (), key=lambda item: item[1])
    aborting: set[int] = set()
    records = MemoryRecords(raw)
    after = offset
    kept: list[Any] = []
    while records.has_next():
        batch: Any = records.next_batch()
        if batch is None:
            break
        producer = batch.producer_id
        if producer is not None and producer >= 0:
            while pending and pending[0][1] <= batch.base_offset:
                aborting.add(pending.pop(0)[0])
            if batch.is_control_batch and _aborts(batch):
                aborting.discard(producer)
            if batch.is_transactional and producer in aborting:
                after = batch.next_offset
                continue
        if not batch.is_control_batch:
            kept.append(batch)
        after = batch.next_offset
    return Fetched(kept, offset, after)


def _aborts(batch: Any) -> bool:
    """Whether a control batch marks its producer's transaction aborted."""
    for record in batch:
        return bool(ControlRecord.parse(record.key) == ABORT_MARKER)
    return False
