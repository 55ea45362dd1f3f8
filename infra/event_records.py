"""How a domain event travels as a Kafka record, and back.

The value is the event's JSON state (from the Mapper); the headers carry what
identifies it: its topic (class), its aggregate id and its version. Every
record a processor writes also names its cause, the input record it came
from, so a restarted processor knows exactly which inputs its log reflects.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

Headers = Sequence[tuple[str, bytes]]

EVENT_TOPIC = "bitex-event"
EVENT_ID = "bitex-id"
EVENT_VERSION = "bitex-version"
CAUSE = "bitex-cause"
"""``<input partition>:<input offset>`` of the record that produced this one."""


def event_headers(stored: StoredEvent, cause: bytes) -> list[tuple[str, bytes]]:
    return [
        (EVENT_TOPIC, stored.topic.encode()),
        (EVENT_ID, str(stored.originator_id).encode()),
        (EVENT_VERSION, str(stored.originator_version).encode()),
        (CAUSE, cause),
    ]


def header(headers: Headers | None, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name:
            return value
    return None


def message_headers(message: Any) -> list[tuple[str, bytes]]:
    """The headers of a consumed message (Faust or aiokafka), as (name, bytes) pairs."""
    raw = message.headers or ()
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(key), bytes(value)) for key, value in items]


def stored_event(value: bytes, headers: Headers | None) -> StoredEvent | None:
    """The StoredEvent a record carries, or None if the record is not an event."""
    topic = header(headers, EVENT_TOPIC)
    originator = header(headers, EVENT_ID)
    version = header(headers, EVENT_VERSION)
    if topic is None or originator is None or version is None:
        return None
    return StoredEvent(UUID(originator.decode()), int(version), topic.decode(), value)


def cause_offset(headers: Headers | None) -> tuple[int, int] | None:
    """(partition, offset) of the input that caused a record, if it names one."""
    raw = header(headers, CAUSE)
    if raw is None:
        return None
    partition, _, offset = raw.decode().partition(":")
    return int(partition), int(offset)


def fingerprint(state: bytes) -> int:
    """A cheap checksum of an event's bytes, to tell a true duplicate from a fork."""
    return zlib.crc32(state)
