"""What every projection shares: the records it is fed and how it applies each event once.

A projection owns a store (MySQL or Redis). With every batch it writes, in the
same transaction, the next offset of each partition it consumed and the last
version of each aggregate it touched. So:

- a record below the stored offset of its partition was applied already
  (a re-delivery after a restart), and is skipped;
- an event whose version is at or below its aggregate's stored version is a
  duplicate re-emitted by a restarted processor, and is skipped after
  checking it is byte-identical when its first copy is still remembered;
- a gap in an aggregate's versions is an alarm (``ForkedEvent``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Context, Inexact, InvalidOperation, Overflow
from typing import Protocol
from uuid import UUID

from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import StoredEvent

from infra.dedupe import SeenEvents
from infra.event_records import Headers, stored_event
from infra.serialization import EventMapper

EXACT = Context(prec=80, traps=[InvalidOperation, Inexact, Overflow])
"""Decimal arithmetic that refuses to round: amounts in read models are always exact."""

DomainEvent = CanMutateAggregate[UUID]
Position = tuple[str, int]
"""(topic, partition)."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event read from an event topic, decoded once for every projection."""

    topic: str
    partition: int
    offset: int
    stored: StoredEvent
    event: DomainEvent

    @property
    def aggregate_id(self) -> UUID:
        return UUID(str(self.stored.originator_id))

    @property
    def version(self) -> int:
        return self.stored.originator_version


class Decoder:
    """Kafka records to EventRecords (records that carry no event are dropped)."""

    def __init__(self) -> None:
        self.mapper = EventMapper()

    def decode(
        self, topic: str, partition: int, offset: int, value: bytes, headers: Headers | None
    ) -> EventRecord | None:
        stored = stored_event(value, headers)
        if stored is None:
            return None
        return EventRecord(topic, partition, offset, stored, self.mapper.to_domain_event(stored))


VersionLookup = Callable[[Sequence[UUID]], Awaitable[dict[UUID, int]]]


@dataclass
class Applied:
    """What a projection's store has applied: next offsets and aggregate versions.

    ``positions`` is loaded once when the projection starts; versions are
    looked up lazily, for the aggregates a batch names that are not cached yet.
    """

    positions: dict[Position, int] = field(default_factory=dict)
    seen: SeenEvents = field(default_factory=SeenEvents)

    async def select(
        self, batch: Iterable[EventRecord], lookup: VersionLookup
    ) -> tuple[list[EventRecord], dict[Position, int]]:
        """The records of ``batch`` still to apply, and the positions after the batch.

        The caller writes those records, the new positions and the versions in
        ``versions_of(records)`` in one transaction, then calls ``commit``.
        """
        pending = [
            record
            for record in batch
            if record.offset >= self.positions.get((record.topic, record.partition), 0)
        ]
        unknown = list(
            {r.aggregate_id for r in pending if r.aggregate_id not in self.seen.versions}
        )
        if unknown:
            self.seen.versions.update(await lookup(unknown))
        moved: dict[Position, int] = {}
        fresh: list[EventRecord] = []
        for record in pending:
            moved[record.topic, record.partition] = record.offset + 1
            if self.seen.is_new(record.aggregate_id, record.version, record.stored.state):
                fresh.append(record)
        return fresh, moved

    def commit(self, moved: dict[Position, int]) -> None:
        self.positions.update(moved)

    def forget_versions(self) -> None:
        """Drop the cached versions (after the store was rolled back or rebuilt)."""
        self.seen = SeenEvents()


def versions_of(records: Iterable[EventRecord]) -> dict[UUID, int]:
    """The last version of each aggregate among ``records``."""
    return {record.aggregate_id: record.version for record in records}


class Projection(Protocol):
    """A read model fed by the event topics; applying a batch twice changes nothing."""

    name: str

    async def start(self) -> None:
        """Connect, and load what the store has applied."""

    async def apply(self, batch: Sequence[EventRecord]) -> None:
        """Apply a batch in one transaction with its offsets and versions."""

    async def positions(self) -> dict[Position, int]:
        """The next offset to apply, per (topic, partition): what lag is measured against."""

    async def close(self) -> None: ...
