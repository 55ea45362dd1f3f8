"""Replaying the event log for an audit: every aggregate rebuilt through the domain,
every event checked as it is applied.

Records are decoded by the same ``EventMapper`` the processors and projections
use, and applied by the same ``domain.replay.Replayer``. Two sides share the
work, and nothing else while they replay:

- ``MarketSide`` takes the market-events, then the order-events topic: trade
  tapes, orders and books, each fill checked against its trade;
- ``AccountSide`` takes the user-events topic, after the trades: accounts
  (through ``domain.audit_checks.AccountAudit``: double entry, balances,
  reservations and settlements checked event by event, each settlement
  against its trade) and users.

So ``replay`` runs them in two processes: a child takes some of the
user-events partitions, reads the trades first (``TradeTable``) and hands back
its accounts, ledger and findings at the end. Partitions are too coarse to
balance the two, so ``share`` gives whole partitions first and leaves the
smallest to be split by aggregate (``Split``): both processes read it last, each
replaying its own accounts. Where it is split is decided when the first process
reaches it (``Balance``): by then both have run for the same time, so how fast
each goes on this host is known, and the split makes them end together (the
child does not read it at all when this process takes all of it). The markets
are final before that partition: a forked copy of this process
(``infra.forked``) writes the venues' part of the state hash meanwhile.

The markets come from the log too. Each is listed by a ``TradeTape.Listed``, the
first event of its tape on the market-events topic, which both processes read
before anything else: so an account side starts with every market listed
before the cut, and the markets a replay is given are only those known before
its first event (none, for ``bitex replay``).

Before an event is decoded its identity is checked (``VersionTracker``): a
byte-identical copy of a version already applied is skipped and counted; a
copy with other bytes (a fork) or a version after a gap is a violation, and
after a gap, or an event the domain refuses, the aggregate is replayed no
further. Event kinds no side replays are skipped and counted: adding one
means adding its aggregate topic to a side's ``handlers``.
"""

from __future__ import annotations

import asyncio
import copyreg
import gc
import hashlib
import multiprocessing
import os
import pickle
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from typing import IO, TYPE_CHECKING, Any
from uuid import UUID, SafeUUID
from zlib import crc32

from domain.accounts import Account
from domain.aggregates import market_id_for
from domain.audit_checks import (
    ORDER_STATUS,
    SIDE_COUNT,
    TRADE,
    AccountAudit,
    ExecutedTrade,
    Verdict,
    VersionTracker,
    check_order,
    check_trade_side,
)
from domain.invariants import check_books
from domain.ledger import Ledger, Leg
from domain.markets import Market
from domain.orders import Order
from domain.replay import Replayer
from domain.state_hash import venues_part
from domain.users import User
from domain.venue import TradeTape
from infra.event_records import EVENT_ID, EVENT_TOPIC, EVENT_VERSION
from infra.forked import Forked
from infra.serialization import EventMapper
from infra.settings import Settings
from infra.topics import TopicMap
from projections.audit_read import EventReader, Position, Record, partition_ends
from projections.base import DomainEvent

if TYPE_CHECKING:
    from multiprocessing.context import ForkContext, SpawnContext

    # loaded only to compare (they import SQLAlchemy and redis)
    from projections.audit_compare import ReadModelDigests, TickerWindows

DIGEST_SIZE = 8
HASH_SEED = os.environ.get("PYTHONHASHSEED", "random")
KEYED = bool(sys.flags.hash_randomization) and HASH_SEED == "random"
"""Whether this process's ``hash`` of bytes is keyed at random (see ``digest``)."""
PARSED_VALUES = 1 << 18
"""Ids, times and amounts a side's ``EventMapper`` keeps parsed, per type (about 50 MB
at most each: an order's id recurs in its events over the whole of its life)."""

# Checks a replay reports itself (``domain.audit_checks`` names the others).
VERSION_GAP = "version_gap"
VERSION_FORK = "version_fork"
REFUSED = "refused"
UNDECODABLE = "undecodable"
MISPLACED = "misplaced"


@dataclass(frozen=True, slots=True)
class EventPlace:
    """An event a violation names: its identity, and where the log holds it if known."""

    aggregate_id: str
    version: int
    event: str = ""
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def to_json(self) -> dict[str, object]:
        found: dict[str, object] = {"aggregate_id": self.aggregate_id, "version": self.version}
        if self.event:
            found["event"] = self.event
        if self.topic is not None:
            found.update(topic=self.topic, partition=self.partition, offset=self.offset)
        return found

    def __str__(self) -> str:
        where = f" at {self.topic}[{self.partition}]@{self.offset}" if self.topic else ""
        return f"{self.event or 'event'} {self.aggregate_id} v{self.version}{where}"


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    message: str
    events: tuple[EventPlace, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "check": self.check,
            "message": self.message,
            "events": [place.to_json() for place in self.events],
        }


def digest(value: bytes) -> bytes:
    """What the ``VersionTracker`` keeps of an event's bytes, to tell a duplicate from a fork.

    A 64-bit SipHash (CPython's ``hash`` of bytes) under this process's random key:
    whoever wrote the log cannot know the key, so cannot make other bytes with the
    same digest, and it costs a fifth of a BLAKE2b. With the key fixed
    (``PYTHONHASHSEED`` set), a BLAKE2b of the same size.
    """
    if KEYED:
        return hash(value).to_bytes(DIGEST_SIZE, "little", signed=True)
    return hashlib.blake2b(value, digest_size=DIGEST_SIZE).digest()


def _topic_of(event: DomainEvent) -> str:
    return str(getattr(type(event), "TOPIC", type(event).__qualname__))


@dataclass(frozen=True)
class Cut:
    """Where a replay stops: events stamped at or before ``until`` (each aggregate's
    history stops at its first event stamped later), and per partition an end
    offset (exclusive); partitions not named are read to their end."""

    until: datetime | None = None
    offsets: Mapping[Position, int] = field(default_factory=dict)

    @property
    def is_whole_log(self) -> bool:
        return self.until is None and not self.offsets


def parse_offsets(spec: str, topics: TopicMap) -> dict[Position, int]:
    """``TOPIC:PARTITION=OFFSET[,...]`` (the report's ``positions`` form) to end offsets.

    A topic may be named without the ``BITEX_TOPIC_PREFIX`` prefix.
    """
    known = set(topics.event_topics)
    found: dict[Position, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        where, equals, offset = item.rpartition("=")
        topic, colon, partition = where.rpartition(":")
        if not (equals and colon and partition.isdigit() and offset.isdigit()):
            msg = f"--until-offset: {item!r} is not TOPIC:PARTITION=OFFSET"
            raise ValueError(msg)
        if topic not in known and topics.prefix + topic in known:
            topic = topics.prefix + topic
        if topic not in known:
            msg = f"--until-offset: {topic!r} is not an event topic ({', '.join(sorted(known))})"
            raise ValueError(msg)
        found[topic, int(partition)] = int(offset)
    return found


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while replaying.

    The state is millions of long-lived objects with hardly a cycle among them
    (a few hundred unreachable objects per 100,000 events), so collections
    would only walk them again and again: a third of the time. Afterwards the
    survivors are frozen (``gc.freeze``), so later collections skip them too.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@dataclass
class Route:
    """What a side does with the events of one event topic (class)."""

    topic: str
    kind: str
    handler: Callable[[DomainEvent, int], None] | None


class Side:
    """Replays the partitions of some topics, checking every event (see the module docstring)."""

    topics: tuple[str, ...] = ()

    def __init__(self, markets: dict[str, Market], until: datetime | None, compare: bool) -> None:
        self.replayer = Replayer(markets)
        self.mapper = EventMapper(parsed_limit=PARSED_VALUES)
        self.tracker = VersionTracker(DIGEST_SIZE)
        self.until = until
        self.compare = compare
        self.violations: list[Violation] = []
        self.counts: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.handlers: dict[str, Callable[[DomainEvent, int], None]] = {}
        self.others: frozenset[str] = frozenset()
        """Aggregate topics the other side replays: met here, they are misplaced."""
        self._routes: dict[bytes, Route] = {}
        self._ids: dict[bytes, UUID] = {}
        """Each aggregate's id by its header's bytes (no decoding per record); the UUID is
        the mapper's (``EventMapper.parsed_id``), the object its events' fields hold."""
        self._after_cut: set[bytes] = set()
        self._topic = ""
        self._partition = 0
        self.only: bytes | None = None
        """If set, the id (as its header spells it) of the one aggregate to replay."""
        self.owned: dict[Position, Callable[[bytes | None], bool]] = {}
        """Partitions shared with another process (``Split``): whether a record, by its
        aggregate's id as its header spells it (None: not an event), is this side's."""

    def feed(self, topic: str, partition: int, records: Iterable[Record]) -> None:
        """Replay and check one partition's next records, in offset order."""
        self._topic, self._partition = topic, partition
        see = self.tracker.see
        routes, ids = self._routes, self._ids
        decode = self.mapper.decode
        until, after_cut = self.until, self._after_cut
        only = self.only
        owns = self.owned.get((topic, partition))
        new = Verdict.NEW
        applied = 0
        for offset, value, headers in records:
            if (  # the processors write these three first, in this order
                len(headers) > 2
                and headers[0][0] == EVENT_TOPIC
                and headers[1][0] == EVENT_ID
                and headers[2][0] == EVENT_VERSION
            ):
                name: bytes | None = headers[0][1]
                raw_id: bytes | None = headers[1][1]
                raw_version: bytes | None = headers[2][1]
            else:
                fields = dict(headers)
                name, raw_id, raw_version = (
                    fields.get(EVENT_TOPIC),
                    fields.get(EVENT_ID),
                    fields.get(EVENT_VERSION),
                )
            if owns is not None and not owns(raw_id):
                continue
            if name is None or raw_id is None or raw_version is None:
                self.counts["not_events"] += 1
                continue
            if only is not None and raw_id != only:
                continue
            if until is not None and raw_id in after_cut:
                self.counts["after_cut"] += 1
                continue
            version = int(raw_version)
            verdict = see(raw_id, version, digest(value))
            route = routes.get(name) or self._route(name)
            if verdict is not new:
                self._identity(verdict, route, raw_id, version, offset)
                continue
            handler = route.handler
            if handler is None:
                self._skip(route, raw_id, version, offset)
                continue
            aggregate_id = ids.get(raw_id) or self._id(raw_id)
            try:
                event = decode(route.topic, aggregate_id, version, value)
            except Exception as error:
                self._halt(raw_id, UNDECODABLE, f"cannot be decoded: {error}", route, offset)
                continue
            if until is not None and event.timestamp > until:
                after_cut.add(raw_id)
                self.counts["after_cut"] += 1
                continue
            try:
                handler(event, offset)
            except Exception as error:
                message = f"the domain refuses it: {type(error).__name__}: {error}"
                self._halt(raw_id, REFUSED, message, route, offset)
                continue
            applied += 1
        self.counts["events"] += applied

    # -- routing and identity ------------------------------------------------------

    def _route(self, name: bytes) -> Route:
        topic = name.decode()
        kind = topic.rpartition(".")[0]
        route = self._routes[name] = Route(topic, kind, self.handlers.get(kind))
        return route

    def _id(self, raw_id: bytes) -> UUID:
        aggregate_id = self._ids[raw_id] = self.mapper.parsed_id(raw_id.decode())
        return aggregate_id

    def _place(self, raw_id: bytes, version: int, route: Route, offset: int) -> EventPlace:
        return EventPlace(
            raw_id.decode(), version, route.topic, self._topic, self._partition, offset
        )

    def _identity(
        self, verdict: Verdict, route: Route, raw_id: bytes, version: int, offset: int
    ) -> None:
        if verdict is Verdict.DUPLICATE:
            self.counts["duplicates"] += 1
        elif verdict is Verdict.HALTED:
            self.counts["halted"] += 1
        elif verdict is Verdict.FORK:
            self.counts["forks"] += 1
            place = self._place(raw_id, version, route, offset)
            message = (
                f"{raw_id.decode()} v{version} arrived again with other bytes than the "
                "copy applied (a forged or forked event)"
            )
            self.violations.append(Violation(VERSION_FORK, message, (place,)))
        else:
            last = self.tracker.last_version(raw_id)
            message = f"{raw_id.decode()} jumps from v{last} to v{version}"
            self._halt(raw_id, VERSION_GAP, message, route, offset, version)

    def _skip(self, route: Route, raw_id: bytes, version: int, offset: int) -> None:
        if route.kind in self.others:
            message = f"{route.topic} on {self._topic}, which does not carry {route.kind} events"
            self._halt(raw_id, MISPLACED, message, route, offset, version)
        else:
            self.skipped[route.kind] += 1

    def _halt(
        self,
        raw_id: bytes,
        check: str,
        message: str,
        route: Route,
        offset: int,
        version: int | None = None,
    ) -> None:
        if version is None:
            version = self.tracker.last_version(raw_id)
        place = self._place(raw_id, version, route, offset)
        later = "; its later events are not replayed"
        self.violations.append(Violation(check, f"{route.topic}: {message}{later}", (place,)))
        self.tracker.halt(raw_id)

    def violation(self, check: str, message: str, event: DomainEvent, offset: int) -> None:
        place = EventPlace(
            str(event.originator_id),
            event.originator_version,
            _topic_of(event),
            self._topic,
            self._partition,
            offset,
        )
        self.violations.append(Violation(check, message, (place,)))


def _digests(markets: dict[str, Market]) -> ReadModelDigests:
    from projections.audit_compare import ReadModelDigests

    return ReadModelDigests(markets)


def _windows(markets: dict[str, Market]) -> TickerWindows:
    from projections.audit_compare import TickerWindows

    return TickerWindows(markets)


def executed(event: TradeTape.TradeExecuted, symbol: str) -> ExecutedTrade:
    return ExecutedTrade(
        event.trade_id,
        symbol,
        event.price,
        event.quantity,
        event.taker_order_id,
        event.maker_order_id,
        event.originator_id,
        event.originator_version,
    )


class AccountSide(Side):
    """Accounts and users, from the user-events topic.

    ``trades`` are the trades the markets executed (read before): each
    settlement is checked against its trade as it is applied (None: not checked).
    """

    def __init__(
        self,
        markets: dict[str, Market],
        until: datetime | None,
        compare: bool,
        trades: Mapping[str, ExecutedTrade] | None,
    ) -> None:
        super().__init__(markets, until, compare)
        self.audit = AccountAudit(self.replayer)
        self.trades = trades
        self.settled: dict[str, int] = {}
        """Per trade, its sides settled (a sum of ``SIDE_COUNT``)."""
        self.digests = _digests(markets) if compare else None
        self.handlers = {Account.TOPIC: self._account, User.TOPIC: self._replay}
        self.others = frozenset({Order.TOPIC, TradeTape.TOPIC})

    def _account(self, event: DomainEvent, offset: int) -> None:
        assert isinstance(event, Account.Event)
        legs, found = self.audit.apply(event)
        me = event.originator_id
        for check, message in found:
            self.violation(check, f"account {me}: {message}", event, offset)
        if type(event) is Account.TradeSettled and self.trades is not None:
            trade_id = event.trade_id
            trade = self.trades.get(trade_id)
            if trade is None:
                message = f"account {me} settles trade {trade_id}, which no market executed"
                self.violation(TRADE, message, event, offset)
            else:
                for message in check_trade_side(
                    trade, event.role, event.order_id, event.price, event.quantity
                ):
                    self.violation(TRADE, f"account {me} settles {message}", event, offset)
            self.settled[trade_id] = self.settled.get(trade_id, 0) + SIDE_COUNT.get(event.role, 0)
        if self.digests is not None:
            self.digests.add(event, legs)
        self.posted(event, legs)

    def posted(self, event: Account.Event, legs: Sequence[Leg]) -> None:
        """Called with each account event applied and its posting (for statements)."""

    def _replay(self, event: DomainEvent, offset: int) -> None:
        self.replayer.apply(event)

    def result(self) -> AccountResult:
        return AccountResult(
            accounts=self.replayer.accounts,
            users=self.replayer.users,
            ledger=self.audit.ledger,
            violations=self.violations,
            counts=self.counts,
            skipped=self.skipped,
            halted=len(self.tracker.halted),
            settled=self.settled,
            digests=self.digests,
        )


@dataclass(repr=False)
class AccountResult:
    """What the account side hands back (from its process): picklable. Its ``repr`` is
    short: ``asyncio.run`` formats the result it returns, twice, on CPython 3.11."""

    accounts: dict[UUID, Account]
    users: dict[UUID, User]
    ledger: Ledger
    violations: list[Violation]
    counts: Counter[str]
    skipped: Counter[str]
    halted: int
    settled: dict[str, int]
    digests: ReadModelDigests | None

    def __repr__(self) -> str:
        return f"AccountResult({len(self.accounts)} accounts, {len(self.violations)} violations)"


class TradeTable(Side):
    """Only the trades of the market-events topic: what a process replaying no
    markets checks settlements against. Its findings are the market side's to
    report, so it keeps none."""

    def __init__(self, markets: dict[str, Market], until: datetime | None) -> None:
        super().__init__(markets, until, compare=False)
        self.trades: dict[str, ExecutedTrade] = {}
        self.symbols = {market_id_for(symbol): symbol for symbol in markets}
        self.handlers = {TradeTape.TOPIC: self._tape}

    def _tape(self, event: DomainEvent, offset: int) -> None:
        if type(event) is TradeTape.TradeExecuted:
            symbol = self.symbols.get(event.originator_id) or event.trade_id.rpartition(":")[0]
            self.trades.setdefault(event.trade_id, executed(event, symbol))
        elif type(event) is TradeTape.Listed:  # the market, for the account side after
            self.replayer.apply(event)
            self.symbols[event.originator_id] = event.symbol


class MarketSide(Side):
    """Trade tapes, orders and books: the market-events topic, then the order-events topic
    (each fill is checked against its trade as it is applied)."""

    def __init__(self, markets: dict[str, Market], until: datetime | None, compare: bool) -> None:
        super().__init__(markets, until, compare)
        self.trades: dict[str, ExecutedTrade] = {}
        self.filled: dict[str, int] = {}
        """Per trade, its sides filled (a sum of ``SIDE_COUNT``)."""
        self.symbols = {market_id_for(symbol): symbol for symbol in markets}
        self.windows = _windows(markets) if compare else None
        self.handlers = {Order.TOPIC: self._order, TradeTape.TOPIC: self._tape}
        self.others = frozenset({Account.TOPIC, User.TOPIC})

    def _order(self, event: DomainEvent, offset: int) -> None:
        self.replayer.apply(event)
        if isinstance(event, Order.PartiallyFilled):
            trade_id, order_id = event.trade_id, event.originator_id
            trade = self.trades.get(trade_id)
            if trade is None:
                message = (
                    f"order {order_id} is filled by trade {trade_id}, which no market executed"
                )
                self.violation(TRADE, message, event, offset)
            else:
                for message in check_trade_side(
                    trade, event.role, order_id, event.price, event.quantity
                ):
                    self.violation(TRADE, f"order {order_id} fills {message}", event, offset)
            self.filled[trade_id] = self.filled.get(trade_id, 0) + SIDE_COUNT.get(event.role, 0)

    def _tape(self, event: DomainEvent, offset: int) -> None:
        self.replayer.apply(event)
        if type(event) is not TradeTape.TradeExecuted:
            if type(event) is TradeTape.Listed:
                self.symbols[event.originator_id] = event.symbol
            return
        tape_id, version = event.originator_id, event.originator_version
        symbol = self.symbols.get(tape_id) or event.trade_id.rpartition(":")[0]
        if event.trade_id != f"{symbol}:{version - 1}":
            message = f"trade {event.trade_id} is trade {version - 1} of {symbol}'s tape"
            self.violation(TRADE, message, event, offset)
        if event.trade_id in self.trades:
            self.violation(TRADE, f"trade {event.trade_id} executed twice", event, offset)
            return
        self.trades[event.trade_id] = executed(event, symbol)
        if self.windows is not None:
            self.windows.add(symbol, event)

    def finish(self) -> None:
        """The checks of the markets' final state: each order's status against its fills
        and the book, and each book uncrossed (the other side's work may still run)."""
        for venue in self.replayer.venues.values():
            book = venue.book.orders
            for order_id, order in venue.orders.items():
                problems = check_order(order, book.get(order_id), venue.market)
                if problems:
                    place = EventPlace(str(order_id), order.version, Order.TOPIC)
                    message = f"order {order_id} " + "; ".join(problems)
                    self.violations.append(Violation(ORDER_STATUS, message, (place,)))
        for problem in check_books(self.replayer.venues.values()):
            self.violations.append(Violation("book", f"at the end: {problem}"))


@dataclass(repr=False)
class Replay:
    """A rebuilt state with what was found on the way (a short ``repr``: the state is
    millions of objects, see ``projections.audit.AuditReport``)."""

    replayer: Replayer
    ledger: Ledger
    violations: list[Violation]
    counts: Counter[str]
    skipped: Counter[str]
    halted: int
    trades: dict[str, ExecutedTrade]
    filled: dict[str, int]
    settled: dict[str, int]
    digests: ReadModelDigests | None
    windows: TickerWindows | None
    positions: dict[Position, int]
    venue_lines: bytes
    """The venues' part of the state hash (``domain.state_hash.venues_part``)."""
    records: int
    seconds: float

    def __repr__(self) -> str:
        return f"Replay({self.counts['events']} events, {len(self.violations)} violations)"


def merge(
    accounts: AccountResult,
    market: MarketSide,
    positions: dict[Position, int],
    venue_lines: bytes,
) -> Replay:
    replayer = market.replayer
    replayer.accounts = accounts.accounts
    replayer.users = accounts.users
    violations = accounts.violations + market.violations
    return Replay(
        replayer=replayer,
        ledger=accounts.ledger,
        violations=violations,
        counts=accounts.counts + market.counts,
        skipped=accounts.skipped + market.skipped,
        halted=accounts.halted + len(market.tracker.halted),
        trades=market.trades,
        filled=market.filled,
        settled=accounts.settled,
        digests=accounts.digests,
        windows=market.windows,
        positions=positions,
        venue_lines=venue_lines,
        records=0,
        seconds=0.0,
    )


# -- reading the log into the sides ----------------------------------------------------

Spans = list[tuple[Position, int, int]]
"""(topic, partition), start, end: the records to read."""


async def plan(settings: Settings, topics: Sequence[str], cut: Cut) -> Spans:
    """Every partition of ``topics`` from offset 0 to its end, or the cut's end."""
    ends = await partition_ends(settings, topics)
    order = {topic: index for index, topic in enumerate(topics)}
    spans = [
        (position, 0, min(end, cut.offsets.get(position, end))) for position, end in ends.items()
    ]
    return sorted(spans, key=lambda span: (order[span[0][0]], span[0][1]))


async def read_into(
    side: Side, settings: Settings, spans: Spans, tick: Callable[[int], None]
) -> None:
    """Feed ``spans`` to ``side``, partition after partition; ``tick`` gets each fetch's size."""
    async with EventReader(settings) as reader:
        for (topic, partition), start, end in spans:
            async for records in reader.batches(topic, partition, start, end):
                side.feed(topic, partition, records)
                tick(len(records))


def _uuid_by_int(value: UUID) -> tuple[Callable[[int], UUID], tuple[int]]:
    return uuid_of_int, (value.int,)


def uuid_of_int(value: int) -> UUID:
    """``UUID(int=value)`` without its checks (the value is a UUID's own ``int``)."""
    made = object.__new__(UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", SafeUUID.unknown)
    return made


def _account_packed(
    account: Account,
) -> tuple[Callable[..., Account], tuple[dict[str, Any], bytes]]:
    state = account.__dict__.copy()
    order_ids: set[UUID] = state.pop("order_ids")
    return account_unpacked, (state, b"".join([order_id.bytes for order_id in order_ids]))


def account_unpacked(state: dict[str, Any], order_ids: bytes) -> Account:
    """An account from its pickled state, its order ids given as one ``bytes``
    (``uuid_of_int`` written out, its names looked up once: this runs once per order,
    and the lookups are a third of its time)."""
    new, assign, from_bytes = object.__new__, object.__setattr__, int.from_bytes
    unknown = SafeUUID.unknown
    ids = set()
    for start in range(0, len(order_ids), 16):
        made = new(UUID)
        assign(made, "int", from_bytes(order_ids[start : start + 16]))
        assign(made, "is_safe", unknown)
        ids.add(made)
    account: Account = object.__new__(Account)
    state["order_ids"] = ids
    account.__dict__.update(state)
    return account


class _ResultPickler(pickle.Pickler):
    """Pickles a UUID as its ``int``, made back without ``UUID.__init__``'s checks: a
    fraction of the time of its own ``__getstate__``. An account's order ids, a UUID for
    every order it ever placed (a child hands back hundreds of thousands), go as one
    ``bytes`` of 16 each: a tenth of the time to write, two thirds to read."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.dispatch_table = {
            **copyreg.dispatch_table,
            UUID: _uuid_by_int,
            Account: _account_packed,
        }


def hand_back(connection: Connection, result: object) -> None:
    """Write ``result`` down the pipe as it is pickled (``take_back`` reads it): the other
    process reads each frame as it comes, so writing and reading overlap instead of
    adding up (about a sixth of a second each for a child's accounts)."""
    with os.fdopen(os.dup(connection.fileno()), "wb") as stream:
        _ResultPickler(stream).dump(result)


def take_back(connection: Connection) -> Any:
    """What ``hand_back`` wrote down the pipe (raises ``EOFError`` if the writer died)."""
    with os.fdopen(os.dup(connection.fileno()), "rb") as stream:
        return pickle.load(stream)


def _account_process(
    connection: Connection,
    settings: Settings,
    trade_spans: Spans,
    spans: Spans,
    balance: Balance,
    markets: dict[str, Market],
    until: datetime | None,
    compare: bool,
    done: Any,
) -> None:
    """The child's work: the trades, then its account side (its partitions, then its
    aggregates of the shared one); sends back its result (or the error)."""
    try:
        table = TradeTable(markets, until)

        def trades_read(count: int) -> None:
            balance.did(THERE, TRADE_WEIGHT * count)

        def accounts_read(count: int) -> None:
            done.value += count
            balance.did(THERE, ACCOUNT_WEIGHT * count)

        def uncounted(count: int) -> None:  # the other process counts the shared partition
            pass

        async def work() -> AccountResult:
            await read_into(table, settings, trade_spans, trades_read)
            side = AccountSide(markets, until, compare, table.trades)  # markets: now listed
            await read_into(side, settings, spans, accounts_read)
            split = balance.split()
            if split.bound < SPLIT_BOUNDS:  # else the other process replays all of it
                side.owned[split.position] = split.owner(here=False)
                await read_into(side, settings, [split.span], uncounted)
            return side.result()

        with collector_paused():
            result = asyncio.run(work())
        outcome: tuple[str, object] = ("ok", result)
    except BaseException:
        outcome = ("error", traceback.format_exc())
    try:
        hand_back(connection, outcome)
    finally:
        connection.close()


SHARED_FROM = 100_000
"""Records from which a second process pays for what it adds (its own read of the
trades, its result handed back: about half a second)."""
# What a record costs, in market records (orders, trades) replayed and checked:
ACCOUNT_WEIGHT = 1.85
"""an account event, replayed and checked;"""
TRADE_WEIGHT = 0.7
"""a market record the child reads for its trade table;"""
SKIP_WEIGHT = 0.15
"""a record of the split partition that the other process replays (read, not decoded);"""
FINISH_WEIGHT = 0.07
"""a market record's part in the markets' final checks, which this process does once its
reading is done;"""
HASH_WEIGHT = 0.08
"""its part in the venues' hash, which a fork of this process writes while both read the
shared partition;"""
HAND_BACK_WEIGHT = 0.03
"""an account event's part in the child's result, written once its reading is done."""
SPLIT_BOUNDS = 1 << 32
HERE, THERE = 0, 1
"""The two processes: this one (with the markets) and the child."""


@dataclass(frozen=True)
class Split:
    """A user-events partition both processes read, each replaying its own aggregates:
    this process those whose id's CRC-32 is below ``bound``, the child the others."""

    span: tuple[Position, int, int]
    bound: int

    @property
    def position(self) -> Position:
        return self.span[0]

    def owner(self, here: bool) -> Callable[[bytes | None], bool]:
        """Whether a record (by its aggregate id) is this process's, or the child's; a
        record that is no event is this process's, so that it is counted once."""
        bound = self.bound
        if here:
            return lambda raw_id: raw_id is None or crc32(raw_id) < bound
        return lambda raw_id: raw_id is not None and crc32(raw_id) >= bound


def records_in(spans: Spans) -> int:
    """How many records (offsets) ``spans`` cover."""
    return sum(end - start for _, start, end in spans)


def work(
    market_spans: Spans, trade_spans: Spans, here: Spans, there: Spans
) -> tuple[tuple[float, float], tuple[float, float]]:
    """The work of each process (``HERE``, ``THERE``), in market records by the weights
    above: before the shared partition, and after it (the final checks here, the
    hand-back there, the venues' hash half on each)."""
    markets = records_in(market_spans)
    hashing = HASH_WEIGHT * markets / 2
    before = (
        markets + ACCOUNT_WEIGHT * records_in(here),
        TRADE_WEIGHT * records_in(trade_spans) + ACCOUNT_WEIGHT * records_in(there),
    )
    after = (FINISH_WEIGHT * markets + hashing, HAND_BACK_WEIGHT * records_in(there) + hashing)
    return before, after


def share(
    account_spans: Spans, market_spans: Spans, trade_spans: Spans | None = None
) -> tuple[Spans, Spans, tuple[Position, int, int] | None]:
    """Share the user-events partitions between this process (which also replays the
    markets) and a child (which reads ``trade_spans`` first): whole partitions, the
    largest first, each to the process with less work so far; the smallest is left to
    be split by aggregate (``Balance``), once the processes' speeds are known."""
    here: Spans = []
    there: Spans = []
    if not account_spans:
        return here, there, None
    *whole, last = sorted(account_spans, key=lambda span: span[1] - span[2])
    for span in whole:
        before, after = work(market_spans, trade_spans or [], here, there)
        if before[THERE] + after[THERE] <= before[HERE] + after[HERE]:
            there.append(span)
        else:
            here.append(span)
    return here, there, last


def split_bound(done: Sequence[float], left: Sequence[float], records: int) -> int:
    """Where to split a partition of ``records`` (``Split.bound``) so that both processes
    end together, given the work each has done in the same time (so their speeds) and
    the work each has left besides its part of the split.

    Here takes the fraction ``f`` of the aggregates: its time left is
    ``(left_here + records * (f * ACCOUNT + (1 - f) * SKIP)) / speed_here``, and the
    child's the same with ``1 - f``; ``f`` makes the two equal (kept within 0 and 1).
    """
    done_here, done_there = done if min(done) > 0 else (1.0, 1.0)  # no speed yet: alike
    left_here, left_there = left
    if records <= 0:
        return SPLIT_BOUNDS
    gap = records * (ACCOUNT_WEIGHT - SKIP_WEIGHT)
    fraction = (
        done_here * (left_there + records * ACCOUNT_WEIGHT)
        - done_there * (left_here + records * SKIP_WEIGHT)
    ) / (gap * (done_here + done_there))
    return round(min(max(fraction, 0.0), 1.0) * SPLIT_BOUNDS)


class Balance:
    """What the two processes share while they replay: the work each has done (in market
    records, by the weights above), and where the shared partition is split.

    The first process to reach that partition splits it, so that the two end together
    (``split_bound``): by then both have run for the same time, so their speeds are
    known, whatever the host lets each of them have.
    """

    def __init__(
        self,
        context: ForkContext | SpawnContext,
        span: tuple[Position, int, int],
        before: tuple[float, float],
        after: tuple[float, float],
    ) -> None:
        self.span = span
        self.before, self.after = before, after
        """The work of each process before the shared partition, and after it (``work``)."""
        self._done = context.Array("d", 2, lock=False)
        self._bound = context.Value("q", -1)

    def did(self, process: int, work: float) -> None:
        self._done[process] += work  # each process writes its own slot only

    def split(self) -> Split:
        """The split of the shared partition, decided by the first process to ask."""
        with self._bound.get_lock():
            if self._bound.value < 0:
                done = (self._done[HERE], self._done[THERE])
                left = [max(self.before[p] - done[p], 0.0) + self.after[p] for p in (HERE, THERE)]
                self._bound.value = split_bound(done, left, self.span[2] - self.span[1])
            return Split(self.span, int(self._bound.value))


def merge_accounts(results: Sequence[AccountResult]) -> AccountResult:
    """The account sides of disjoint partitions as one (accounts live in one partition)."""
    first, *rest = results
    for other in rest:
        first.accounts.update(other.accounts)
        first.users.update(other.users)
        for key, units in other.ledger.balances.items():
            first.ledger.balances[key] += units
        first.violations += other.violations
        first.counts += other.counts
        first.skipped += other.skipped
        first.halted += other.halted
        for trade_id, count in other.settled.items():
            first.settled[trade_id] = first.settled.get(trade_id, 0) + count
        if first.digests is not None and other.digests is not None:
            first.digests.merge(other.digests)
    return first


async def replay(
    settings: Settings,
    topics: TopicMap,
    markets: dict[str, Market],
    cut: Cut,
    compare: bool,
    processes: int | None,
    report: Callable[[int, int], None] | None = None,
) -> Replay:
    """Rebuild and check the whole state from the log (see the module docstring).

    With ``processes`` 2 a child process replays some of the user-events
    partitions (``share``); None chooses: 2 when the machine has two CPUs and
    the log is long enough to pay for starting a process. ``report`` is called
    now and then with (records read, records to read).
    """
    started = time.perf_counter()
    markets = dict(markets)  # the listings read are added to it
    account_spans = await plan(settings, [topics.user_events], cut)
    trade_spans = await plan(settings, [topics.market_events], cut)
    order_spans = await plan(settings, [topics.order_events], cut)
    spans = account_spans + trade_spans + order_spans
    total = records_in(spans)
    positions = {position: end for position, _, end in spans}
    market_spans = trade_spans + order_spans
    if processes is None:
        enough = total >= SHARED_FROM and (os.cpu_count() or 1) > 1
        processes = 2 if enough else 1
    here, there, shared = account_spans, Spans(), None
    if processes > 1:
        here, there, shared = share(account_spans, market_spans, trade_spans)
    read = [0]
    child = balance = None
    if shared is not None:
        context = _context()
        balance = Balance(context, shared, *work(market_spans, trade_spans, here, there))
        child = Child(context, settings, trade_spans, there, balance, markets, cut.until, compare)

    def counted(weight: float) -> Callable[[int], None]:
        """What reading a span of records of this ``weight`` each reports."""

        def tick(count: int) -> None:
            read[0] += count
            if balance is not None:
                balance.did(HERE, weight * count)
            if report is not None:
                report(read[0] + (child.done() if child else 0), total)

        return tick

    hashing = None
    with collector_paused():
        try:
            if child is not None:
                child.start()
            market = MarketSide(markets, cut.until, compare)
            await read_into(market, settings, trade_spans, counted(1.0))
            accounts = AccountSide(markets, cut.until, compare, market.trades)  # now listed
            await read_into(accounts, settings, here, counted(ACCOUNT_WEIGHT))
            await read_into(market, settings, order_spans, counted(1.0))
            venues = list(market.replayer.venues.values())  # final
            if balance is not None:  # the shared partition last, split by progress so far
                hashing = Forked(lambda: venues_part(venues))  # meanwhile, on both cores
                split = balance.split()
                accounts.owned[split.position] = split.owner(here=True)
                await read_into(accounts, settings, [split.span], counted(0.0))
            market.finish()
            results = [accounts.result()]
            # the hash first: it is done by now, and taking it in overlaps the child's hand-back
            venue_lines = venues_part(venues) if hashing is None else hashing.result()
            if child is not None:
                results.append(child.result(counted(0.0)))
        finally:
            if child is not None:
                child.stop()
            if hashing is not None:
                hashing.stop()
        replayed = merge(merge_accounts(results), market, positions, venue_lines)
    replayed.records = total
    replayed.seconds = time.perf_counter() - started
    return replayed


class Child:
    """A process replaying some user-events partitions (``_account_process``).

    Forked where the platform can: it starts at once with everything imported,
    a quarter of a second sooner than a spawned interpreter, and it is forked
    before this process holds any state or connection of its own.
    """

    def __init__(
        self,
        context: ForkContext | SpawnContext,
        settings: Settings,
        trade_spans: Spans,
        spans: Spans,
        balance: Balance,
        markets: dict[str, Market],
        until: datetime | None,
        compare: bool,
    ) -> None:
        self._done = context.Value("q", 0, lock=False)
        self._receiver, sender = context.Pipe(duplex=False)
        self._sender = sender
        self._process = context.Process(
            target=_account_process,
            args=(
                sender,
                settings,
                trade_spans,
                spans,
                balance,
                markets,
                until,
                compare,
                self._done,
            ),
            name="bitex-replay-accounts",
            daemon=True,
        )

    def start(self) -> None:
        self._process.start()
        self._sender.close()

    def done(self) -> int:
        """Records the child has replayed so far."""
        return int(self._done.value)

    def result(self, waiting: Callable[[int], None]) -> AccountResult:
        """Wait for the child's account side (calling ``waiting(0)`` now and then)."""
        while not self._receiver.poll(0.25):
            waiting(0)
            if not self._process.is_alive() and not self._receiver.poll(0):
                msg = f"the account replay process died (exit code {self._process.exitcode})"
                raise RuntimeError(msg)
        try:
            status, payload = take_back(self._receiver)
        except (EOFError, pickle.UnpicklingError) as error:
            code = self._process.exitcode
            msg = f"the account replay process died handing back (exit code {code}): {error}"
            raise RuntimeError(msg) from error
        if status != "ok":
            msg = f"the account replay process failed:\n{payload}"
            raise RuntimeError(msg)
        assert isinstance(payload, AccountResult)
        return payload

    def stop(self) -> None:
        if self._process.pid is None:  # never started
            return
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _context() -> ForkContext | SpawnContext:
    """Fork where the platform can (see ``Child``)."""
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def replay_logs(
    markets: dict[str, Market],
    logs: Mapping[Position, Sequence[Record]],
    topics: TopicMap,
    cut: Cut | None = None,
    compare: bool = False,
) -> Replay:
    """The same replay, in one process, over partitions held in memory (tests, benchmarks)."""
    cut = cut or Cut()
    started = time.perf_counter()
    markets = dict(markets)  # the listings read are added to it
    market = MarketSide(markets, cut.until, compare)
    accounts: AccountSide | None = None
    positions: dict[Position, int] = {}
    total = 0
    order = (topics.market_events, topics.user_events, topics.order_events)
    with collector_paused():
        for (topic, partition), records in sorted(
            logs.items(), key=lambda item: (order.index(item[0][0]), item[0][1])
        ):
            end = cut.offsets.get((topic, partition))
            taken = [record for record in records if end is None or record[0] < end]
            side: Side = market
            if topic == topics.user_events:
                if accounts is None:  # after the market-events: every market listed
                    accounts = AccountSide(markets, cut.until, compare, market.trades)
                side = accounts
            side.feed(topic, partition, taken)
            positions[topic, partition] = taken[-1][0] + 1 if taken else 0
            total += len(taken)
        market.finish()
    if accounts is None:  # a log without user-events partitions
        accounts = AccountSide(markets, cut.until, compare, market.trades)
    venue_lines = venues_part(market.replayer.venues.values())
    replayed = merge(accounts.result(), market, positions, venue_lines)
    replayed.records = total
    replayed.seconds = time.perf_counter() - started
    return replayed
