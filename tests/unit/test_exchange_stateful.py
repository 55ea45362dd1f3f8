"""Random histories through the whole in-process exchange, checked after every step."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from domain.errors import DomainError
from domain.invariants import check_state
from domain.matching import SelfTradePrevention, Side, TimeInForce
from domain.orders import Order, OrderType
from domain.replay import Replayer
from domain.state_hash import state_hash
from infra.serialization import EventMapper
from tests.unit.conftest import World

OWNERS = ["ann", "bob", "cyd"]
# Narrow price bands so that orders cross often.
MID = {"BTC-USDT": 50_000, "ETH-USDT": 3_000, "ETH-BTC": Decimal("0.06")}
STEP = {"BTC-USDT": Decimal(1), "ETH-USDT": Decimal("0.5"), "ETH-BTC": Decimal("0.00001")}
LOT = {"BTC-USDT": Decimal("0.0001"), "ETH-USDT": Decimal("0.001"), "ETH-BTC": Decimal("0.001")}

symbols = st.sampled_from(sorted(MID))
sides = st.sampled_from(list(Side))
owners = st.sampled_from(OWNERS)
offsets = st.integers(min_value=-6, max_value=6)
lots = st.integers(min_value=1, max_value=40).map(lambda n: n * 25)
stps = st.sampled_from(list(SelfTradePrevention))


def price_of(symbol: str, offset: int) -> Decimal:
    return Decimal(MID[symbol]) + STEP[symbol] * offset


class ExchangeMachine(RuleBasedStateMachine):
    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.exchange = self.world.exchange
        self.mapper = EventMapper()
        self.ids: dict[str, UUID] = {}
        self.commands = 0

    @initialize()
    def open_accounts(self) -> None:
        for owner in OWNERS:
            self.ids[owner] = self.world.funded(owner, USDT="200000", BTC="3", ETH="40")

    def _command_id(self) -> str:
        self.commands += 1
        return f"cmd-{self.commands}"

    def _refused_without_effect(self, action: object) -> None:
        """A refused command must leave no event and no change behind."""
        before = state_hash(self.exchange.accounts.values(), self.exchange.venues.values())
        try:
            action()  # type: ignore[operator]
        except DomainError:
            assert self.exchange.collect_events() == []
            after = state_hash(self.exchange.accounts.values(), self.exchange.venues.values())
            assert after == before

    @rule(owner=owners, asset=st.sampled_from(["USDT", "BTC", "ETH"]), units=st.integers(1, 10**9))
    def deposit(self, owner: str, asset: str, units: int) -> None:
        amount = Decimal(units).scaleb(-6)
        tx = self._command_id()
        self.exchange.deposit(self.ids[owner], asset, amount, tx, self.world.clock.tick())
        self.world.drain()

    @rule(owner=owners, asset=st.sampled_from(["USDT", "BTC", "ETH"]), units=st.integers(1, 10**9))
    def withdraw(self, owner: str, asset: str, units: int) -> None:
        amount = Decimal(units).scaleb(-6)
        at = self.world.clock.tick()
        self._refused_without_effect(
            lambda: self.exchange.withdraw(self.ids[owner], asset, amount, self._command_id(), at)
        )
        self.world.drain()

    @rule(
        target=orders,
        owner=owners,
        symbol=symbols,
        side=sides,
        offset=offsets,
        n=lots,
        tif=st.sampled_from([TimeInForce.GTC] * 4 + [TimeInForce.IOC, TimeInForce.FOK]),
        post_only=st.booleans(),
        stp=stps,
        client_id=st.none() | st.sampled_from(["a", "b"]),
    )
    def place_limit(
        self,
        owner: str,
        symbol: str,
        side: Side,
        offset: int,
        n: int,
        tif: TimeInForce,
        post_only: bool,
        stp: SelfTradePrevention,
        client_id: str | None,
    ) -> UUID:
        account_id = self.ids[owner]
        before = len(self.exchange.venues[symbol].orders)
        order = self.exchange.place(
            account_id,
            self._command_id(),
            self.world.clock.tick(),
            symbol=symbol,
            side=side,
            type=OrderType.LIMIT,
            price=price_of(symbol, offset),
            quantity=LOT[symbol] * n,
            time_in_force=tif,
            post_only=post_only and tif is TimeInForce.GTC,
            stp=stp,
            client_order_id=client_id,
        )
        new = self.world.drain()
        if len(self.exchange.venues[symbol].orders) == before:
            assert new == [], "a repeated client order id must change nothing"
        return order.id

    @rule(target=orders, owner=owners, symbol=symbols, side=sides, offset=offsets, n=lots)
    def place_resting(self, owner: str, symbol: str, side: Side, offset: int, n: int) -> UUID:
        """A plain GTC limit order away from the mid, to keep the books deep."""
        away = abs(offset) + 1
        order = self.exchange.place(
            self.ids[owner],
            self._command_id(),
            self.world.clock.tick(),
            symbol=symbol,
            side=side,
            type=OrderType.LIMIT,
            price=price_of(symbol, -away if side is Side.BUY else away),
            quantity=LOT[symbol] * n,
        )
        self.world.drain()
        return order.id

    @rule(
        target=orders,
        owner=owners,
        symbol=symbols,
        side=sides,
        through=st.integers(0, 3),
        n=lots,
        tif=st.sampled_from(list(TimeInForce)),
        stp=stps,
    )
    def take(
        self,
        owner: str,
        symbol: str,
        side: Side,
        through: int,
        n: int,
        tif: TimeInForce,
        stp: SelfTradePrevention,
    ) -> MultipleResults[UUID]:
        """A limit order priced at or through the best opposite price: it trades."""
        venue = self.exchange.venues[symbol]
        best = venue.book.best_ask() if side is Side.BUY else venue.book.best_bid()
        if best is None:
            return multiple()
        ticks = best + through if side is Side.BUY else max(1, best - through)
        order = self.exchange.place(
            self.ids[owner],
            self._command_id(),
            self.world.clock.tick(),
            symbol=symbol,
            side=side,
            type=OrderType.LIMIT,
            price=venue.market.ticks_to_price(ticks),
            quantity=LOT[symbol] * n,
            time_in_force=tif,
            stp=stp,
        )
        self.world.drain()
        return multiple(order.id)

    @rule(
        target=orders,
        owner=owners,
        symbol=symbols,
        side=sides,
        n=lots,
        by_quote=st.booleans(),
        fok=st.booleans(),
        stp=stps,
    )
    def place_market(
        self,
        owner: str,
        symbol: str,
        side: Side,
        n: int,
        by_quote: bool,
        fok: bool,
        stp: SelfTradePrevention,
    ) -> UUID:
        by_quote = by_quote and side is Side.BUY
        quote = price_of(symbol, 0) * LOT[symbol] * n
        order = self.exchange.place(
            self.ids[owner],
            self._command_id(),
            self.world.clock.tick(),
            symbol=symbol,
            side=side,
            type=OrderType.MARKET,
            quantity=None if by_quote else LOT[symbol] * n,
            quote_quantity=quote if by_quote else None,
            time_in_force=TimeInForce.FOK if fok and not by_quote else TimeInForce.IOC,
            stp=stp,
        )
        self.world.drain()
        assert order.is_done, "a market order never rests"
        return order.id

    @rule(owner=owners, order_id=orders)
    def cancel(self, owner: str, order_id: UUID) -> None:
        at = self.world.clock.tick()
        self._refused_without_effect(lambda: self.exchange.cancel(self.ids[owner], order_id, at))
        self.world.drain()

    @rule(owner=owners, symbol=symbols)
    def cancel_all(self, owner: str, symbol: str) -> None:
        self.exchange.cancel_all(self.ids[owner], symbol, self.world.clock.tick())
        self.world.drain()

    @rule(order_id=consumes(orders), offset=st.none() | offsets, n=lots)
    def amend(self, order_id: UUID, offset: int | None, n: int) -> None:
        order = next(
            (v.orders[order_id] for v in self.exchange.venues.values() if order_id in v.orders),
            None,
        )
        if order is None:
            return
        price = None if offset is None else price_of(order.symbol, offset)
        at = self.world.clock.tick()
        self._refused_without_effect(
            lambda: self.exchange.amend(
                order.account_id, order_id, at, price=price, quantity=LOT[order.symbol] * n
            )
        )
        self.world.drain()

    @invariant()
    def state_is_consistent(self) -> None:
        problems = check_state(
            self.exchange.accounts.values(), self.exchange.venues.values(), self.world.ledger
        )
        assert problems == []

    @invariant()
    def fill_or_kill_and_post_only_hold(self) -> None:
        for venue in self.exchange.venues.values():
            for order in venue.orders.values():
                if order.time_in_force is TimeInForce.FOK:
                    assert order.status.value == "filled" or not order.filled_quantity
        post_only = {
            order.id
            for venue in self.exchange.venues.values()
            for order in venue.orders.values()
            if order.post_only
        }
        for event in self.world.events:
            if isinstance(event, Order.PartiallyFilled) and event.role == "taker":
                assert event.originator_id not in post_only, "a post-only order took"

    @invariant()
    def replaying_the_events_rebuilds_the_same_state(self) -> None:
        replayer = Replayer(self.exchange.markets)
        for event in self.world.events:
            replayer.apply(self.mapper.to_domain_event(self.mapper.to_stored_event(event)))
        live = state_hash(self.exchange.accounts.values(), self.exchange.venues.values())
        assert state_hash(replayer.accounts.values(), replayer.venues.values()) == live


ExchangeMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestExchangeHistories = ExchangeMachine.TestCase
