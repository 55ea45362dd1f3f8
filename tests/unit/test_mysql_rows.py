"""The MySQL projection's pure logic: candle buckets, exact amounts, rows folded from events.

The rows are checked against the processors themselves: the in-memory cores
(``tests.events.event_log``) run a workload, its events are folded batch by
batch, with the rows the next batch continues handed back as MySQL would
return them (``DECIMAL(40, 18)``), and the rows must equal the cores' accounts
and orders.

The helpers that compute what the rows must be from the cores are shared with
the integration test of the projection.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any
from uuid import uuid4

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.aggregates import market_id_for
from domain.ledger import AVAILABLE, LOCKED
from domain.markets import demo_markets
from domain.orders import Order, OrderStatus
from domain.venue import TradeTape
from infra.formats import amount_text, naive_utc
from infra.messages import Command
from infra.read_models import CANDLE_INTERVALS
from infra.redis_keys import RedisKeys
from projections.base import EventRecord
from projections.mysql_projection import (
    INTERVAL_SECONDS,
    BatchRows,
    CandleKey,
    ProjectionInconsistent,
    Row,
    Scales,
    Wanted,
    advance_order,
    candle_open_time,
    new_order_row,
)
from streams.local import LocalCluster
from tests.events import consumption_order, event_log
from tests.workload import T0, Workload

MARKETS = demo_markets()
SYMBOLS = {market_id_for(symbol): symbol for symbol in MARKETS}
SCALES = {
    asset.code: asset.scale for market in MARKETS.values() for asset in (market.base, market.quote)
}
DB_QUANTUM = Decimal("1E-18")
WIDE = Context(prec=80)
EPOCH = datetime(1970, 1, 1)


# -- workloads and what the rows must be (shared with the integration test) -----------


class SpreadWorkload(Workload):
    """A workload whose commands are ``step`` apart (not a millisecond), so that its
    trades fall into many candles of every interval."""

    def __init__(self, seed: int, owners: int, step: timedelta) -> None:
        super().__init__(seed, owners)
        self.step = step

    def command(self, kind: str, who: str, **fields: Any) -> Command:
        command = super().command(kind, who, **fields)
        return dataclasses.replace(command, at=T0 + self.step * self.count)


def recorded_log(
    seed: int, trading: int, owners: int = 20, step: timedelta = timedelta(seconds=97)
) -> tuple[LocalCluster, list[EventRecord]]:
    workload = SpreadWorkload(seed, owners, step)
    return event_log(workload.opening() + workload.trading(trading))


def batches_of(records: Sequence[EventRecord], size: int, seed: int) -> list[list[EventRecord]]:
    stream = consumption_order(records, seed)
    return [stream[start : start + size] for start in range(0, len(stream), size)]


def expected_balances(cluster: LocalCluster) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    """(account id, asset) -> (available, locked) of every holding the cores' accounts have."""
    found = {}
    for account in cluster.accounts():
        for asset, holding in account.holdings.items():
            quantum = Decimal(1).scaleb(-SCALES[asset])
            found[str(account.id), asset] = (
                holding.available * quantum,
                holding.locked * quantum,
            )
    return found


OrderState = tuple[str, str | None, Decimal, Decimal, Decimal | None, Decimal | None]
"""status, reason, filled quantity, filled notional, remaining, price."""


def expected_orders(cluster: LocalCluster) -> dict[str, OrderState]:
    """Every order the cores' venues hold (rejected ones included), by id."""
    return {
        str(order.id): (
            order.status.value,
            order.reason,
            order.filled_quantity,
            order.filled_notional,
            order.remaining,
            order.price,
        )
        for venue in cluster.venues()
        for order in venue.orders.values()
    }


def order_state(row: Row) -> OrderState:
    return (
        row["status"],
        row["reason"],
        row["filled_quantity"],
        row["filled_notional"],
        row["remaining"],
        row["price"],
    )


def expected_candles(records: Iterable[EventRecord]) -> dict[CandleKey, tuple[Any, ...]]:
    """(symbol, interval, open time) -> (open, high, low, close, volume, quote volume,
    trades), computed from the trades directly, in trade sequence order."""
    by_key: dict[CandleKey, list[tuple[int, Decimal, Decimal]]] = defaultdict(list)
    for record in records:
        event = record.event
        if isinstance(event, TradeTape.TradeExecuted):
            symbol = SYMBOLS[record.aggregate_id]
            for interval in CANDLE_INTERVALS:
                start = candle_open_time(event.timestamp, interval)
                by_key[symbol, interval, start].append(
                    (record.version, event.price, event.quantity)
                )
    out = {}
    for key, trades in by_key.items():
        trades.sort()
        prices = [price for _, price, _ in trades]
        out[key] = (
            prices[0],
            max(prices),
            min(prices),
            prices[-1],
            sum((quantity for _, _, quantity in trades), Decimal(0)),
            sum((price * quantity for _, price, quantity in trades), Decimal(0)),
            len(trades),
        )
    return out


# -- an in-memory stand-in for the tables ---------------------------------------------


def as_stored(row: Row) -> Row:
    """A row as MySQL hands it back: every amount with 18 decimals."""
    return {
        name: value.quantize(DB_QUANTUM, context=WIDE) if isinstance(value, Decimal) else value
        for name, value in row.items()
    }


class MemoryTables:
    """The projection's tables in memory, folded batch by batch the way the projection does."""

    def __init__(self) -> None:
        self.scales = Scales.of(MARKETS)
        self.accounts: dict[str, Row] = {}
        self.balances: dict[tuple[str, str], Row] = {}
        self.orders: dict[str, Row] = {}
        self.candles: dict[CandleKey, Row] = {}
        self.fills: dict[tuple[str, str], Row] = {}
        self.trades: dict[str, Row] = {}
        self.ledger: dict[tuple[str, int, int], Row] = {}
        self.messages: list[tuple[str, bytes]] = []

    def apply(self, records: Sequence[EventRecord]) -> BatchRows:
        wanted = Wanted.of(records, SYMBOLS)
        rows = BatchRows(self.scales, SYMBOLS)
        for key in wanted.balances:
            if key in self.balances:
                rows.load_balance(self.balances[key])
        for order_id in wanted.orders:
            if order_id in self.orders:
                rows.load_order(self.orders[order_id])
        for candle in wanted.candles:
            if candle in self.candles:
                rows.load_candle(self.candles[candle])
        rows.add_all(records)
        for row in rows.accounts:
            assert row["account_id"] not in self.accounts
            self.accounts[row["account_id"]] = row
        for row in rows.balance_rows():
            self.balances[row["account_id"], row["asset"]] = as_stored(row)
        for row in rows.order_rows():
            self.orders[row["order_id"]] = as_stored(row)
        for row in rows.candle_rows():
            self.candles[row["symbol"], row["interval"], row["open_time"]] = as_stored(row)
        for row in rows.fills:
            assert (row["trade_id"], row["role"]) not in self.fills
            self.fills[row["trade_id"], row["role"]] = as_stored(row)
        for row in rows.trades:
            assert row["trade_id"] not in self.trades
            self.trades[row["trade_id"]] = as_stored(row)
        for row in rows.ledger:
            key = (row["event_id"], row["event_version"], row["leg"])
            assert key not in self.ledger
            self.ledger[key] = as_stored(row)
        self.messages += rows.messages(RedisKeys.for_prefix("unit"))
        return rows


@functools.cache
def folded(seed: int = 3) -> tuple[LocalCluster, list[EventRecord], MemoryTables]:
    cluster, records = recorded_log(seed, trading=1200)
    tables = MemoryTables()
    for batch in batches_of(records, 150, seed):
        tables.apply(batch)
    return cluster, records, tables


# -- candles -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        ("1m", datetime(2026, 3, 7, 13, 47)),
        ("5m", datetime(2026, 3, 7, 13, 45)),
        ("15m", datetime(2026, 3, 7, 13, 45)),
        ("1h", datetime(2026, 3, 7, 13, 0)),
        ("4h", datetime(2026, 3, 7, 12, 0)),
        ("1d", datetime(2026, 3, 7)),
    ],
)
def test_candle_open_time_floors_to_the_interval_in_utc(interval: str, expected: datetime) -> None:
    at = datetime(2026, 3, 7, 13, 47, 59, 999_999, tzinfo=UTC)
    assert candle_open_time(at, interval) == expected
    # The same instant written in another zone is the same candle.
    elsewhere = at.astimezone(timezone(timedelta(hours=-5, minutes=-30)))
    assert candle_open_time(elsewhere, interval) == expected
    # The open time itself opens the candle; a microsecond before is the previous one.
    start = expected.replace(tzinfo=UTC)
    assert candle_open_time(start, interval) == expected
    previous = candle_open_time(start - timedelta(microseconds=1), interval)
    assert previous == expected - timedelta(seconds=INTERVAL_SECONDS[interval])


def test_every_read_model_interval_has_a_length() -> None:
    assert tuple(INTERVAL_SECONDS) == CANDLE_INTERVALS


@settings(max_examples=300, deadline=None)
@given(
    at=st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=9)), timezone(timedelta(hours=-3, minutes=-45))]
        ),
    ),
    interval=st.sampled_from(CANDLE_INTERVALS),
)
def test_candle_open_time_is_the_aligned_start_of_the_bucket(at: datetime, interval: str) -> None:
    start = candle_open_time(at, interval)
    step = timedelta(seconds=INTERVAL_SECONDS[interval])
    moment = naive_utc(at)
    assert start.tzinfo is None
    assert start <= moment < start + step
    assert (start - EPOCH) % step == timedelta(0)
    # A coarser interval's candle starts at or before a finer one's.
    for coarser in CANDLE_INTERVALS[CANDLE_INTERVALS.index(interval) :]:
        assert candle_open_time(at, coarser) <= start


def test_naive_utc() -> None:
    aware = datetime(2026, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert naive_utc(aware) == datetime(2025, 12, 31, 23, 30)
    assert naive_utc(datetime(2026, 1, 1, 1, 30)) == datetime(2026, 1, 1, 1, 30)


# -- exact amounts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "scale", "text"),
    [
        (Decimal("1.5"), 8, "1.50000000"),
        (Decimal("1.500000000000000000"), 6, "1.500000"),
        (Decimal("0E-18"), 8, "0.00000000"),
        (Decimal("-2.25"), 2, "-2.25"),
        (Decimal("50000"), 2, "50000.00"),
        (Decimal("1E+3"), 0, "1000"),
        # Too many decimals for the scale: written in full, never rounded.
        (Decimal("0.123"), 2, "0.123"),
        (Decimal("1.250000000000000000"), None, "1.25"),
    ],
)
def test_decimal_text(value: Decimal, scale: int | None, text: str) -> None:
    assert amount_text(value, scale) == text


@settings(max_examples=300, deadline=None)
@given(units=st.integers(-(10**22), 10**22), scale=st.integers(0, 18))
def test_amounts_round_trip_through_the_database_scale(units: int, scale: int) -> None:
    scales = Scales({"X": scale}, {})
    value = scales.to_decimal("X", units)
    stored = value.quantize(DB_QUANTUM, context=WIDE)  # what DECIMAL(40, 18) gives back
    assert scales.to_units("X", stored) == units
    assert amount_text(stored, scale) == f"{value:f}"
    assert Decimal(amount_text(stored, scale)) == value


def test_an_amount_off_its_scale_is_refused() -> None:
    with pytest.raises(ProjectionInconsistent):
        Scales({"X": 2}, {}).to_units("X", Decimal("0.001"))
    with pytest.raises(ProjectionInconsistent):
        Scales({}, {}).to_units("Y", Decimal(1))


# -- order rows ---------------------------------------------------------------------------


def _accepted(**changes: Any) -> Order.Accepted:
    fields: dict[str, Any] = {
        "originator_id": uuid4(),
        "originator_version": 1,
        "originator_topic": "bitex.order",
        "timestamp": T0,
        "account_id": uuid4(),
        "symbol": "BTC-USDT",
        "side": "buy",
        "type": "limit",
        "price": Decimal("50000.000000"),
        "quantity": Decimal("0.50000000"),
        "quote_quantity": None,
        "time_in_force": "GTC",
        "post_only": False,
        "stp": "cancel_taker",
        "client_order_id": "mine-1",
    }
    fields.update(changes)
    return Order.Accepted(**fields)


def _later(cls: type[Any], version: int, seconds: int, **fields: Any) -> Any:
    return cls(
        originator_id=uuid4(),
        originator_version=version,
        timestamp=T0 + timedelta(seconds=seconds),
        **fields,
    )


def _fill(cls: type[Any], version: int, quantity: str, notional: str) -> Any:
    return _later(
        cls,
        version,
        version,
        trade_id=f"BTC-USDT:{version}",
        price=Decimal("50000.000000"),
        quantity=Decimal(quantity),
        notional=Decimal(notional),
        role="maker",
        counter_order_id=uuid4(),
    )


def test_a_limit_order_row_through_its_life() -> None:
    accepted = _accepted()
    row = new_order_row(accepted.originator_id, accepted)
    assert row["status"] == "accepted"
    assert row["remaining"] == Decimal("0.5")
    assert row["filled_quantity"] == 0
    assert row["filled_notional"] == 0
    assert row["created_at"] == row["updated_at"] == datetime(2026, 1, 1)
    assert row["client_order_id"] == "mine-1"

    advance_order(row, _later(Order.Rested, 2, 2, remaining=Decimal("0.50000000")))
    assert (row["status"], row["remaining"]) == ("open", Decimal("0.5"))

    advance_order(row, _fill(Order.PartiallyFilled, 3, "0.20000000", "10000.000000"))
    assert row["status"] == "partially_filled"
    assert (row["filled_quantity"], row["remaining"]) == (Decimal("0.2"), Decimal("0.3"))
    assert row["filled_notional"] == Decimal(10000)

    # Resting again after an amend does not reopen a partially filled order.
    advance_order(
        row,
        _later(
            Order.Amended,
            4,
            4,
            price=Decimal("49000.000000"),
            remaining=Decimal("0.40000000"),
            priority_kept=False,
        ),
    )
    advance_order(row, _later(Order.Rested, 5, 5, remaining=Decimal("0.40000000")))
    assert row["status"] == "partially_filled"
    assert (row["price"], row["remaining"]) == (Decimal(49000), Decimal("0.4"))

    advance_order(row, _fill(Order.Filled, 6, "0.40000000", "19600.000000"))
    assert row["status"] == "filled"
    assert row["remaining"] == 0
    assert row["filled_quantity"] == Decimal("0.6")
    assert row["filled_notional"] == Decimal(29600)
    assert row["updated_at"] == datetime(2026, 1, 1, 0, 0, 6)
    assert row["reason"] is None


def test_a_market_buy_by_quote_has_no_quantity_and_expires() -> None:
    accepted = _accepted(
        type="market",
        price=None,
        quantity=None,
        quote_quantity=Decimal("100.000000"),
        time_in_force="IOC",
        client_order_id=None,
    )
    row = new_order_row(accepted.originator_id, accepted)
    assert row["remaining"] is None
    assert row["filled_quantity"] == 0
    advance_order(row, _fill(Order.PartiallyFilled, 2, "0.00100000", "50.000000"))
    assert row["remaining"] is None
    advance_order(row, _later(Order.Expired, 3, 3, reason="no_liquidity"))
    assert (row["status"], row["reason"]) == ("expired", "no_liquidity")
    assert row["filled_quantity"] == Decimal("0.001")


def test_rejected_and_cancelled_orders_keep_their_reason() -> None:
    rejected = Order.Rejected(
        **{**_accepted().__dict__, "reason": "insufficient_funds"},
    )
    row = new_order_row(rejected.originator_id, rejected)
    assert (row["status"], row["reason"]) == ("rejected", "insufficient_funds")

    accepted = _accepted()
    row = new_order_row(accepted.originator_id, accepted)
    advance_order(row, _later(Order.Cancelled, 2, 9, reason="self_trade_prevented"))
    assert (row["status"], row["reason"]) == ("cancelled", "self_trade_prevented")
    with pytest.raises(ProjectionInconsistent):
        advance_order(row, accepted)


def test_an_order_continued_before_it_was_created_is_an_alarm() -> None:
    _, records, _ = folded()
    later = next(r for r in records if isinstance(r.event, Order.Rested))
    with pytest.raises(ProjectionInconsistent):
        BatchRows(Scales.of(MARKETS), SYMBOLS).add(later)


# -- the whole fold against the processors ----------------------------------------------


def test_order_rows_equal_the_venues_orders() -> None:
    cluster, _, tables = folded()
    expected = expected_orders(cluster)
    assert {row["order_id"]: order_state(row) for row in tables.orders.values()} == expected
    statuses = Counter(state[0] for state in expected.values())
    # The workload reaches every status an order can end in (or wait in).
    assert {s.value for s in OrderStatus} - {"accepted"} <= set(statuses)


def test_balance_rows_equal_the_accounts() -> None:
    cluster, _, tables = folded()
    rows = {key: (row["available"], row["locked"]) for key, row in tables.balances.items()}
    assert rows == expected_balances(cluster)
    for (_, asset), row in tables.balances.items():
        # Written at the asset's scale: nothing below it.
        for amount in (row["available"], row["locked"]):
            assert amount == amount.quantize(Decimal(1).scaleb(-SCALES[asset]))


def test_the_ledger_balances_and_agrees_with_the_balances() -> None:
    _, _, tables = folded()
    per_asset: Counter[str] = Counter()
    per_bucket: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for row in tables.ledger.values():
        assert row["amount"] != 0
        per_asset[row["asset"]] += row["amount"]
        per_bucket[row["ledger_account"], row["asset"], row["bucket"]] += row["amount"]
    assert set(per_asset) == set(SCALES)
    assert all(total == 0 for total in per_asset.values()), per_asset
    for (account_id, asset), row in tables.balances.items():
        assert per_bucket[account_id, asset, AVAILABLE] == row["available"]
        assert per_bucket[account_id, asset, LOCKED] == row["locked"]
    kinds = Counter(row["kind"] for row in tables.ledger.values())
    assert set(kinds) >= {"Deposited", "FundsLocked", "FundsReleased", "TradeSettled"}


def test_fills_and_trades() -> None:
    _, records, tables = folded()
    trades = tables.trades
    executed = [r for r in records if isinstance(r.event, TradeTape.TradeExecuted)]
    assert len(trades) == len(executed) > 0
    assert len(tables.fills) == 2 * len(trades)
    for trade_id, trade in trades.items():
        maker, taker = tables.fills[trade_id, "maker"], tables.fills[trade_id, "taker"]
        assert taker["order_id"] == trade["taker_order_id"]
        assert maker["order_id"] == trade["maker_order_id"]
        assert maker["side"] != taker["side"] == trade["taker_side"]
        assert maker["price"] == taker["price"] == trade["price"]
        assert maker["quantity"] == taker["quantity"] == trade["quantity"]
        assert trade_id.startswith(trade["symbol"] + ":")
    for record in executed:
        assert trades[record.event.trade_id]["seq"] == record.version


def test_candles_equal_the_trades() -> None:
    _, records, tables = folded()
    stored = {
        key: (
            row["open"],
            row["high"],
            row["low"],
            row["close"],
            row["volume"],
            row["quote_volume"],
            row["trades"],
        )
        for key, row in tables.candles.items()
    }
    assert stored == expected_candles(records)
    per_interval = Counter(interval for _, interval, _ in stored)
    # The spread workload's trades fall into many candles of every interval.
    assert per_interval["1m"] > per_interval["1h"] > per_interval["1d"] >= 2


def test_each_batch_notifies_each_changed_order_once_with_its_latest_state() -> None:
    cluster, _, tables = folded()
    keys = RedisKeys.for_prefix("unit")
    last_orders: dict[str, dict[str, Any]] = {}
    last_balances: dict[tuple[str, str], dict[str, str]] = {}
    for channel, raw in tables.messages:
        message = orjson.loads(raw)
        if "balances" in message:
            assert channel == keys.channel(f"balances:{message['account_id']}")
            for entry in message["balances"]:
                last_balances[message["account_id"], entry["asset"]] = entry
        else:
            account_id = tables.orders[message["order_id"]]["account_id"]
            assert channel == keys.channel(f"orders:{account_id}")
            last_orders[message["order_id"]] = message
    expected = expected_orders(cluster)
    assert set(last_orders) == set(expected)
    for order_id, message in last_orders.items():
        status, reason, filled, _, remaining, _ = expected[order_id]
        assert (message["status"], message["reason"]) == (status, reason)
        assert Decimal(message["filled_quantity"]) == filled
        assert (message["remaining"] is None) == (remaining is None)
        if remaining is not None:
            assert Decimal(message["remaining"]) == remaining
        if message["price"] is not None:
            assert message["price"].count(".") == 1
            assert len(message["price"].partition(".")[2]) in {2, 5}  # the tick's decimals
    balances = expected_balances(cluster)
    assert set(last_balances) == set(balances)
    for key, entry in last_balances.items():
        available, locked = balances[key]
        scale = SCALES[key[1]]
        assert entry["available"] == f"{available.quantize(Decimal(1).scaleb(-scale)):f}"
        assert entry["locked"] == f"{locked.quantize(Decimal(1).scaleb(-scale)):f}"


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10**6), size=st.integers(1, 300))
def test_any_workload_in_any_batches_folds_to_the_processors_state(seed: int, size: int) -> None:
    cluster, records = recorded_log(seed, trading=200, owners=6, step=timedelta(seconds=40))
    tables = MemoryTables()
    for batch in batches_of(records, size, seed):
        tables.apply(batch)
    assert {k: order_state(r) for k, r in tables.orders.items()} == expected_orders(cluster)
    rows = {key: (row["available"], row["locked"]) for key, row in tables.balances.items()}
    assert rows == expected_balances(cluster)
    assert len(tables.fills) == 2 * len(tables.trades)
