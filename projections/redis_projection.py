"""The Redis read model: order book depth, book diffs, recent trades and 24h tickers.

Built from the order events (the book) and the market events (the trades);
account events only move its offsets. Per market it keeps:

- ``book_side(symbol, "bids"|"asks")``: HASH price -> total open quantity;
- ``resting_order(order id)``: HASH side, price, account_id, symbol and, once
  the order is on the book, remaining. Kept from ``Accepted`` (limit orders
  only: a market order never rests) until the order is done;
- ``book_snapshot(symbol)``: STRING JSON ``{"symbol", "sequence", "bids",
  "asks"}``, the best 1000 levels a side, best first, rewritten with every
  batch that changes the book. ``sequence`` counts the diffs published on
  ``channel("book:<symbol>")``: one per batch that changes the book,
  ``{"type": "book", "symbol", "sequence", "bids", "asks"}`` with the new total
  of every level that changed (``"0"``: the level is gone). A client that
  takes the snapshot and applies, in order, the diffs with a larger sequence
  holds the book; a gap in sequence means take the snapshot again;
- ``recent_trades(symbol)``: LIST of JSON trades, newest first, the last 1000;
  each trade is also published on ``channel("trades:<symbol>")``;
- ``ticker_minutes(symbol)``: HASH minute -> JSON OHLCV of that minute, the
  last 24h, and ``ticker(symbol)``: STRING JSON 24h ticker over the trades of
  the 24h up to the latest trade's time (never the wall clock), with the best
  bid and ask; rewritten (and published on ``channel("ticker:<symbol>")``)
  by every batch that trades or moves the best bid or ask.

A batch is applied with one transaction (MULTI/EXEC) that also writes the
offsets and the aggregate versions it applied (``projections.base.Applied``),
so Redis always holds exactly a prefix of each partition. What a batch must
read (order states, levels, tickers) is read before, in two pipelined round
trips; events on the same order or level inside a batch are folded in memory
first. This projection is the only writer of its keys. Notifications are
published after the transaction, for fresh events only.

Every amount is exact (``Decimal``); prices are written at the market's tick
scale, quantities at its base asset's scale, quote volumes at its quote
asset's scale.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any
from uuid import UUID

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from domain.aggregates import market_id_for
from domain.markets import Market
from domain.orders import ORDER_EVENTS, Order
from domain.venue import TradeTape
from infra.redis import publish_all
from infra.redis_keys import RedisKeys
from projections.base import EXACT, Applied, DomainEvent, EventRecord, Position, versions_of
from projections.listings import MarketListings, markets_needed, named_symbols

log = logging.getLogger(__name__)

NAME = "redis"
SNAPSHOT_LEVELS = 1000
"""Levels a side in the book snapshot."""
RECENT_TRADES = 1000
"""Trades kept in each market's recent trades list."""
WINDOW_SECONDS = 24 * 60 * 60
MINUTE_SECONDS = 60
BIDS = "bids"
ASKS = "asks"
GONE = "0"
"""The quantity a diff gives a level that emptied."""

ZERO = Decimal(0)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BookInconsistent(RuntimeError):
    """The order events do not add up (a level below zero, an unknown order resting)."""


# -- formats -------------------------------------------------------------------


def _quantum(exponent: int) -> Decimal:
    return Decimal(1).scaleb(exponent)


@dataclass(frozen=True, slots=True)
class MarketFormat:
    """How one market's prices and amounts are written: exact, at fixed scales."""

    symbol: str
    price_quantum: Decimal
    base_quantum: Decimal
    quote_quantum: Decimal

    @classmethod
    def of(cls, market: Market) -> MarketFormat:
        return cls(
            market.symbol,
            _quantum(-market.price_scale),
            market.base.quantum,
            market.quote.quantum,
        )

    def price(self, value: Decimal) -> str:
        return format(value.quantize(self.price_quantum, context=EXACT), "f")

    def quantity(self, value: Decimal) -> str:
        return format(value.quantize(self.base_quantum, context=EXACT), "f")

    def quote(self, value: Decimal) -> str:
        return format(value.quantize(self.quote_quantum, context=EXACT), "f")


def market_formats(markets: Mapping[str, Market]) -> dict[str, MarketFormat]:
    return {symbol: MarketFormat.of(market) for symbol, market in markets.items()}


def _fields(values: Mapping[str, str | bytes | int]) -> dict[FieldT, EncodableT]:
    """A hash's fields, typed as redis-py wants them."""
    return dict(values.items())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- the book --------------------------------------------------------------------


def book_side(side: str) -> str:
    """``bids`` for a buy order, ``asks`` for a sell order."""
    return BIDS if side == "buy" else ASKS


@dataclass(slots=True)
class OrderState:
    """What the projection remembers of a limit order until it is done."""

    symbol: str
    side: str
    """``buy`` or ``sell``."""
    price: str
    """At the market's tick scale: the book level's field."""
    account_id: str
    remaining: Decimal | None = None
    """Open quantity on the book; None while the order is not on the book."""

    def to_hash(self, fmt: MarketFormat) -> dict[str, str]:
        fields = {
            "symbol": self.symbol,
            "side": self.side,
            "price": self.price,
            "account_id": self.account_id,
        }
        if self.remaining is not None:
            fields["remaining"] = fmt.quantity(self.remaining)
        return fields

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> OrderState | None:
        if not raw:
            return None
        fields = {_text(key): _text(value) for key, value in raw.items()}
        remaining = fields.get("remaining")
        return cls(
            fields["symbol"],
            fields["side"],
            fields["price"],
            fields["account_id"],
            None if remaining is None else Decimal(remaining),
        )


LevelDeltas = dict[str, dict[str, dict[str, Decimal]]]
"""symbol -> ``bids``/``asks`` -> price -> net change of the level's quantity."""


class BookChanges:
    """Folds order events into net level changes, on a working copy of the orders.

    ``known`` holds what the store had for the orders the events name (None:
    nothing). Afterwards ``orders`` holds each touched order's new state (None:
    done, or never to rest), ``changed`` the orders whose state changed and
    ``deltas`` the net change of every level the events touched (``known`` is
    left as it was).
    """

    def __init__(
        self, formats: Mapping[str, MarketFormat], known: Mapping[UUID, OrderState | None]
    ) -> None:
        self.formats = formats
        self.orders: dict[UUID, OrderState | None] = {
            order_id: None if state is None else replace(state) for order_id, state in known.items()
        }
        self.changed: set[UUID] = set()
        self.deltas: LevelDeltas = {}

    def apply(self, order_id: UUID, event: DomainEvent) -> None:
        with localcontext(EXACT):
            self._apply(order_id, event)

    def _apply(self, order_id: UUID, event: DomainEvent) -> None:
        if isinstance(event, Order.Accepted):
            fmt = self.formats.get(event.symbol)
            if fmt is not None and event.price is not None:
                self._set(
                    order_id,
                    OrderState(
                        event.symbol, event.side, fmt.price(event.price), str(event.account_id)
                    ),
                )
            return
        state = self.orders.get(order_id)
        if state is None:
            if isinstance(event, Order.Rested):
                msg = f"order {order_id} rested, but its acceptance was never seen"
                raise BookInconsistent(msg)
            return  # a market order, or one of a market this projection does not list
        if isinstance(event, Order.Filled):
            self._take_off(state)
            self._set(order_id, None)
        elif isinstance(event, Order.PartiallyFilled):
            if state.remaining is not None:  # a maker (a taker is not on the book)
                self._add(state, -event.quantity)
                state.remaining -= event.quantity
                self.changed.add(order_id)
        elif isinstance(event, Order.Rested):
            self._take_off(state)
            state.remaining = event.remaining
            self._add(state, event.remaining)
            self.changed.add(order_id)
        elif isinstance(event, Order.Amended):
            # The order is on the book at its new price with its new quantity;
            # if it lost its place it may now trade (as a taker, still counted
            # on its level) and then rest with what is left.
            self._take_off(state)
            state.price = self.formats[state.symbol].price(event.price)
            state.remaining = event.remaining
            self._add(state, event.remaining)
            self.changed.add(order_id)
        elif isinstance(event, (Order.Cancelled, Order.Expired, Order.Rejected)):
            self._take_off(state)
            self._set(order_id, None)

    def _set(self, order_id: UUID, state: OrderState | None) -> None:
        self.orders[order_id] = state
        self.changed.add(order_id)

    def _take_off(self, state: OrderState) -> None:
        if state.remaining is not None:
            self._add(state, -state.remaining)
            state.remaining = None

    def _add(self, state: OrderState, quantity: Decimal) -> None:
        side = self.deltas.setdefault(state.symbol, {}).setdefault(book_side(state.side), {})
        side[state.price] = side.get(state.price, ZERO) + quantity

    def touched_markets(self) -> set[str]:
        """Markets with a level whose quantity changed."""
        return {
            symbol
            for symbol, sides in self.deltas.items()
            if any(delta for levels in sides.values() for delta in levels.values())
        }


def apply_deltas(levels: dict[str, Decimal], deltas: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Change ``levels`` (price -> quantity) by ``deltas``; the new total of each changed
    level (zero: the level is gone, and dropped from ``levels``)."""
    changed: dict[str, Decimal] = {}
    with localcontext(EXACT):
        for price, delta in deltas.items():
            if not delta:
                continue
            total = levels.get(price, ZERO) + delta
            if total < 0:
                msg = f"level {price} would hold {total}"
                raise BookInconsistent(msg)
            if total:
                levels[price] = total
            else:
                levels.pop(price, None)
            changed[price] = total
    return changed


def best_prices(levels: Mapping[str, Decimal], side: str, limit: int) -> list[str]:
    """Up to ``limit`` prices of a side, best first (bids descending, asks ascending)."""
    pick = heapq.nlargest if side == BIDS else heapq.nsmallest
    return pick(limit, levels, key=Decimal)


def best_price(levels: Mapping[str, Decimal], side: str) -> str | None:
    found = best_prices(levels, side, 1)
    return found[0] if found else None


def parse_levels(raw: Mapping[bytes | str, bytes | str]) -> dict[str, Decimal]:
    return {_text(price): Decimal(_text(quantity)) for price, quantity in raw.items()}


# -- trades and the 24h ticker -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trade:
    sequence: int
    """The trade tape's version."""
    trade_id: str
    price: Decimal
    quantity: Decimal
    taker_side: str
    at: datetime

    @classmethod
    def of(cls, record: EventRecord) -> Trade:
        event = record.event
        assert isinstance(event, TradeTape.TradeExecuted)
        return cls(
            record.version,
            event.trade_id,
            event.price,
            event.quantity,
            event.taker_side,
            event.timestamp,
        )

    def to_json(self, fmt: MarketFormat) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "sequence": self.sequence,
            "price": fmt.price(self.price),
            "quantity": fmt.quantity(self.quantity),
            "taker_side": self.taker_side,
            "at": self.at.isoformat(),
        }


def minute_of(at: datetime) -> int:
    """The start of ``at``'s minute, in epoch seconds."""
    return (at - EPOCH) // timedelta(minutes=1) * MINUTE_SECONDS


@dataclass(slots=True)
class Minute:
    """The trades of one minute: OHLC (open and close by trade sequence), volumes, count."""

    open: Decimal
    open_seq: int
    high: Decimal
    low: Decimal
    close: Decimal
    close_seq: int
    volume: Decimal
    quote_volume: Decimal
    trades: int
    last_at: datetime
    """The latest trade time in the minute."""

    @classmethod
    def first(cls, trade: Trade) -> Minute:
        with localcontext(EXACT):
            notional = trade.price * trade.quantity
        return cls(
            trade.price,
            trade.sequence,
            trade.price,
            trade.price,
            trade.price,
            trade.sequence,
            trade.quantity,
            notional,
            1,
            trade.at,
        )

    def add(self, trade: Trade) -> None:
        with localcontext(EXACT):
            if trade.sequence < self.open_seq:
                self.open, self.open_seq = trade.price, trade.sequence
            if trade.sequence > self.close_seq:
                self.close, self.close_seq = trade.price, trade.sequence
            self.high = max(self.high, trade.price)
            self.low = min(self.low, trade.price)
            self.volume += trade.quantity
            self.quote_volume += trade.price * trade.quantity
            self.trades += 1
            self.last_at = max(self.last_at, trade.at)

    def to_json(self, fmt: MarketFormat) -> bytes:
        return orjson.dumps(
            {
                "open": fmt.price(self.open),
                "open_seq": self.open_seq,
                "high": fmt.price(self.high),
                "low": fmt.price(self.low),
                "close": fmt.price(self.close),
                "close_seq": self.close_seq,
                "volume": fmt.quantity(self.volume),
                "quote_volume": fmt.quote(self.quote_volume),
                "trades": self.trades,
                "last_at": self.last_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Minute:
        data = orjson.loads(raw)
        return cls(
            Decimal(data["open"]),
            int(data["open_seq"]),
            Decimal(data["high"]),
            Decimal(data["low"]),
            Decimal(data["close"]),
            int(data["close_seq"]),
            Decimal(data["volume"]),
            Decimal(data["quote_volume"]),
            int(data["trades"]),
            datetime.fromisoformat(data["last_at"]),
        )


class TickerWindow:
    """The per-minute buckets of a market's last 24h of trades.

    The window ends at the latest trade time seen and holds the minute of
    that trade and the 1439 minutes before it.
    """

    def __init__(self, minutes: Mapping[int, Minute] | None = None) -> None:
        self.minutes: dict[int, Minute] = dict(minutes or {})
        self.touched: set[int] = set()
        self.expired: set[int] = set()

    @property
    def end(self) -> datetime | None:
        return max((minute.last_at for minute in self.minutes.values()), default=None)

    def add(self, trade: Trade) -> None:
        key = minute_of(trade.at)
        minute = self.minutes.get(key)
        if minute is None:
            self.minutes[key] = Minute.first(trade)
        else:
            minute.add(trade)
        self.touched.add(key)

    def expire(self) -> None:
        """Drop the minutes that left the window (into ``expired``)."""
        end = self.end
        if end is None:
            return
        oldest = minute_of(end) - WINDOW_SECONDS + MINUTE_SECONDS
        for key in [key for key in self.minutes if key < oldest]:
            del self.minutes[key]
            self.expired.add(key)
        self.touched -= self.expired

    def stats(self, fmt: MarketFormat) -> dict[str, Any]:
        """open, high, low, last, volume, quote_volume, trades and at, as the ticker shows them."""
        minutes = list(self.minutes.values())
        if not minutes:
            return empty_stats(fmt)
        with localcontext(EXACT):
            volume = sum((m.volume for m in minutes), ZERO)
            quote_volume = sum((m.quote_volume for m in minutes), ZERO)
        end = self.end
        assert end is not None
        return {
            "open": fmt.price(min(minutes, key=lambda m: m.open_seq).open),
            "high": fmt.price(max(m.high for m in minutes)),
            "low": fmt.price(min(m.low for m in minutes)),
            "last": fmt.price(max(minutes, key=lambda m: m.close_seq).close),
            "volume": fmt.quantity(volume),
            "quote_volume": fmt.quote(quote_volume),
            "trades": sum(m.trades for m in minutes),
            "at": end.isoformat(),
        }


def empty_stats(fmt: MarketFormat) -> dict[str, Any]:
    return {
        "open": None,
        "high": None,
        "low": None,
        "last": None,
        "volume": fmt.quantity(ZERO),
        "quote_volume": fmt.quote(ZERO),
        "trades": 0,
        "at": None,
    }


def ticker_json(
    symbol: str, stats: Mapping[str, Any], best_bid: str | None, best_ask: str | None
) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "open": stats["open"],
        "high": stats["high"],
        "low": stats["low"],
        "last": stats["last"],
        "volume": stats["volume"],
        "quote_volume": stats["quote_volume"],
        "trades": stats["trades"],
        "best_bid": best_bid,
        "best_ask": best_ask,
        "at": stats["at"],
    }


# -- one batch's plan ------------------------------------------------------------


@dataclass
class MarketUpdate:
    """What one batch writes and publishes for one market."""

    symbol: str
    level_writes: dict[str, dict[str, str]] = field(default_factory=dict)
    """side -> price -> new quantity (levels that are not gone)."""
    level_deletes: dict[str, list[str]] = field(default_factory=dict)
    snapshot: bytes | None = None
    diff: bytes | None = None
    sequence: int | None = None
    trades: list[bytes] = field(default_factory=list)
    trade_messages: list[bytes] = field(default_factory=list)
    minute_writes: dict[str, bytes] = field(default_factory=dict)
    minute_deletes: list[str] = field(default_factory=list)
    ticker: bytes | None = None
    ticker_message: bytes | None = None


@dataclass
class Plan:
    orders_written: dict[UUID, dict[str, str]] = field(default_factory=dict)
    orders_off_book: list[UUID] = field(default_factory=list)
    """Orders still kept that left the book: their ``remaining`` field goes."""
    orders_deleted: list[UUID] = field(default_factory=list)
    markets: list[MarketUpdate] = field(default_factory=list)


# -- the projection --------------------------------------------------------------


class RedisProjection:
    """Market data in Redis, applied effectively once (see the module docstring)."""

    name = NAME

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: RedisKeys,
        markets: Mapping[str, Market],
        listings: MarketListings | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.markets: dict[str, Market] = {}
        self.formats: dict[str, MarketFormat] = {}
        self.tapes: dict[UUID, str] = {}
        for market in markets.values():
            self.list_market(market)
        self.listings = listings
        self._listings_read = 0
        self.applied = Applied()
        self.sequences: dict[str, int] = {}
        self._loaded = False

    # -- Projection ----------------------------------------------------------

    def list_market(self, market: Market) -> None:
        """Know ``market`` from now on (from its listing, or read from the log)."""
        self.markets[market.symbol] = market
        self.formats[market.symbol] = MarketFormat.of(market)
        self.tapes[market_id_for(market.symbol)] = market.symbol

    async def start(self) -> None:
        """Load the offsets applied and each book's sequence (this is the only writer)."""
        if self.listings is not None:
            for market in (await self.listings.markets()).values():
                self.list_market(market)
        positions = await self.positions()
        sequences = await self._load_sequences()
        self.applied = Applied(positions=positions)
        self.sequences = sequences
        self._loaded = True

    async def positions(self) -> dict[Position, int]:
        raw = await self.redis.hgetall(self.keys.offsets(NAME))
        found: dict[Position, int] = {}
        for key, value in raw.items():
            topic, _, partition = _text(key).rpartition(":")
            found[topic, int(partition)] = int(value)
        return found

    async def apply(self, batch: Sequence[EventRecord]) -> None:
        if not batch:
            return
        if not self._loaded:
            await self.start()
        try:
            fresh, moved = await self.applied.select(batch, self._lookup_versions)
            if not moved:
                return
            needed, self._listings_read = await markets_needed(
                self.markets, fresh, self.listings, self._listings_read
            )
            for market in needed:
                self.list_market(market)
            unknown = named_symbols(fresh) - set(self.markets)
            if unknown:
                msg = f"no listing of {sorted(unknown)} on the log: cannot write their books"
                raise BookInconsistent(msg)
            plan = await self._plan(fresh)
            await self._write(plan, moved, versions_of(fresh))
        except BaseException:
            # What the store holds is unknown now: load it again before the next batch.
            self.applied.forget_versions()
            self._loaded = False
            raise
        self.applied.commit(moved)
        for update in plan.markets:
            if update.sequence is not None:
                self.sequences[update.symbol] = update.sequence
        await self._publish(plan)

    async def close(self) -> None:
        await self.redis.aclose()

    # -- reading ---------------------------------------------------------------

    async def _lookup_versions(self, ids: Sequence[UUID]) -> dict[UUID, int]:
        raw = await self.redis.hmget(self.keys.versions(NAME), [str(i) for i in ids])
        return {i: int(v) for i, v in zip(ids, raw, strict=True) if v is not None}

    async def _load_sequences(self) -> dict[str, int]:
        symbols = list(self.markets)
        async with self.redis.pipeline(transaction=False) as pipe:
            for symbol in symbols:
                pipe.get(self.keys.book_snapshot(symbol))
            raw = await pipe.execute()
        return {
            symbol: 0 if value is None else int(orjson.loads(value)["sequence"])
            for symbol, value in zip(symbols, raw, strict=True)
        }

    async def _plan(self, fresh: Iterable[EventRecord]) -> Plan:
        order_events: list[tuple[UUID, DomainEvent]] = []
        first_version: dict[UUID, int] = {}
        trades: dict[str, list[Trade]] = {}
        for record in fresh:
            event = record.event
            if isinstance(event, ORDER_EVENTS):
                order_id = record.aggregate_id
                order_events.append((order_id, event))
                first_version.setdefault(order_id, record.version)
            elif isinstance(event, TradeTape.TradeExecuted):
                symbol = self.tapes.get(record.aggregate_id)
                if symbol is not None:
                    trades.setdefault(symbol, []).append(Trade.of(record))

        # Round trip 1: the orders the batch continues (not those it creates).
        to_read = [oid for oid, version in first_version.items() if version > 1]
        known: dict[UUID, OrderState | None] = {}
        if to_read:
            async with self.redis.pipeline(transaction=False) as pipe:
                for order_id in to_read:
                    pipe.hgetall(self.keys.resting_order(str(order_id)))
                raw_orders = await pipe.execute()
            known = {
                oid: OrderState.from_hash(raw) for oid, raw in zip(to_read, raw_orders, strict=True)
            }
        changes = BookChanges(self.formats, known)
        for order_id, event in order_events:
            changes.apply(order_id, event)

        plan = Plan()
        for order_id in sorted(changes.changed):
            state = changes.orders[order_id]
            before = known.get(order_id)
            if state is None:
                if before is not None:
                    plan.orders_deleted.append(order_id)
                continue
            plan.orders_written[order_id] = state.to_hash(self.formats[state.symbol])
            if state.remaining is None and before is not None and before.remaining is not None:
                plan.orders_off_book.append(order_id)

        # Round trip 2: the levels of the books that changed, the tickers, the minutes.
        booked = sorted(changes.touched_markets())
        symbols = sorted(set(booked) | set(trades))
        if not symbols:
            return plan
        async with self.redis.pipeline(transaction=False) as pipe:
            for symbol in booked:
                pipe.hgetall(self.keys.book_side(symbol, BIDS))
                pipe.hgetall(self.keys.book_side(symbol, ASKS))
            for symbol in symbols:
                pipe.get(self.keys.ticker(symbol))
            for symbol in trades:
                pipe.hgetall(self.keys.ticker_minutes(symbol))
            replies = iter(await pipe.execute())
        sides = {
            symbol: (parse_levels(next(replies)), parse_levels(next(replies))) for symbol in booked
        }
        tickers = {symbol: next(replies) for symbol in symbols}
        minutes = {symbol: next(replies) for symbol in trades}

        for symbol in symbols:
            plan.markets.append(
                self._market_update(
                    symbol,
                    sides.get(symbol),
                    changes.deltas.get(symbol, {}),
                    tickers[symbol],
                    trades.get(symbol, []),
                    minutes.get(symbol),
                )
            )
        return plan

    def _market_update(
        self,
        symbol: str,
        levels: tuple[dict[str, Decimal], dict[str, Decimal]] | None,
        deltas: Mapping[str, Mapping[str, Decimal]],
        raw_ticker: bytes | str | None,
        trades: Sequence[Trade],
        raw_minutes: Mapping[bytes | str, bytes | str] | None,
    ) -> MarketUpdate:
        fmt = self.formats[symbol]
        update = MarketUpdate(symbol)
        previous = orjson.loads(raw_ticker) if raw_ticker is not None else None
        best = {
            BIDS: None if previous is None else previous["best_bid"],
            ASKS: None if previous is None else previous["best_ask"],
        }
        best_moved = False

        if levels is not None:
            diff: dict[str, list[list[str]]] = {}
            for side, side_levels in zip((BIDS, ASKS), levels, strict=True):
                changed = apply_deltas(side_levels, deltas.get(side, {}))
                ordered = best_prices(changed, side, len(changed))
                diff[side] = [
                    [price, fmt.quantity(changed[price]) if changed[price] else GONE]
                    for price in ordered
                ]
                update.level_writes[side] = {
                    price: fmt.quantity(total) for price, total in changed.items() if total
                }
                update.level_deletes[side] = [p for p, total in changed.items() if not total]
                new_best = best_price(side_levels, side)
                if new_best != best[side]:
                    best[side] = new_best
                    best_moved = True
            sequence = self.sequences.get(symbol, 0) + 1
            update.sequence = sequence
            update.diff = orjson.dumps(
                {
                    "type": "book",
                    "symbol": symbol,
                    "sequence": sequence,
                    "bids": diff[BIDS],
                    "asks": diff[ASKS],
                }
            )
            update.snapshot = orjson.dumps(
                {
                    "symbol": symbol,
                    "sequence": sequence,
                    **{
                        side: [
                            [price, fmt.quantity(side_levels[price])]
                            for price in best_prices(side_levels, side, SNAPSHOT_LEVELS)
                        ]
                        for side, side_levels in zip((BIDS, ASKS), levels, strict=True)
                    },
                }
            )

        if trades:
            for trade in trades:
                body = trade.to_json(fmt)
                update.trades.append(orjson.dumps(body))
                update.trade_messages.append(
                    orjson.dumps({"type": "trade", "symbol": symbol, **body})
                )
            window = TickerWindow(
                {int(_text(k)): Minute.from_json(v) for k, v in (raw_minutes or {}).items()}
            )
            for trade in trades:
                window.add(trade)
            window.expire()
            update.minute_writes = {
                str(key): window.minutes[key].to_json(fmt) for key in sorted(window.touched)
            }
            update.minute_deletes = [str(key) for key in sorted(window.expired)]
            stats: Mapping[str, Any] = window.stats(fmt)
        elif best_moved:
            stats = previous if previous is not None else empty_stats(fmt)
        else:
            return update
        ticker = ticker_json(symbol, stats, best[BIDS], best[ASKS])
        update.ticker = orjson.dumps(ticker)
        update.ticker_message = orjson.dumps({"type": "ticker", **ticker})
        return update

    # -- writing ---------------------------------------------------------------

    async def _write(
        self, plan: Plan, moved: Mapping[Position, int], versions: Mapping[UUID, int]
    ) -> None:
        keys = self.keys
        async with self.redis.pipeline(transaction=True) as tx:
            for order_id in plan.orders_deleted:
                tx.delete(keys.resting_order(str(order_id)))
            for order_id in plan.orders_off_book:
                tx.hdel(keys.resting_order(str(order_id)), "remaining")
            for order_id, fields in plan.orders_written.items():
                tx.hset(keys.resting_order(str(order_id)), mapping=_fields(fields))
            for update in plan.markets:
                symbol = update.symbol
                for side, prices in update.level_deletes.items():
                    if prices:
                        tx.hdel(keys.book_side(symbol, side), *prices)
                for side, totals in update.level_writes.items():
                    if totals:
                        tx.hset(keys.book_side(symbol, side), mapping=_fields(totals))
                if update.snapshot is not None:
                    tx.set(keys.book_snapshot(symbol), update.snapshot)
                if update.trades:
                    tx.lpush(keys.recent_trades(symbol), *update.trades)
                    tx.ltrim(keys.recent_trades(symbol), 0, RECENT_TRADES - 1)
                if update.minute_deletes:
                    tx.hdel(keys.ticker_minutes(symbol), *update.minute_deletes)
                if update.minute_writes:
                    tx.hset(keys.ticker_minutes(symbol), mapping=_fields(update.minute_writes))
                if update.ticker is not None:
                    tx.set(keys.ticker(symbol), update.ticker)
            tx.hset(
                keys.offsets(NAME),
                mapping={
                    f"{topic}:{partition}": offset for (topic, partition), offset in moved.items()
                },
            )
            if versions:
                tx.hset(
                    keys.versions(NAME),
                    mapping={str(aggregate): version for aggregate, version in versions.items()},
                )
            await tx.execute()

    async def _publish(self, plan: Plan) -> None:
        """Notify subscribers of what the batch changed (after it is durable)."""
        messages: list[tuple[str, bytes]] = []
        for update in plan.markets:
            symbol = update.symbol
            if update.diff is not None:
                messages.append((self.keys.channel(f"book:{symbol}"), update.diff))
            channel = self.keys.channel(f"trades:{symbol}")
            messages += [(channel, message) for message in update.trade_messages]
            if update.ticker_message is not None:
                messages.append((self.keys.channel(f"ticker:{symbol}"), update.ticker_message))
        try:
            await publish_all(self.redis, messages)
        except RedisError:
            # The batch is applied; subscribers see a gap in sequence and resync.
            log.exception("publishing %d market data notifications failed", len(messages))
