"""The in-process exchange: settlement, fees, funds and every refusal, exactly."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from domain.accounts import Account
from domain.errors import DomainError, InsufficientFunds, InvalidAmount, UnknownOrder
from domain.invariants import check_state
from domain.ledger import EXTERNAL, FEES
from domain.markets import Market, demo_markets
from domain.matching import SelfTradePrevention, Side, TimeInForce
from domain.orders import Order, OrderStatus, OrderType
from domain.state_hash import state_hash
from tests.unit.conftest import World

D = Decimal
BTC_USDT = "BTC-USDT"


def place(world: World, account_id: UUID, **fields: Any) -> Order:
    fields.setdefault("symbol", BTC_USDT)
    fields.setdefault("type", OrderType.LIMIT)
    command_id = f"cmd-{len(world.events)}-{world.clock.now.timestamp()}"
    order = world.exchange.place(account_id, command_id, world.clock.tick(), **fields)
    world.drain()
    return order


def units(world: World, account_id: UUID, asset: str) -> tuple[Decimal, Decimal]:
    account = world.exchange.accounts[account_id]
    a = world.exchange.asset(asset)
    return a.to_decimal(account.available(a)), a.to_decimal(account.locked(a))


def assert_consistent(world: World) -> None:
    exchange = world.exchange
    assert check_state(exchange.accounts.values(), exchange.venues.values(), world.ledger) == []


def test_a_trade_settles_both_sides_with_fees_in_the_received_asset(world: World) -> None:
    seller = world.funded("seller", BTC="1")
    buyer = world.funded("buyer", USDT="100000")
    place(world, seller, side=Side.SELL, price=D("50000"), quantity=D("0.5"))
    taker = place(world, buyer, side=Side.BUY, price=D("50000"), quantity=D("0.2"))
    assert taker.status is OrderStatus.FILLED
    # Buyer paid 10,000 USDT and received 0.2 BTC less the 0.2% taker fee.
    assert units(world, buyer, "USDT") == (D("90000"), D("0"))
    assert units(world, buyer, "BTC") == (D("0.1996"), D("0"))
    # Seller still has 0.3 BTC locked on the book and received 10,000 less 0.1%.
    assert units(world, seller, "BTC") == (D("0.5"), D("0.3"))
    assert units(world, seller, "USDT") == (D("9990"), D("0"))
    assert world.ledger.balance(FEES, "BTC") == 40_000  # 0.0004 BTC
    assert world.ledger.balance(FEES, "USDT") == 10_000_000  # 10 USDT
    assert_consistent(world)


def test_a_buy_filled_below_its_limit_gets_the_difference_back(world: World) -> None:
    seller = world.funded("seller", BTC="1")
    buyer = world.funded("buyer", USDT="100000")
    place(world, seller, side=Side.SELL, price=D("40000"), quantity=D("0.1"))
    order = place(world, buyer, side=Side.BUY, price=D("50000"), quantity=D("0.3"))
    assert order.status is OrderStatus.PARTIALLY_FILLED
    # 0.1 bought at 40,000 = 4,000 spent; 0.2 still rests at 50,000 = 10,000 locked.
    assert units(world, buyer, "USDT") == (D("86000"), D("10000"))
    assert_consistent(world)


def test_fee_rounding_favours_the_exchange_and_is_recorded() -> None:
    btc_usdt = demo_markets()[BTC_USDT]
    world = World({BTC_USDT: replace(btc_usdt, min_notional=D("0.000001"))})
    seller = world.funded("seller", BTC="1")
    buyer = world.funded("buyer", USDT="100000")
    place(world, seller, side=Side.SELL, price=D("0.01"), quantity=D("0.0001"))
    place(world, buyer, side=Side.BUY, price=D("0.01"), quantity=D("0.0001"))
    settled = [e for e in world.events if isinstance(e, Account.TradeSettled)]
    by_side = {e.side: e for e in settled}
    # The seller receives 0.000001 USDT; 0.1% of it is 0.000000001, rounded up to 0.000001.
    assert by_side["sell"].received == D("0.000001")
    assert by_side["sell"].fee == D("0.000001")
    assert by_side["sell"].fee_rounding == D("0.000000999")
    # The buyer receives 10,000 satoshi; 0.2% is exactly 20: nothing rounded.
    assert by_side["buy"].fee == D("0.00000020")
    assert by_side["buy"].fee_rounding == 0
    assert_consistent(world)


def test_a_fee_override_applies_to_that_account_only(world: World) -> None:
    seller = world.funded("seller", BTC="1")
    vip = world.funded("vip", USDT="100000")
    world.exchange.set_fee_rates(vip, BTC_USDT, D("0"), D("0.0005"), world.clock.tick())
    world.drain()
    place(world, seller, side=Side.SELL, price=D("50000"), quantity=D("0.1"))
    place(world, vip, side=Side.BUY, price=D("50000"), quantity=D("0.1"))
    assert units(world, vip, "BTC") == (D("0.09995"), D("0"))
    assert units(world, seller, "USDT") == (D("4995"), D("0"))


def test_too_few_funds_rejects_the_order_and_moves_nothing(world: World) -> None:
    buyer = world.funded("buyer", USDT="100")
    order = place(world, buyer, side=Side.BUY, price=D("50000"), quantity=D("0.01"))
    assert (order.status, order.reason) == (OrderStatus.REJECTED, "insufficient_funds")
    assert units(world, buyer, "USDT") == (D("100"), D("0"))
    assert world.exchange.venues[BTC_USDT].book.orders == {}
    assert_consistent(world)


def test_a_repeated_client_order_id_returns_the_first_order(world: World) -> None:
    buyer = world.funded("buyer", USDT="100000")
    first = place(world, buyer, side=Side.BUY, price=D("100"), quantity=D("1"), client_order_id="x")
    count = len(world.events)
    again = place(world, buyer, side=Side.BUY, price=D("200"), quantity=D("2"), client_order_id="x")
    assert again is first
    assert len(world.events) == count
    assert units(world, buyer, "USDT") == (D("99900"), D("100"))


def test_cancel_releases_funds_and_only_the_owner_may_cancel(world: World) -> None:
    buyer = world.funded("buyer", USDT="1000")
    other = world.funded("other", USDT="1000")
    order = place(world, buyer, side=Side.BUY, price=D("100"), quantity=D("1"))
    with pytest.raises(UnknownOrder):
        world.exchange.cancel(other, order.id, world.clock.tick())
    assert world.exchange.collect_events() == []
    world.exchange.cancel(buyer, order.id, world.clock.tick())
    world.drain()
    assert order.status is OrderStatus.CANCELLED
    assert units(world, buyer, "USDT") == (D("1000"), D("0"))
    with pytest.raises(UnknownOrder):
        world.exchange.cancel(buyer, order.id, world.clock.tick())


def test_cancel_all_cancels_one_account_in_one_market(world: World) -> None:
    ann = world.funded("ann", USDT="10000", ETH="10")
    bob = world.funded("bob", USDT="10000")
    mine = [place(world, ann, side=Side.BUY, price=D(p), quantity=D("1")) for p in ("10", "11")]
    eth = place(world, ann, symbol="ETH-USDT", side=Side.SELL, price=D("3000"), quantity=D("1"))
    theirs = place(world, bob, side=Side.BUY, price=D("12"), quantity=D("1"))
    cancelled = world.exchange.cancel_all(ann, BTC_USDT, world.clock.tick())
    world.drain()
    assert [o.id for o in cancelled] == [o.id for o in mine]
    assert eth.status is OrderStatus.OPEN
    assert theirs.status is OrderStatus.OPEN
    assert_consistent(world)


def test_amend_that_needs_more_funds_locks_them_or_is_refused(world: World) -> None:
    buyer = world.funded("buyer", USDT="1000")
    order = place(world, buyer, side=Side.BUY, price=D("100"), quantity=D("5"))
    world.exchange.amend(buyer, order.id, world.clock.tick(), price=D("150"), quantity=D("6"))
    world.drain()
    assert units(world, buyer, "USDT") == (D("100"), D("900"))
    before = state_hash(world.exchange.accounts.values(), world.exchange.venues.values())
    with pytest.raises(InsufficientFunds):
        world.exchange.amend(buyer, order.id, world.clock.tick(), price=D("200"), quantity=D("6"))
    assert world.exchange.collect_events() == []
    after = state_hash(world.exchange.accounts.values(), world.exchange.venues.values())
    assert after == before
    world.exchange.amend(buyer, order.id, world.clock.tick(), price=None, quantity=D("2"))
    world.drain()
    assert units(world, buyer, "USDT") == (D("700"), D("300"))
    assert_consistent(world)


def test_market_buy_by_quote_returns_the_dust_it_cannot_spend(world: World) -> None:
    seller = world.funded("seller", BTC="1")
    buyer = world.funded("buyer", USDT="1000")
    place(world, seller, side=Side.SELL, price=D("30000"), quantity=D("1"))
    order = place(world, buyer, side=Side.BUY, type=OrderType.MARKET, quote_quantity=D("100.50"))
    # One lot (0.0001 BTC) costs 3 USDT: 33 lots = 99 USDT; 1.50 cannot buy a lot.
    assert order.status is OrderStatus.FILLED
    assert order.filled_quantity == D("0.0033")
    assert units(world, buyer, "USDT") == (D("901"), D("0"))
    assert_consistent(world)


def test_market_buy_by_quantity_spends_at_most_the_available_balance(world: World) -> None:
    seller = world.funded("seller", BTC="1")
    buyer = world.funded("buyer", USDT="100")
    place(world, seller, side=Side.SELL, price=D("30000"), quantity=D("1"))
    order = place(world, buyer, side=Side.BUY, type=OrderType.MARKET, quantity=D("0.01"))
    assert (order.status, order.reason) == (OrderStatus.EXPIRED, "funds_exhausted")
    assert order.filled_quantity == D("0.0033")
    assert units(world, buyer, "USDT") == (D("1"), D("0"))
    assert_consistent(world)


def test_self_trade_prevention_modes_through_the_exchange(world: World) -> None:
    ann = world.funded("ann", BTC="1", USDT="100000")
    resting = place(world, ann, side=Side.SELL, price=D("100"), quantity=D("1"))
    taker = place(
        world,
        ann,
        side=Side.BUY,
        price=D("100"),
        quantity=D("1"),
        stp=SelfTradePrevention.CANCEL_MAKER,
    )
    assert resting.status is OrderStatus.CANCELLED
    assert resting.reason == "self_trade_prevented"
    assert taker.status is OrderStatus.OPEN
    assert_consistent(world)


def test_deposits_are_idempotent_and_withdrawals_need_funds(world: World) -> None:
    ann = world.funded("ann", USDT="10")
    ex = world.exchange
    assert not ex.deposit(ann, "USDT", D("10"), "ann-USDT", world.clock.tick())
    with pytest.raises(InsufficientFunds):
        ex.withdraw(ann, "USDT", D("10.000001"), "w1", world.clock.tick())
    assert ex.withdraw(ann, "USDT", D("4"), "w1", world.clock.tick())
    assert not ex.withdraw(ann, "USDT", D("4"), "w1", world.clock.tick())
    world.drain()
    assert units(world, ann, "USDT") == (D("6"), D("0"))
    assert world.ledger.balance(EXTERNAL, "USDT") == -6_000_000


def test_a_history_replays_to_the_same_hash_from_a_fresh_exchange() -> None:
    def run() -> str:
        world = World()
        ann = world.funded("ann", BTC="2", USDT="100000")
        bob = world.funded("bob", BTC="2", USDT="100000")
        for i in range(20):
            side = Side.BUY if i % 2 else Side.SELL
            who = ann if i % 3 else bob
            place(world, who, side=side, price=D(100 + i % 5), quantity=D("0.5"))
        return state_hash(world.exchange.accounts.values(), world.exchange.venues.values())

    assert run() == run()


INVALID_ORDERS: list[tuple[dict[str, Any], str]] = [
    ({"price": D("100.001"), "quantity": D("1")}, "invalid_price"),
    ({"price": D("0"), "quantity": D("1")}, "invalid_price"),
    ({"price": D("-5"), "quantity": D("1")}, "invalid_price"),
    ({"price": D("100"), "quantity": D("0.00001")}, "invalid_quantity"),
    ({"price": D("100"), "quantity": D("0")}, "invalid_quantity"),
    ({"price": D("100"), "quantity": D("1000.0001")}, "invalid_quantity"),
    ({"price": D("1"), "quantity": D("0.5")}, "min_notional"),
    ({"quantity": D("1")}, "missing_field"),
    ({"price": D("100")}, "missing_field"),
    ({"price": D("100"), "quantity": D("1"), "quote_quantity": D("5")}, "invalid_order"),
    (
        {
            "price": D("100"),
            "quantity": D("1"),
            "post_only": True,
            "time_in_force": TimeInForce.IOC,
        },
        "invalid_order",
    ),
    ({"type": OrderType.MARKET, "price": D("100"), "quantity": D("1")}, "invalid_order"),
    ({"type": OrderType.MARKET}, "missing_field"),
    ({"type": OrderType.MARKET, "quantity": D("1"), "quote_quantity": D("5")}, "missing_field"),
    ({"type": OrderType.MARKET, "quote_quantity": D("0.5")}, "min_notional"),
    ({"type": OrderType.MARKET, "quote_quantity": D("5.0000001")}, "invalid_amount"),
    (
        {"type": OrderType.MARKET, "quantity": D("1"), "time_in_force": TimeInForce.GTC},
        "invalid_order",
    ),
    ({"type": OrderType.MARKET, "quantity": D("1"), "post_only": True}, "invalid_order"),
    ({"symbol": "DOGE-USDT", "price": D("1"), "quantity": D("1")}, "unknown_market"),
    ({"price": D("100"), "quantity": D("1"), "client_order_id": ""}, "invalid_order"),
    ({"price": D("100"), "quantity": D("1"), "client_order_id": "x" * 65}, "invalid_order"),
]


@pytest.mark.parametrize(("fields", "code"), INVALID_ORDERS)
def test_each_invalid_order_is_refused_with_its_reason_and_changes_nothing(
    world: World, fields: dict[str, Any], code: str
) -> None:
    buyer = world.funded("buyer", USDT="100000", BTC="10")
    before = state_hash(world.exchange.accounts.values(), world.exchange.venues.values())
    fields = {"symbol": BTC_USDT, "side": Side.BUY, "type": OrderType.LIMIT, **fields}
    with pytest.raises(DomainError) as refused:
        world.exchange.place(buyer, "cmd", world.clock.tick(), **fields)
    assert refused.value.code == code
    assert refused.value.message
    assert world.exchange.collect_events() == []
    after = state_hash(world.exchange.accounts.values(), world.exchange.venues.values())
    assert after == before


@pytest.mark.parametrize("amount", ["0", "-1", "0.0000001", "1e40"])
def test_invalid_deposit_amounts_are_refused(world: World, amount: str) -> None:
    ann = world.funded("ann")
    with pytest.raises(InvalidAmount):
        world.exchange.deposit(ann, "USDT", D(amount), "tx", world.clock.tick())
    assert world.exchange.collect_events() == []


def test_market_rules_are_checked_when_a_market_is_defined() -> None:
    btc_usdt = demo_markets()[BTC_USDT]
    fields = {f: getattr(btc_usdt, f) for f in Market.__dataclass_fields__}
    with pytest.raises(ValueError, match="tick_size x lot_size"):
        Market(**{**fields, "tick_size": D("0.01"), "lot_size": D("0.00000001")})
    with pytest.raises(ValueError, match="lot_size"):
        Market(**{**fields, "lot_size": D("0.000000001")})
