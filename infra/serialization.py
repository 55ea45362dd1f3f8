"""Domain events to bytes and back, through the eventsourcing Mapper.

The JSON is plain (a Decimal is a string with its full scale, a UUID a
string, a time ISO 8601), keys are sorted so the same event is always the
same bytes, and types are restored from each event class's annotations.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from functools import cache
from types import UnionType
from typing import Any, cast
from uuid import UUID

import orjson
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder

_DUMPS_OPTIONS = orjson.OPT_SORT_KEYS


def _encode_other(obj: object) -> object:
    if isinstance(obj, Decimal):
        return format(obj, "f")
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    msg = f"cannot serialize {type(obj).__name__}"
    raise TypeError(msg)


class OrjsonTranscoder(Transcoder):
    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=_encode_other, option=_DUMPS_OPTIONS)

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)


_CONVERTERS: dict[type, Callable[[str], object]] = {
    Decimal: Decimal,
    UUID: UUID,
    datetime: datetime.fromisoformat,
}


@cache
def _conversions(event_class: type) -> tuple[tuple[str, Callable[[str], object]], ...]:
    """(field, converter) for each field whose JSON form is a string of a richer type."""
    plan = []
    for name, hint in typing.get_type_hints(event_class).items():
        options = typing.get_args(hint) if isinstance(hint, UnionType) else (hint,)
        for option in options:
            if option in _CONVERTERS:
                plan.append((name, _CONVERTERS[option]))
                break
    return tuple(plan)


class EventMapper(Mapper[UUID]):
    """The eventsourcing Mapper over orjson, restoring field types after upcasting."""

    def __init__(self) -> None:
        super().__init__(transcoder=OrjsonTranscoder())

    def to_domain_event(self, stored_event: StoredEvent) -> CanMutateAggregate[UUID]:
        event = cast("CanMutateAggregate[UUID]", super().to_domain_event(stored_event))
        state = vars(event)
        for name, convert in _conversions(cast(type, type(event))):
            value = state.get(name)
            if isinstance(value, str):
                state[name] = convert(value)
        return event
