"""The live read models against the replayed state: every difference, named.

MySQL: ``balances`` and ``orders`` are compared with the replayed accounts and
orders, column by column. ``fills`` and ``ledger_entries`` hold a row per
settlement and per leg of every posting, far too many to keep while
replaying, so the replay keeps a digest of what each account event must have
written (``ReadModelDigests``: 16 bytes per event, one digest per fill) and
the rows are streamed back and digested the same way.

Redis: each market's book levels, its snapshot's levels (its ``sequence``
counts the projection's batches, so it is not compared), the resting orders,
the 24h ticker and its per-minute buckets, which the replay rebuilds from the
tapes with the projection's own window (``TickerWindows``).

Amounts are compared as numbers (MySQL hands back 18 decimals), times as
naive UTC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal
from typing import Any
from uuid import UUID

import orjson
import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from domain.accounts import Account
from domain.ledger import Leg
from domain.markets import Market
from domain.matching import Side
from domain.orders import Order
from domain.replay import Replayer
from domain.venue import TradeTape, Venue
from infra.formats import naive_utc
from infra.read_models import balances, fills, ledger_entries, orders
from infra.redis_keys import RedisKeys
from projections.mysql_projection import Scales, ledger_reference
from projections.mysql_projection import fill_row as projected_fill
from projections.redis_projection import (
    ASKS,
    BIDS,
    MarketFormat,
    TickerWindow,
    Trade,
    empty_stats,
    market_formats,
    ticker_json,
)

DIGEST_SIZE = 16
NO_ROWS = hashlib.blake2b(b"", digest_size=DIGEST_SIZE).digest()
"""The digest of an event that writes no ledger rows."""
WIDE = Context(prec=80)
EXPIRE_EVERY = 4096
"""Trades between two expiries of a ticker window (the result does not depend on it)."""


@dataclass(frozen=True, slots=True)
class Difference:
    """One way a read model differs from the replayed state."""

    store: str
    table: str
    key: str
    read_model: object
    replayed: object

    def to_json(self) -> dict[str, object]:
        return {
            "store": self.store,
            "table": self.table,
            "key": self.key,
            "read_model": _jsonable(self.read_model),
            "replayed": _jsonable(self.replayed),
        }

    def __str__(self) -> str:
        return (
            f"{self.store} {self.table} {self.key}: read model has "
            f"{_jsonable(self.read_model)}, the log gives {_jsonable(self.replayed)}"
        )


def _jsonable(value: object) -> object:
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _number(value: Decimal) -> str:
    """A Decimal as plain text without trailing zeros, whatever scale it came at."""
    return format(value.normalize(WIDE), "f")


def _digest(rows: Iterable[Sequence[object]]) -> bytes:
    text = "\n".join("|".join(str(field) for field in row) for row in rows)
    return hashlib.blake2b(text.encode(), digest_size=DIGEST_SIZE).digest()


# -- what the replay keeps for the comparison -------------------------------------


def fill_row(row: Mapping[str, Any]) -> tuple[object, ...]:
    """A ``fills`` row in canonical form: numbers normalized, times naive UTC."""
    return (
        row["trade_id"],
        row["role"],
        row["account_id"],
        row["order_id"],
        row["symbol"],
        row["side"],
        _number(row["price"]),
        _number(row["quantity"]),
        row["spent_asset"],
        _number(row["spent"]),
        row["received_asset"],
        _number(row["received"]),
        _number(row["fee"]),
        naive_utc(row["at"]),
    )


class ReadModelDigests:
    """Digests of the ``ledger_entries`` and ``fills`` rows each account event must write."""

    def __init__(self, markets: Mapping[str, Market]) -> None:
        self.scales = Scales.of(markets)
        self.ledger: dict[UUID, bytearray] = {}
        """Per account, the digest of each of its versions' ledger rows, back to back."""
        self.fills: dict[tuple[str, str], tuple[bytes, UUID, int]] = {}
        """(trade id, role) -> digest of the row, and the account event that writes it."""

    def add(self, event: Account.Event, legs: Sequence[Leg]) -> None:
        at = naive_utc(event.timestamp)
        me, version = event.originator_id, event.originator_version
        if legs:
            if any(leg.asset not in self.scales.assets for leg in legs):
                self.scales.learn(event)
            kind, reference = type(event).__name__, ledger_reference(event)
            digest = _digest(
                (index, leg.ledger_account, leg.bucket, leg.asset, leg.units, kind, reference, at)
                for index, leg in enumerate(legs)
                if leg.units
            )
        else:
            digest = NO_ROWS
        known = self.ledger.get(me)
        if known is None:
            known = self.ledger[me] = bytearray()
        missing = version - 1 - len(known) // DIGEST_SIZE
        if missing > 0:  # versions with no account event here: none expected
            known += NO_ROWS * missing
        known += digest
        if type(event) is Account.TradeSettled:
            row = projected_fill(str(me), event, at)
            self.fills[event.trade_id, event.role] = (_digest([fill_row(row)]), me, version)

    def merge(self, other: ReadModelDigests) -> None:
        """Take in the digests of other accounts (another partition's)."""
        for asset, scale in other.scales.assets.items():
            self.scales.assets.setdefault(asset, scale)
        self.ledger.update(other.ledger)
        self.fills.update(other.fills)


class TickerWindows:
    """Each market's last 24h of trades in minute buckets: ``redis_projection.TickerWindow``,
    fed every trade of the tape in order."""

    def __init__(self, markets: Mapping[str, Market]) -> None:
        self.windows = {symbol: TickerWindow() for symbol in markets}
        self.traded: set[str] = set()
        self._added = 0

    def add(self, symbol: str, event: TradeTape.TradeExecuted) -> None:
        window = self.windows.get(symbol)
        if window is None:  # a market listed during the replay
            window = self.windows[symbol] = TickerWindow()
        trade = Trade(
            event.originator_version,
            event.trade_id,
            event.price,
            event.quantity,
            event.taker_side,
            event.timestamp,
        )
        window.add(trade)
        self.traded.add(symbol)
        self._added += 1
        if self._added % EXPIRE_EVERY == 0:
            window.expire()


# -- MySQL ----------------------------------------------------------------------------


def compare_mysql(
    engine: Engine,
    replayer: Replayer,
    digests: ReadModelDigests,
    limit: int | None = None,
) -> list[Difference]:
    """Every difference between MySQL's balances, orders, fills and ledger and the replay.

    ``limit`` stops after that many differences (None: all of them).
    """
    found: list[Difference] = []
    checks = (_balances, _orders, _fills, _ledger)
    with engine.connect() as connection:
        for check in checks:
            for difference in check(connection, replayer, digests):
                found.append(difference)
                if limit is not None and len(found) >= limit:
                    return found
    return found


def _rows(connection: Connection, query: Any) -> Iterator[Any]:
    """Rows streamed from the server, not all held in memory."""
    yield from connection.execution_options(stream_results=True, yield_per=5000).execute(query)


def _balances(
    connection: Connection, replayer: Replayer, digests: ReadModelDigests
) -> Iterator[Difference]:
    scales = digests.scales
    expected = {
        (str(account.id), asset): (holding.available, holding.locked)
        for account in replayer.accounts.values()
        for asset, holding in account.holdings.items()
    }
    for row in _rows(connection, select(balances)):
        key = (row.account_id, row.asset)
        want = expected.pop(key, None)
        try:
            got: tuple[object, ...] = (
                scales.to_units(row.asset, row.available),
                scales.to_units(row.asset, row.locked),
            )
        except Exception:
            got = (row.available, row.locked)
        if want != got:
            yield Difference(
                "mysql",
                "balances",
                f"{row.account_id}/{row.asset}",
                _units(scales, row.asset, got),
                None if want is None else _units(scales, row.asset, want),
            )
    for (account_id, asset), want in sorted(expected.items()):
        yield Difference(
            "mysql", "balances", f"{account_id}/{asset}", None, _units(scales, asset, want)
        )


def _units(scales: Scales, asset: str, pair: tuple[object, ...]) -> dict[str, object]:
    available, locked = (
        scales.to_decimal(asset, value) if isinstance(value, int) else value for value in pair
    )
    return {"available": available, "locked": locked}


ORDER_COLUMNS = (
    "account_id",
    "symbol",
    "side",
    "type",
    "price",
    "quantity",
    "quote_quantity",
    "time_in_force",
    "post_only",
    "stp",
    "client_order_id",
    "status",
    "reason",
    "filled_quantity",
    "filled_notional",
    "remaining",
    "created_at",
    "updated_at",
)


def order_columns(order: Order) -> dict[str, object]:
    """What the ``orders`` row of a replayed order must hold."""
    return {
        "account_id": str(order.account_id),
        "symbol": order.symbol,
        "side": order.side.value,
        "type": order.type.value,
        "price": order.price,
        "quantity": order.quantity,
        "quote_quantity": order.quote_quantity,
        "time_in_force": order.time_in_force.value,
        "post_only": order.post_only,
        "stp": order.stp.value,
        "client_order_id": order.client_order_id,
        "status": order.status.value,
        "reason": order.reason,
        "filled_quantity": order.filled_quantity,
        "filled_notional": order.filled_notional,
        "remaining": order.remaining,
        "created_at": naive_utc(order.created_on),
        "updated_at": naive_utc(order.modified_on),
    }


def _orders(
    connection: Connection, replayer: Replayer, digests: ReadModelDigests
) -> Iterator[Difference]:
    expected = {
        str(order_id): order
        for venue in replayer.venues.values()
        for order_id, order in venue.orders.items()
    }
    for row in _rows(connection, select(orders)):
        order = expected.pop(row.order_id, None)
        if order is None:
            yield Difference("mysql", "orders", row.order_id, "a row", "no such order")
            continue
        want = order_columns(order)
        for column in ORDER_COLUMNS:
            got = getattr(row, column)
            if column == "post_only":
                got = bool(got)
            if got != want[column]:
                yield Difference("mysql", "orders", f"{row.order_id}.{column}", got, want[column])
    for order_id in sorted(expected):
        yield Difference("mysql", "orders", order_id, None, order_columns(expected[order_id]))


def _fills(
    connection: Connection, replayer: Replayer, digests: ReadModelDigests
) -> Iterator[Difference]:
    expected = dict(digests.fills)
    for row in _rows(connection, select(fills)):
        key = (row.trade_id, row.role)
        want = expected.pop(key, None)
        canonical = fill_row(row._mapping)
        if want is None:
            yield Difference("mysql", "fills", f"{row.trade_id}/{row.role}", canonical, None)
        elif _digest([canonical]) != want[0]:
            yield Difference(
                "mysql",
                "fills",
                f"{row.trade_id}/{row.role}",
                canonical,
                f"the row TradeSettled {want[1]} v{want[2]} writes",
            )
    for (trade_id, role), (_, account_id, version) in sorted(expected.items()):
        yield Difference(
            "mysql",
            "fills",
            f"{trade_id}/{role}",
            None,
            f"the row TradeSettled {account_id} v{version} writes",
        )


def _ledger(
    connection: Connection, replayer: Replayer, digests: ReadModelDigests
) -> Iterator[Difference]:
    scales = digests.scales
    c = ledger_entries.c
    query = select(ledger_entries).order_by(c.event_id, c.event_version, c.leg)
    seen: set[tuple[str, int]] = set()
    group: list[Any] = []
    for row in _rows(connection, query):
        if group and (row.event_id, row.event_version) != (
            group[0].event_id,
            group[0].event_version,
        ):
            yield from _ledger_group(group, digests, scales, seen)
            group = []
        group.append(row)
    if group:
        yield from _ledger_group(group, digests, scales, seen)
    for account_id, known in digests.ledger.items():
        for index in range(len(known) // DIGEST_SIZE):
            digest = known[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE]
            if digest != NO_ROWS and (str(account_id), index + 1) not in seen:
                yield Difference(
                    "mysql",
                    "ledger_entries",
                    f"{account_id} v{index + 1}",
                    None,
                    "the entries of this account event",
                )


def _ledger_group(
    group: Sequence[Any], digests: ReadModelDigests, scales: Scales, seen: set[tuple[str, int]]
) -> Iterator[Difference]:
    first = group[0]
    event_id, version = first.event_id, first.event_version
    seen.add((event_id, version))
    rows = []
    for row in group:
        try:
            amount: object = scales.to_units(row.asset, row.amount)
        except Exception:
            amount = row.amount
        rows.append(
            (
                row.leg,
                row.ledger_account,
                row.bucket,
                row.asset,
                amount,
                row.kind,
                row.reference,
                naive_utc(row.at),
            )
        )
    try:
        known = digests.ledger.get(UUID(event_id))
    except ValueError:
        known = None
    want = None
    if known is not None and 0 < version <= len(known) // DIGEST_SIZE:
        want = bytes(known[(version - 1) * DIGEST_SIZE : version * DIGEST_SIZE])
    if want != _digest(rows):
        shown = [
            {"leg": r.leg, "account": r.ledger_account, "bucket": r.bucket, "asset": r.asset}
            | {"amount": r.amount, "kind": r.kind, "reference": r.reference}
            for r in group
        ]
        replayed = "no such account event" if want is None else "other entries"
        if want == NO_ROWS:
            replayed = "no entries"
        yield Difference("mysql", "ledger_entries", f"{event_id} v{version}", shown, replayed)


# -- Redis ----------------------------------------------------------------------------


async def compare_redis(
    redis: aioredis.Redis,
    keys: RedisKeys,
    replayer: Replayer,
    windows: TickerWindows,
) -> list[Difference]:
    """Every difference between the Redis books, resting orders and tickers and the replay."""
    found: list[Difference] = []
    formats = market_formats(replayer.markets)
    for symbol, fmt in sorted(formats.items()):
        venue = replayer.venues.get(symbol)
        found += await _book(redis, keys, fmt, venue)
        found += await _ticker(redis, keys, fmt, venue, windows)
    found += await _resting(redis, keys, replayer, formats)
    return found


def _levels(fmt: MarketFormat, market: Market, venue: Venue | None, side: Side) -> dict[str, str]:
    if venue is None:
        return {}
    return {
        fmt.price(market.ticks_to_price(price)): fmt.quantity(market.lots_to_quantity(lots))
        for price, lots in venue.book.depth(side)
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _book(
    redis: aioredis.Redis, keys: RedisKeys, fmt: MarketFormat, venue: Venue | None
) -> list[Difference]:
    found = []
    symbol = fmt.symbol
    raw_snapshot = await redis.get(keys.book_snapshot(symbol))
    snapshot = orjson.loads(raw_snapshot) if raw_snapshot else {BIDS: [], ASKS: []}
    for name, side in ((BIDS, Side.BUY), (ASKS, Side.SELL)):
        market = venue.market if venue is not None else None
        want = _levels(fmt, market, venue, side) if market is not None else {}
        raw = await redis.hgetall(keys.book_side(symbol, name))
        got = {_text(price): _text(quantity) for price, quantity in raw.items()}
        for price in sorted(set(want) | set(got)):
            if want.get(price) != got.get(price):
                key = f"{symbol} {name} {price}"
                found.append(Difference("redis", "book", key, got.get(price), want.get(price)))
        best_first = [list(level) for level in _best_first(want, name)]
        if snapshot.get(name, []) != best_first[:1000]:
            found.append(
                Difference(
                    "redis",
                    "book snapshot",
                    f"{symbol} {name}",
                    snapshot.get(name, []),
                    best_first[:1000],
                )
            )
    return found


def _best_first(levels: Mapping[str, str], side: str) -> list[tuple[str, str]]:
    ordered = sorted(levels.items(), key=lambda item: Decimal(item[0]), reverse=side == BIDS)
    return ordered


async def _ticker(
    redis: aioredis.Redis,
    keys: RedisKeys,
    fmt: MarketFormat,
    venue: Venue | None,
    windows: TickerWindows,
) -> list[Difference]:
    symbol = fmt.symbol
    window = windows.windows.get(symbol, TickerWindow())
    window.expire()
    book = venue.book if venue is not None else None
    market = venue.market if venue is not None else None
    best: dict[str, str | None] = {BIDS: None, ASKS: None}
    if book is not None and market is not None:
        bid, ask = book.best_bid(), book.best_ask()
        best[BIDS] = None if bid is None else fmt.price(market.ticks_to_price(bid))
        best[ASKS] = None if ask is None else fmt.price(market.ticks_to_price(ask))
    traded = symbol in windows.traded
    stats = window.stats(fmt) if traded else empty_stats(fmt)
    want = ticker_json(symbol, stats, best[BIDS], best[ASKS])
    raw = await redis.get(keys.ticker(symbol))
    found = []
    if raw is None:
        if traded or best[BIDS] is not None or best[ASKS] is not None:
            found.append(Difference("redis", "ticker", symbol, None, want))
    elif orjson.loads(raw) != want:
        found.append(Difference("redis", "ticker", symbol, orjson.loads(raw), want))
    raw_minutes = await redis.hgetall(keys.ticker_minutes(symbol))
    got_minutes = {_text(k): orjson.loads(v) for k, v in raw_minutes.items()}
    want_minutes = {
        str(key): orjson.loads(minute.to_json(fmt)) for key, minute in window.minutes.items()
    }
    for key in sorted(set(got_minutes) | set(want_minutes)):
        if got_minutes.get(key) != want_minutes.get(key):
            found.append(
                Difference(
                    "redis",
                    "ticker minutes",
                    f"{symbol} {key}",
                    got_minutes.get(key),
                    want_minutes.get(key),
                )
            )
    return found


async def _resting(
    redis: aioredis.Redis,
    keys: RedisKeys,
    replayer: Replayer,
    formats: Mapping[str, MarketFormat],
) -> list[Difference]:
    """Each open order's ``resting_order`` hash, and no hash for any other order."""
    want: dict[str, dict[str, str]] = {}
    for symbol, venue in replayer.venues.items():
        fmt = formats.get(symbol)
        if fmt is None:
            continue
        market = venue.market
        for order_id, resting in venue.book.orders.items():
            want[str(order_id)] = {
                "symbol": symbol,
                "side": resting.side.value,
                "price": fmt.price(market.ticks_to_price(resting.price)),
                "account_id": str(resting.account),
                "remaining": fmt.quantity(market.lots_to_quantity(resting.remaining)),
            }
    prefix = keys.resting_order("")
    stored = [
        _text(key)[len(prefix) :]
        async for key in redis.scan_iter(match=keys.resting_order("*"), count=1000)
    ]
    found = []
    names = sorted(set(stored) | set(want))
    for start in range(0, len(names), 1000):
        chunk = names[start : start + 1000]
        async with redis.pipeline(transaction=False) as pipe:
            for order_id in chunk:
                pipe.hgetall(keys.resting_order(order_id))
            replies = await pipe.execute()
        for order_id, raw in zip(chunk, replies, strict=True):
            got = {_text(k): _text(v) for k, v in raw.items()} or None
            if got != want.get(order_id):
                found.append(
                    Difference("redis", "resting order", order_id, got, want.get(order_id))
                )
    return found
