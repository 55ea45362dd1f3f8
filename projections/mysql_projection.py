"""The MySQL read model: users, API keys, accounts, balances, orders, fills, trades,
the ledger and candles.

Built from all three event families (``infra.read_models`` has the tables):

- ``users``: one row per ``User.Registered`` (with the argon2 hash the command
  gateway checks logins against); ``api_keys``: one row per
  ``User.ApiKeyCreated``, ``revoked_at`` set by ``User.ApiKeyRevoked``;
- ``markets``: one row per ``TradeTape.Listed``, the market's rules (the
  gateways' list of markets);
- ``accounts``: one row per ``Account.Opened``;
- ``balances``: available and locked per (account, asset). Every account event
  that moves money changes them by the legs ``domain.ledger.postings`` gives
  for the account's own ``available`` and ``locked`` buckets, which is exactly
  what the Account aggregate's ``apply`` methods do (the ledger is checked
  against the aggregate by ``domain.invariants``, and the tests check the rows
  against the processors' accounts);
- ``ledger_entries``: one row per leg of that posting, user, ``external``,
  ``fees`` and ``clearing:<symbol>`` accounts alike, so the amounts of every
  asset sum to zero. A leg that moves nothing (a sell's ``released``, a zero
  fee) is left out; ``leg`` is the leg's index in the posting either way;
- ``orders``: created by ``Order.Accepted`` or ``Order.Rejected`` and changed
  by the order's later events exactly as ``Order.apply`` changes the aggregate;
- ``fills``: one row per ``Account.TradeSettled`` (each trade settles twice,
  maker and taker); ``trades``: one row per ``TradeTape.TradeExecuted``, whose
  version is the market's trade sequence number;
- ``candles``: OHLC, volumes and trade count per market and interval of
  ``CANDLE_INTERVALS``, from the trades. ``open_time`` is the trade's time
  floored to the interval, counted from the Unix epoch in UTC.

A batch is applied in one transaction (``projections.base.Applied``): it locks
this projection's ``projection_offsets`` rows and checks they are still what
this worker last wrote (if not, another worker moved them: it reloads and
selects again), reads the current rows the batch continues (balances, orders,
candles: one query each), folds the events into them in memory, and writes
every row, the new offsets and the touched aggregates' versions with one
multi-row statement per table. After the commit it publishes, for the fresh
events only, each changed order's new row on ``channel("orders:<account id>")``
and each account's changed balances on ``channel("balances:<account id>")``.

Times are stored as naive UTC. Amounts are exact ``Decimal``: every value is
the event's own (at its asset's scale) or an exact sum of such values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, Inexact, localcontext
from typing import Any
from uuid import UUID

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import Connection, Table, insert, select, tuple_, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from domain.accounts import Account
from domain.aggregates import market_id_for
from domain.ledger import AVAILABLE, LOCKED, postings
from domain.markets import MARKET_FIELDS, Market, assets_of
from domain.orders import ORDER_EVENTS, Order, OrderStatus
from domain.users import USER_EVENTS, User
from domain.venue import TradeTape
from infra.formats import amount_text, moment_text, naive_utc
from infra.read_models import (
    CANDLE_INTERVALS,
    accounts,
    aggregate_versions,
    api_keys,
    balances,
    candles,
    fills,
    ledger_entries,
    orders,
    projection_offsets,
    trades,
    users,
)
from infra.read_models import markets as market_table
from infra.redis import publish_all
from infra.redis_keys import RedisKeys
from projections.base import EXACT, Applied, DomainEvent, EventRecord, Position, versions_of
from projections.listings import MarketListings, markets_needed

log = logging.getLogger(__name__)

NAME = "mysql"
RETRIES = 5
"""Times a batch is selected again when another writer moved the offsets under it."""

ZERO = Decimal(0)
EPOCH = datetime(1970, 1, 1)

INTERVAL_SECONDS: dict[str, int] = {
    "1m": 60,
    "5m": 5 * 60,
    "15m": 15 * 60,
    "1h": 60 * 60,
    "4h": 4 * 60 * 60,
    "1d": 24 * 60 * 60,
}
assert tuple(INTERVAL_SECONDS) == CANDLE_INTERVALS

Row = dict[str, Any]
BalanceKey = tuple[str, str]
"""(account id, asset)."""
CandleKey = tuple[str, str, datetime]
"""(symbol, interval, open time)."""


class ProjectionInconsistent(RuntimeError):
    """The events do not fit what the store holds (an order continued but never created)."""


class PositionsMoved(Exception):
    """The stored offsets are not the ones this worker wrote last: someone else applied."""

    def __init__(self, stored: dict[Position, int]) -> None:
        super().__init__("the projection's offsets moved under this worker")
        self.stored = stored


# -- times and amounts -------------------------------------------------------------


def candle_open_time(at: datetime, interval: str) -> datetime:
    """The start (naive UTC) of the ``interval`` candle holding ``at``."""
    step = timedelta(seconds=INTERVAL_SECONDS[interval])
    moment = naive_utc(at)
    return EPOCH + ((moment - EPOCH) // step) * step


def quantum(scale: int) -> Decimal:
    return Decimal(1).scaleb(-scale)


def event_scale(amount: Decimal) -> int:
    """The scale an event wrote ``amount`` at (events write amounts at their asset's scale)."""
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int), "amounts in events are finite"
    return max(-exponent, 0)


@dataclass(frozen=True, slots=True)
class Scales:
    """What the projection knows of amounts: each asset's scale, each market's."""

    assets: dict[str, int]
    markets: dict[str, Market]

    @classmethod
    def of(cls, markets: Mapping[str, Market]) -> Scales:
        assets = {code: asset.scale for code, asset in assets_of(markets).items()}
        return cls(assets, dict(markets))

    def learn(self, event: DomainEvent) -> None:
        """Take the scale of an asset no market lists from the amounts an event carries."""
        for asset, amount in _event_amounts(event):
            self.assets.setdefault(asset, event_scale(amount))

    def asset(self, code: str) -> int:
        try:
            return self.assets[code]
        except KeyError:
            msg = f"no scale known for asset {code!r}"
            raise ProjectionInconsistent(msg) from None

    def to_decimal(self, asset: str, units: int) -> Decimal:
        return Decimal(units).scaleb(-self.asset(asset), context=EXACT)

    def to_units(self, asset: str, value: Decimal) -> int:
        """Minor units of ``value`` (as MySQL returns it: with 18 decimals)."""
        scaled = value.scaleb(self.asset(asset), context=EXACT)
        units = int(scaled)
        if units != scaled:
            msg = f"{asset} amount {value} has more decimals than its scale"
            raise ProjectionInconsistent(msg)
        return units

    def order_scales(self, symbol: str) -> tuple[int | None, int | None, int | None]:
        """(price, base, quote) scales of a market; None for a market not listed."""
        market = self.markets.get(symbol)
        if market is None:
            return None, None, None
        return market.price_scale, market.base.scale, market.quote.scale


def _event_amounts(event: DomainEvent) -> list[tuple[str, Decimal]]:
    if isinstance(event, (Account.Deposited, Account.Withdrawn, Account.FundsLocked)):
        return [(event.asset, event.amount)]
    if isinstance(event, Account.FundsReleased):
        return [(event.asset, event.amount)]
    if isinstance(event, Account.AmendRequested):
        return [(event.asset, event.prelocked)]
    if isinstance(event, Account.ReservationAdjusted):
        return [(event.asset, event.change)]
    if isinstance(event, Account.TradeSettled):
        return [(event.spent_asset, event.spent), (event.received_asset, event.received)]
    return []


# -- rows ------------------------------------------------------------------------------


def new_order_row(order_id: UUID, event: Order.Accepted | Order.Rejected) -> Row:
    """The row of an order its first event creates (as ``Order.__init__`` and, for a
    rejection, ``Order.Rejected.apply`` make the aggregate)."""
    at = naive_utc(event.timestamp)
    quantity = event.quantity
    rejected = isinstance(event, Order.Rejected)
    return {
        "order_id": str(order_id),
        "account_id": str(event.account_id),
        "symbol": event.symbol,
        "side": event.side,
        "type": event.type,
        "price": event.price,
        "quantity": quantity,
        "quote_quantity": event.quote_quantity,
        "time_in_force": event.time_in_force,
        "post_only": event.post_only,
        "stp": event.stp,
        "client_order_id": event.client_order_id,
        "status": (OrderStatus.REJECTED if rejected else OrderStatus.ACCEPTED).value,
        "reason": event.reason if isinstance(event, Order.Rejected) else None,
        "filled_quantity": ZERO if quantity is None else quantity * 0,
        "filled_notional": ZERO,
        "remaining": quantity,
        "created_at": at,
        "updated_at": at,
    }


def advance_order(row: Row, event: DomainEvent) -> None:
    """Change an order's row by one of its later events, as ``Order.apply`` does."""
    with localcontext(EXACT):
        if isinstance(event, Order.Rested):
            row["remaining"] = event.remaining
            if row["status"] == OrderStatus.ACCEPTED:
                row["status"] = OrderStatus.OPEN.value
        elif isinstance(event, Order.PartiallyFilled):  # Filled is one too
            row["filled_quantity"] += event.quantity
            row["filled_notional"] += event.notional
            if row["remaining"] is not None:
                row["remaining"] -= event.quantity
            row["status"] = OrderStatus.PARTIALLY_FILLED.value
            if isinstance(event, Order.Filled):
                row["status"] = OrderStatus.FILLED.value
                if row["remaining"] is not None:
                    row["remaining"] = row["remaining"] * 0
        elif isinstance(event, Order.Cancelled):
            row["status"] = OrderStatus.CANCELLED.value
            row["reason"] = event.reason
        elif isinstance(event, Order.Expired):
            row["status"] = OrderStatus.EXPIRED.value
            row["reason"] = event.reason
        elif isinstance(event, Order.Amended):
            row["price"] = event.price
            row["remaining"] = event.remaining
        else:
            msg = f"order {row['order_id']}: unexpected {type(event).__qualname__}"
            raise ProjectionInconsistent(msg)
    row["updated_at"] = naive_utc(event.timestamp)


@dataclass(slots=True)
class Balance:
    """One (account, asset) balance, in minor units."""

    available: int
    locked: int
    updated_at: datetime


@dataclass(slots=True)
class Candle:
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int

    @classmethod
    def first(cls, price: Decimal, quantity: Decimal, notional: Decimal) -> Candle:
        return cls(price, price, price, price, quantity, notional, 1)

    def add(self, price: Decimal, quantity: Decimal, notional: Decimal) -> None:
        """A later trade (a tape's trades arrive in sequence order)."""
        with localcontext(EXACT):
            self.high = max(self.high, price)
            self.low = min(self.low, price)
            self.close = price
            self.volume += quantity
            self.quote_volume += notional
            self.trades += 1


def fill_row(account_id: str, event: Account.TradeSettled, at: datetime) -> Row:
    """The ``fills`` row of one side of one trade."""
    return {
        "trade_id": event.trade_id,
        "role": event.role,
        "account_id": account_id,
        "order_id": str(event.order_id),
        "symbol": event.symbol,
        "side": event.side,
        "price": event.price,
        "quantity": event.quantity,
        "spent_asset": event.spent_asset,
        "spent": event.spent,
        "received_asset": event.received_asset,
        "received": event.received,
        "fee": event.fee,
        "at": at,
    }


def ledger_reference(event: DomainEvent) -> str:
    """What a ledger entry refers to: the deposit's tx, the withdrawal, the trade or the order."""
    if isinstance(event, Account.Deposited):
        return event.tx_id
    if isinstance(event, Account.Withdrawn):
        return event.withdrawal_id
    if isinstance(event, Account.TradeSettled):
        return event.trade_id
    order_id = getattr(event, "order_id", None)
    return "" if order_id is None else str(order_id)


@dataclass(frozen=True, slots=True)
class Wanted:
    """The current rows a batch continues, to read before folding it."""

    balances: frozenset[BalanceKey]
    orders: frozenset[str]
    candles: frozenset[CandleKey]

    @classmethod
    def of(cls, records: Iterable[EventRecord], symbols: Mapping[UUID, str]) -> Wanted:
        balance_keys: set[BalanceKey] = set()
        order_ids: set[str] = set()
        created: set[str] = set()
        candle_keys: set[CandleKey] = set()
        for record in records:
            event = record.event
            if isinstance(event, ORDER_EVENTS):
                order_id = str(record.aggregate_id)
                if isinstance(event, (Order.Accepted, Order.Rejected)):
                    created.add(order_id)
                elif order_id not in created:
                    order_ids.add(order_id)
            elif isinstance(event, TradeTape.TradeExecuted):
                symbol = trade_symbol(record, symbols)
                for interval in CANDLE_INTERVALS:
                    candle_keys.add((symbol, interval, candle_open_time(event.timestamp, interval)))
            else:
                me = str(record.aggregate_id)
                for leg in postings(event):
                    if leg.ledger_account == me:
                        balance_keys.add((me, leg.asset))
        return cls(frozenset(balance_keys), frozenset(order_ids), frozenset(candle_keys))


def trade_symbol(record: EventRecord, symbols: Mapping[UUID, str]) -> str:
    """A trade's market: its tape's, or the ``SYMBOL`` of its ``SYMBOL:n`` trade id."""
    symbol = symbols.get(record.aggregate_id)
    if symbol is not None:
        return symbol
    event = record.event
    assert isinstance(event, TradeTape.TradeExecuted)
    return event.trade_id.rpartition(":")[0]


@dataclass
class BatchRows:
    """A batch folded into rows, over the current rows it continues.

    ``balances``, ``orders`` and ``candles`` start as what the store holds for
    the keys of ``Wanted`` (missing: no row yet) and end as the new state of
    every key the batch touched (those in ``changed_*``).
    """

    scales: Scales
    symbols: Mapping[UUID, str]
    balances: dict[BalanceKey, Balance] = field(default_factory=dict)
    orders: dict[str, Row] = field(default_factory=dict)
    candles: dict[CandleKey, Candle] = field(default_factory=dict)
    changed_balances: set[BalanceKey] = field(default_factory=set)
    changed_orders: set[str] = field(default_factory=set)
    changed_candles: set[CandleKey] = field(default_factory=set)
    accounts: list[Row] = field(default_factory=list)
    fills: list[Row] = field(default_factory=list)
    trades: list[Row] = field(default_factory=list)
    ledger: list[Row] = field(default_factory=list)
    users: list[Row] = field(default_factory=list)
    api_keys: list[Row] = field(default_factory=list)
    revoked_keys: dict[str, datetime] = field(default_factory=dict)
    listed: list[Row] = field(default_factory=list)

    # -- rows in -------------------------------------------------------------------

    def load_balance(self, row: Mapping[Any, Any]) -> None:
        asset = row["asset"]
        self.balances[row["account_id"], asset] = Balance(
            self.scales.to_units(asset, row["available"]),
            self.scales.to_units(asset, row["locked"]),
            row["updated_at"],
        )

    def load_order(self, row: Mapping[Any, Any]) -> None:
        self.orders[row["order_id"]] = dict(row)

    def load_candle(self, row: Mapping[Any, Any]) -> None:
        key = (row["symbol"], row["interval"], row["open_time"])
        self.candles[key] = Candle(
            row["open"],
            row["high"],
            row["low"],
            row["close"],
            row["volume"],
            row["quote_volume"],
            row["trades"],
        )

    # -- events --------------------------------------------------------------------

    def add_all(self, records: Iterable[EventRecord]) -> BatchRows:
        for record in records:
            self.add(record)
        return self

    def add(self, record: EventRecord) -> None:
        event = record.event
        if isinstance(event, ORDER_EVENTS):
            self._order(record.aggregate_id, event)
        elif isinstance(event, TradeTape.TradeExecuted):
            self._trade(record, event)
        elif isinstance(event, Account.Opened):
            self.accounts.append(
                {
                    "account_id": str(record.aggregate_id),
                    "owner": event.owner,
                    "opened_at": naive_utc(event.timestamp),
                }
            )
        elif isinstance(event, USER_EVENTS):
            self._user(record.aggregate_id, event)
        elif isinstance(event, TradeTape.Listed):
            self.listed.append(
                {
                    "symbol": event.symbol,
                    **{name: getattr(event, name) for name in MARKET_FIELDS},
                    "listed_at": naive_utc(event.timestamp),
                }
            )
        else:
            self._money(record, event)

    # -- users ---------------------------------------------------------------------

    def _user(self, user_id: UUID, event: DomainEvent) -> None:
        at = naive_utc(event.timestamp)
        if isinstance(event, User.Registered):
            self.users.append(
                {
                    "user_id": str(user_id),
                    "email": event.email,
                    "password_hash": event.password_hash,
                    "role": event.role,
                    "account_id": str(event.account_id),
                    "created_at": at,
                }
            )
        elif isinstance(event, User.ApiKeyCreated):
            self.api_keys.append(
                {
                    "key_id": event.key_id,
                    "user_id": str(user_id),
                    "permissions": event.permissions,
                    "label": event.label,
                    "created_at": at,
                    "revoked_at": None,
                }
            )
        elif isinstance(event, User.ApiKeyRevoked):
            self.revoked_keys[event.key_id] = at

    # -- orders --------------------------------------------------------------------

    def _order(self, order_id: UUID, event: DomainEvent) -> None:
        key = str(order_id)
        if isinstance(event, (Order.Accepted, Order.Rejected)):
            if key in self.orders:
                msg = f"order {key} created twice"
                raise ProjectionInconsistent(msg)
            self.orders[key] = new_order_row(order_id, event)
        else:
            row = self.orders.get(key)
            if row is None:
                msg = f"order {key}: {type(event).__qualname__} before it was created"
                raise ProjectionInconsistent(msg)
            advance_order(row, event)
        self.changed_orders.add(key)

    # -- money ---------------------------------------------------------------------

    def _money(self, record: EventRecord, event: DomainEvent) -> None:
        legs = postings(event)
        if not legs:
            return
        self.scales.learn(event)
        me = str(record.aggregate_id)
        at = naive_utc(event.timestamp)
        kind = type(event).__name__
        reference = ledger_reference(event)
        for index, leg in enumerate(legs):
            if leg.ledger_account == me:
                key = (me, leg.asset)
                balance = self.balances.get(key)
                if balance is None:
                    balance = self.balances[key] = Balance(0, 0, at)
                if leg.bucket == AVAILABLE:
                    balance.available += leg.units
                elif leg.bucket == LOCKED:
                    balance.locked += leg.units
                else:
                    msg = f"{kind} moves {me}'s {leg.bucket!r} bucket"
                    raise ProjectionInconsistent(msg)
                balance.updated_at = at
                self.changed_balances.add(key)
            if leg.units:
                self.ledger.append(
                    {
                        "event_id": me,
                        "event_version": record.version,
                        "leg": index,
                        "ledger_account": leg.ledger_account,
                        "bucket": leg.bucket,
                        "asset": leg.asset,
                        "amount": self.scales.to_decimal(leg.asset, leg.units),
                        "kind": kind,
                        "reference": reference,
                        "at": at,
                    }
                )
        if isinstance(event, Account.TradeSettled):
            self.fills.append(fill_row(me, event, at))

    # -- trades --------------------------------------------------------------------

    def _trade(self, record: EventRecord, event: TradeTape.TradeExecuted) -> None:
        symbol = trade_symbol(record, self.symbols)
        at = naive_utc(event.timestamp)
        self.trades.append(
            {
                "trade_id": event.trade_id,
                "symbol": symbol,
                "seq": record.version,
                "price": event.price,
                "quantity": event.quantity,
                "taker_side": event.taker_side,
                "taker_order_id": str(event.taker_order_id),
                "maker_order_id": str(event.maker_order_id),
                "at": at,
            }
        )
        with localcontext(EXACT):
            notional = event.price * event.quantity
        _, _, quote = self.scales.order_scales(symbol)
        if quote is not None:
            with contextlib.suppress(Inexact):  # kept in full rather than rounded
                notional = notional.quantize(quantum(quote), context=EXACT)
        for interval in CANDLE_INTERVALS:
            key = (symbol, interval, candle_open_time(at, interval))
            candle = self.candles.get(key)
            if candle is None:
                self.candles[key] = Candle.first(event.price, event.quantity, notional)
            else:
                candle.add(event.price, event.quantity, notional)
            self.changed_candles.add(key)

    # -- rows out ------------------------------------------------------------------

    def balance_rows(self) -> list[Row]:
        rows = []
        for key in sorted(self.changed_balances):
            account_id, asset = key
            balance = self.balances[key]
            rows.append(
                {
                    "account_id": account_id,
                    "asset": asset,
                    "available": self.scales.to_decimal(asset, balance.available),
                    "locked": self.scales.to_decimal(asset, balance.locked),
                    "updated_at": balance.updated_at,
                }
            )
        return rows

    def order_rows(self) -> list[Row]:
        return [self.orders[key] for key in sorted(self.changed_orders)]

    def candle_rows(self) -> list[Row]:
        rows = []
        for key in sorted(self.changed_candles):
            symbol, interval, open_time = key
            candle = self.candles[key]
            rows.append(
                {
                    "symbol": symbol,
                    "interval": interval,
                    "open_time": open_time,
                    "open": candle.open,
                    "high": candle.high,
                    "low": candle.low,
                    "close": candle.close,
                    "volume": candle.volume,
                    "quote_volume": candle.quote_volume,
                    "trades": candle.trades,
                }
            )
        return rows

    # -- notifications -------------------------------------------------------------

    def order_message(self, order_id: str) -> dict[str, Any]:
        """An order's new state, as ``GET /v1/orders/{id}`` shows it."""
        row = self.orders[order_id]
        price, base, quote = self.scales.order_scales(row["symbol"])

        def text(value: Decimal | None, scale: int | None) -> str | None:
            return None if value is None else amount_text(value, scale)

        return {
            "order_id": row["order_id"],
            "client_order_id": row["client_order_id"],
            "symbol": row["symbol"],
            "side": row["side"],
            "type": row["type"],
            "price": text(row["price"], price),
            "quantity": text(row["quantity"], base),
            "quote_quantity": text(row["quote_quantity"], quote),
            "time_in_force": row["time_in_force"],
            "post_only": bool(row["post_only"]),
            "self_trade_prevention": row["stp"],
            "status": row["status"],
            "reason": row["reason"],
            "filled_quantity": text(row["filled_quantity"], base),
            "filled_notional": text(row["filled_notional"], quote),
            "remaining": text(row["remaining"], base),
            "created_at": moment_text(row["created_at"]),
            "updated_at": moment_text(row["updated_at"]),
        }

    def messages(self, keys: RedisKeys) -> list[tuple[str, bytes]]:
        """(channel, message) of every changed order and every account whose balances changed."""
        out: list[tuple[str, bytes]] = []
        for order_id in sorted(self.changed_orders):
            account_id = self.orders[order_id]["account_id"]
            out.append(
                (keys.channel(f"orders:{account_id}"), orjson.dumps(self.order_message(order_id)))
            )
        by_account: dict[str, list[dict[str, str]]] = {}
        for account_id, asset in sorted(self.changed_balances):
            balance = self.balances[account_id, asset]
            scale = self.scales.asset(asset)
            by_account.setdefault(account_id, []).append(
                {
                    "asset": asset,
                    "available": amount_text(
                        self.scales.to_decimal(asset, balance.available), scale
                    ),
                    "locked": amount_text(self.scales.to_decimal(asset, balance.locked), scale),
                }
            )
        for account_id, changed in by_account.items():
            out.append(
                (
                    keys.channel(f"balances:{account_id}"),
                    orjson.dumps({"account_id": account_id, "balances": changed}),
                )
            )
        return out


# -- the store -------------------------------------------------------------------------


def read_positions(
    connection: Connection, projection: str, lock: bool = False
) -> dict[Position, int]:
    """The next offset per (topic, partition) a projection has applied (locked: FOR UPDATE)."""
    c = projection_offsets.c
    query = select(c.topic, c.partition, c.next_offset).where(c.projection == projection)
    if lock:
        query = query.with_for_update()
    return {(row.topic, row.partition): row.next_offset for row in connection.execute(query)}


def load_positions(engine: Engine, projection: str) -> dict[Position, int]:
    with engine.connect() as connection:
        return read_positions(connection, projection)


def lag(
    engine: Engine, projection: str, end_offsets: Mapping[Position, int]
) -> dict[Position, int]:
    """How many records of each partition a projection has still to apply."""
    applied = load_positions(engine, projection)
    return {
        position: max(end - applied.get(position, 0), 0) for position, end in end_offsets.items()
    }


DEADLOCK = 1213
"""MySQL's ER_LOCK_DEADLOCK: the transaction was rolled back and may simply be tried again."""


def _deadlocked(error: BaseException) -> bool:
    if not isinstance(error, DBAPIError):
        return False
    args: tuple[Any, ...] = getattr(error.orig, "args", ())
    return bool(args) and args[0] == DEADLOCK


def _upsert(connection: Connection, table: Table, rows: Sequence[Row]) -> None:
    """Insert ``rows``, or overwrite every other column of those whose key exists:
    one multi-row ``INSERT ... ON DUPLICATE KEY UPDATE``."""
    if not rows:
        return
    statement = mysql_insert(table)
    statement = statement.on_duplicate_key_update(
        {
            column.name: statement.inserted[column.name]
            for column in table.columns
            if not column.primary_key
        }
    )
    connection.execute(statement, list(rows))


def _append(connection: Connection, table: Table, rows: Sequence[Row]) -> None:
    """Insert new rows (a key already there means the bookkeeping broke: it raises)."""
    if rows:
        connection.execute(insert(table), list(rows))


class MySQLProjection:
    """The MySQL read models, applied effectively once (see the module docstring)."""

    name = NAME

    def __init__(
        self,
        engine: Engine,
        redis: aioredis.Redis | None,
        keys: RedisKeys,
        markets: Mapping[str, Market],
        listings: MarketListings | None = None,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.keys = keys
        self.markets: dict[str, Market] = {}
        self.scales = Scales.of({})
        self.symbols: dict[UUID, str] = {}
        for market in markets.values():
            self.list_market(market)
        self.listings = listings
        self._listings_read = 0
        self.applied = Applied()
        self._started = False

    def list_market(self, market: Market) -> None:
        """Know ``market`` from now on (from its listing, or read from the log)."""
        self.markets[market.symbol] = market
        self.scales.markets[market.symbol] = market
        for asset in (market.base, market.quote):
            self.scales.assets.setdefault(asset.code, asset.scale)
        self.symbols[market_id_for(market.symbol)] = market.symbol

    # -- Projection --------------------------------------------------------------

    async def start(self) -> None:
        """Load what the store has applied (aggregate versions are read as needed)."""
        self.applied = Applied(positions=await self.positions())
        if self.listings is not None:
            for market in (await self.listings.markets()).values():
                self.list_market(market)
        self._started = True

    async def positions(self) -> dict[Position, int]:
        return await asyncio.to_thread(load_positions, self.engine, NAME)

    async def apply(self, batch: Sequence[EventRecord]) -> None:
        if not batch:
            return
        if not self._started:
            await self.start()
        for _ in range(RETRIES):
            try:
                fresh, moved = await self.applied.select(batch, self._lookup_versions)
                if not moved:
                    return
                needed, self._listings_read = await markets_needed(
                    self.markets, fresh, self.listings, self._listings_read
                )
                for market in needed:
                    self.list_market(market)
                expected = {position: self.applied.positions.get(position, 0) for position in moved}
                rows = await asyncio.to_thread(self._transact, fresh, moved, expected)
            except PositionsMoved as stale:
                log.warning("mysql projection: another writer moved the offsets; selecting again")
                self.applied = Applied(positions=stale.stored)
                continue
            except BaseException as error:
                self.applied.forget_versions()
                if _deadlocked(error):
                    # Two writers' first batches met (gap locks): the loser selects again.
                    log.warning("mysql projection: deadlock with another writer; selecting again")
                    self.applied = Applied(positions=await self.positions())
                    continue
                # What the store holds is unknown now (a cancelled thread may still
                # commit): load it again before the next batch.
                self._started = False
                raise
            self.applied.commit(moved)
            await self._publish(rows)
            return
        msg = f"no batch applied in {RETRIES} attempts: other writers kept moving the offsets"
        raise ProjectionInconsistent(msg)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.dispose)
        if self.redis is not None:
            await self.redis.aclose()

    # -- the transaction -----------------------------------------------------------

    async def _lookup_versions(self, ids: Sequence[UUID]) -> dict[UUID, int]:
        return await asyncio.to_thread(self._read_versions, ids)

    def _read_versions(self, ids: Sequence[UUID]) -> dict[UUID, int]:
        c = aggregate_versions.c
        with self.engine.connect() as connection:
            found = connection.execute(
                select(c.aggregate_id, c.version).where(c.aggregate_id.in_([str(i) for i in ids]))
            )
            return {UUID(row.aggregate_id): row.version for row in found}

    def _transact(
        self,
        fresh: Sequence[EventRecord],
        moved: Mapping[Position, int],
        expected: Mapping[Position, int],
    ) -> BatchRows:
        for record in fresh:
            self.scales.learn(record.event)
        with self.engine.begin() as connection:
            stored = read_positions(connection, NAME, lock=True)
            if any(stored.get(position, 0) != expected[position] for position in moved):
                raise PositionsMoved(stored)
            rows = self._load(connection, Wanted.of(fresh, self.symbols)).add_all(fresh)
            self._write(connection, rows, moved, versions_of(fresh))
        return rows

    def _load(self, connection: Connection, wanted: Wanted) -> BatchRows:
        """The rows the batch continues, one query a table, into a fresh fold."""
        rows = BatchRows(self.scales, self.symbols)
        if wanted.balances:
            b = balances.c
            query = select(balances).where(
                tuple_(b.account_id, b.asset).in_(sorted(wanted.balances))
            )
            for row in connection.execute(query):
                rows.load_balance(row._mapping)
        if wanted.orders:
            query = select(orders).where(orders.c.order_id.in_(sorted(wanted.orders)))
            for row in connection.execute(query):
                rows.load_order(row._mapping)
        if wanted.candles:
            k = candles.c
            query = select(candles).where(
                tuple_(k.symbol, k.interval, k.open_time).in_(sorted(wanted.candles))
            )
            for row in connection.execute(query):
                rows.load_candle(row._mapping)
        return rows

    def _write(
        self,
        connection: Connection,
        rows: BatchRows,
        moved: Mapping[Position, int],
        versions: Mapping[UUID, int],
    ) -> None:
        _append(connection, users, rows.users)
        _append(connection, api_keys, rows.api_keys)
        for key_id, at in rows.revoked_keys.items():
            connection.execute(
                update(api_keys).where(api_keys.c.key_id == key_id).values(revoked_at=at)
            )
        _append(connection, market_table, rows.listed)
        _append(connection, accounts, rows.accounts)
        _upsert(connection, balances, rows.balance_rows())
        _upsert(connection, orders, rows.order_rows())
        _append(connection, fills, rows.fills)
        _append(connection, trades, rows.trades)
        _append(connection, ledger_entries, rows.ledger)
        _upsert(connection, candles, rows.candle_rows())
        self._write_bookkeeping(connection, moved, versions)

    def _write_bookkeeping(
        self, connection: Connection, moved: Mapping[Position, int], versions: Mapping[UUID, int]
    ) -> None:
        _upsert(
            connection,
            projection_offsets,
            [
                {"projection": NAME, "topic": topic, "partition": partition, "next_offset": offset}
                for (topic, partition), offset in sorted(moved.items())
            ],
        )
        _upsert(
            connection,
            aggregate_versions,
            [
                {"aggregate_id": str(aggregate_id), "version": version}
                for aggregate_id, version in sorted(versions.items())
            ],
        )

    # -- notifications -------------------------------------------------------------

    async def _publish(self, rows: BatchRows) -> None:
        """Tell the accounts' subscribers what the batch changed (after it is durable)."""
        if self.redis is None:
            return
        messages = rows.messages(self.keys)
        try:
            await publish_all(self.redis, messages)
        except RedisError:
            # The batch is applied; a client that missed these reads the REST state.
            log.exception("publishing %d account notifications failed", len(messages))
