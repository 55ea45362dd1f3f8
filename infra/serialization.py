"""Domain events to bytes and back, through the eventsourcing Mapper.

The JSON is plain (a Decimal is a string with its full scale, a UUID a
string, a time ISO 8601), keys are sorted so the same event is always the
same bytes, and types are restored from each event class's annotations.

Decoding is on every reader's hot path (processors, projections, and the
audit replay, which decodes millions of events), so ``EventMapper`` does the
Mapper's steps with what they need worked out once per event topic (the
class, its id conversion, its version, its typed fields), and parses each
distinct id or amount string once: the values are immutable, so events may
share them. Times are parsed each time: nearly every event has its own, so
keeping them would cost a lookup that misses.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Hashable
from datetime import datetime
from decimal import Decimal
from types import UnionType
from typing import Any, NamedTuple, cast
from uuid import UUID

import orjson
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import (
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
    find_id_convertor,
)
from eventsourcing.utils import resolve_topic

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


PARSERS: dict[type, Callable[[str], object]] = {
    Decimal: Decimal,
    UUID: UUID,
    datetime: datetime.fromisoformat,
}
"""How a field typed with each of these types is read back from its JSON string."""

KEPT = frozenset({Decimal, UUID})
"""Types whose parsed values ``EventMapper`` keeps, by their string (they recur)."""


IDENTITY = frozenset({"originator_id", "originator_version"})
"""Fields the stored event's identity sets, typed already: not read from its JSON."""


class ParsedValues(dict[str, object]):
    """Strings already parsed into one type (ids, times, amounts), each parsed once:
    ``values[text]`` parses ``text`` the first time (in ``__missing__``, so a hit, the
    usual case, is a dict lookup and nothing more), and gives back any other hashable
    value as it is (already typed by an upcaster, or not a string in the JSON).

    Bounded: when full it starts again, so a long-running reader keeps at most
    ``limit`` values of each type.
    """

    def __init__(self, parse: Callable[[str], object], limit: int) -> None:
        super().__init__()
        self.parse = parse
        self.limit = limit

    def __missing__(self, text: object) -> object:
        if not isinstance(text, str):
            return text
        if len(self) >= self.limit:
            self.clear()
        value = self[text] = self.parse(text)
        return value


def conversions(event_class: type) -> tuple[tuple[str, type], ...]:
    """(field, type) for each field whose JSON form is a string of a richer type."""
    plan = []
    for name, hint in typing.get_type_hints(event_class).items():
        options = typing.get_args(hint) if isinstance(hint, UnionType) else (hint,)
        for option in options:
            if option in PARSERS:
                plan.append((name, option))
                break
    return tuple(plan)


class DecodingPlan(NamedTuple):
    """What decoding one event topic needs, found once."""

    event_class: type
    class_version: int
    fields: tuple[tuple[str, ParsedValues], ...]
    """Each field of a ``KEPT`` type, with the values of its type parsed so far."""
    parsed: tuple[tuple[str, Callable[[str], object]], ...]
    """Each other typed field, with its parser."""


class EventMapper(Mapper[UUID]):
    """The eventsourcing Mapper over orjson, restoring field types after upcasting."""

    def __init__(self, parsed_limit: int = 1 << 14) -> None:
        """``parsed_limit``: distinct strings of each type kept parsed (``ParsedValues``,
        about 190 bytes each). A long-running reader keeps its memory small by default; a
        replay of millions of events, which names each order in several of them, keeps more.
        """
        super().__init__(transcoder=OrjsonTranscoder())
        self._parsed = {kind: ParsedValues(PARSERS[kind], parsed_limit) for kind in KEPT}
        self._plans: dict[str, DecodingPlan] = {}

    def parsed_id(self, text: str) -> UUID:
        """The UUID ``text`` spells, the same object its events' fields hold (a reader
        that takes ids from record headers shares them with the events)."""
        return cast(UUID, self._parsed[UUID][text])

    def to_domain_event(self, stored_event: StoredEvent) -> CanMutateAggregate[UUID]:
        return self.decode(
            stored_event.topic,
            stored_event.originator_id,
            stored_event.originator_version,
            stored_event.state,
        )

    def decode(
        self, topic: str, originator_id: UUID | str, version: int, data: bytes
    ) -> CanMutateAggregate[UUID]:
        """The event of ``topic`` with this identity stored as ``data``: the Mapper's
        ``to_domain_event`` without building a ``StoredEvent`` first."""
        plan = self._plans.get(topic) or self._plan(topic)
        try:
            if self.cipher:
                data = self.cipher.decrypt(data)
            if self.compressor:
                data = self.compressor.decompress(data)
            state: dict[str, Any] = orjson.loads(data)  # what ``OrjsonTranscoder`` does
        except Exception as error:
            msg = (
                f"Failed to deserialise state of stored event with topic '{topic}', "
                f"originator_id '{originator_id}' and originator_version {version}: {error}"
            )
            raise MapperDeserialisationError(msg) from error
        event_class = plan.event_class
        if originator_id.__class__ is not UUID:  # as the Mapper converts it
            convert = find_id_convertor(event_class, cast(Hashable, type(originator_id)))
            originator_id = convert(originator_id)
        state["originator_id"] = originator_id
        state["originator_version"] = version
        from_version = state.pop("class_version", 1)
        while from_version < plan.class_version:
            getattr(event_class, f"upcast_v{from_version}_v{from_version + 1}")(state)
            from_version += 1
        for name, values in plan.fields:
            value = state.get(name)
            if value is not None:
                state[name] = values[value]
        for name, parse_each in plan.parsed:
            value = state.get(name)
            if isinstance(value, str):
                state[name] = parse_each(value)
        event: CanMutateAggregate[UUID] = object.__new__(event_class)
        object.__setattr__(event, "__dict__", state)
        return event

    def _plan(self, topic: str) -> DecodingPlan:
        event_class = resolve_topic(topic)
        typed = [  # the identity is the stored event's, typed already
            (name, kind) for name, kind in conversions(event_class) if name not in IDENTITY
        ]
        plan = DecodingPlan(
            event_class,
            getattr(event_class, "class_version", 1),
            fields=tuple((name, self._parsed[kind]) for name, kind in typed if kind in KEPT),
            parsed=tuple((name, PARSERS[kind]) for name, kind in typed if kind not in KEPT),
        )
        self._plans[topic] = plan
        return plan
