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

from infra.event_records import EVENT_ID, EVENT_VERSION, Headers, event_headers, header
from infra.serialization import EventMapper


@dataclass(frozen=True, slots=True)
class InRecord:
    partition: int
    offset: int
    value: bytes
    headers: Headers = ()
    timestamp: float = 0.0
    """When Kafka took the record (seconds since the epoch); 0 when unknown. Cores
    never read it: it only measures latency."""

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


def written_versions(records: Iterable[OutRecord]) -> dict[str, int]:
    """The newest version of each aggregate among ``records``' events.

    An outcome carries these, so a gateway can wait until the read models have
    applied what a command wrote (read-your-writes).
    """
    written: dict[str, int] = {}
    for record in records:
        aggregate_id, version = (
            header(record.headers, EVENT_ID),
            header(record.headers, EVENT_VERSION),
        )
        if aggregate_id is not None and version is not None:
            key = aggregate_id.decode()
            written[key] = max(written.get(key, 0), int(version))
    return written
