"""Records in and out of a processor, independent of any Kafka client.

The processor cores take an ``InRecord`` and return ``OutRecord`` s; the Faust
agents move them to and from Kafka. That keeps the cores testable, and lets
a test run the same cores in process over the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from eventsourcing.domain import CanMutateAggregate

from infra.event_records import Headers, event_headers
from infra.serialization import EventMapper


@dataclass(frozen=True, slots=True)
class InRecord:
    partition: int
    offset: int
    value: bytes
    headers: Headers = ()

    @property
    def cause(self) -> bytes:
        return f"{self.partition}:{self.offset}".encode()


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    partition: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def event_records(
    mapper: EventMapper,
    events: Iterable[CanMutateAggregate[UUID]],
    topic: str,
    partition: int,
    cause: bytes,
) -> list[OutRecord]:
    """Each event as a record on ``topic``, keyed by its aggregate id."""
    records = []
    for event in events:
        stored = mapper.to_stored_event(event)
        records.append(
            OutRecord(
                topic,
                partition,
                str(stored.originator_id).encode(),
                stored.state,
                event_headers(stored, cause),
            )
        )
    return records
