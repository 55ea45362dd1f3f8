"""The Account aggregate: per-asset available and locked balances.

Every balance change is one side of a balanced double-entry posting (see
``domain.ledger``): deposits and withdrawals against the external world, fees
to the fee account, trades through a per-market clearing account. Funds are
locked per order (a *reservation*), so what is locked always equals what the
account's open orders still need.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from uuid import UUID

from domain.aggregates import ExchangeAggregate, StampedCreated, account_id_for, member
from domain.errors import (
    DomainError,
    InsufficientFunds,
    InvalidAmount,
    InvariantViolation,
    UnknownOrder,
)
from domain.markets import FeeRate, Market
from domain.matching import Side
from domain.money import Asset, units_of


@dataclass(slots=True)
class Holding:
    """One asset's balance, in minor units."""

    available: int = 0
    locked: int = 0

    def lock(self, units: int) -> None:
        """Move units from available to locked (negative units unlock)."""
        self.available -= units
        self.locked += units


@dataclass(slots=True)
class Reservation:
    """Funds locked for one order: what it may still spend."""

    symbol: str
    side: Side
    asset: str
    units: int
    limit_price: Decimal | None
    amending: int | None = None
    """Units locked in advance for an amend on its way to the book; None if none is."""


@dataclass(frozen=True, slots=True)
class SettlementFill:
    """One side of one trade, as the account that owns the order settles it."""

    order_id: UUID
    trade_id: str
    symbol: str
    side: Side
    is_maker: bool
    price_ticks: int
    lots: int


class Account(ExchangeAggregate):
    TOPIC = "bitex.account"

    class Opened(ExchangeAggregate.Event, StampedCreated):
        TOPIC = "bitex.account.Opened"
        owner: str

    class Deposited(ExchangeAggregate.Event):
        TOPIC = "bitex.account.Deposited"
        asset: str
        amount: Decimal
        tx_id: str

        def apply(self, account: Account) -> None:
            account.holding(self.asset).available += units_of(self.amount)
            account.deposit_tx_ids.add(self.tx_id)

    class Withdrawn(ExchangeAggregate.Event):
        TOPIC = "bitex.account.Withdrawn"
        asset: str
        amount: Decimal
        withdrawal_id: str

        def apply(self, account: Account) -> None:
            account.holding(self.asset).available -= units_of(self.amount)
            account.withdrawal_ids.add(self.withdrawal_id)

    class FundsLocked(ExchangeAggregate.Event):
        TOPIC = "bitex.account.FundsLocked"
        order_id: UUID
        symbol: str
        side: str
        asset: str
        amount: Decimal
        limit_price: Decimal | None

        def apply(self, account: Account) -> None:
            units = units_of(self.amount)
            account.holding(self.asset).lock(units)
            account.reservations[self.order_id] = Reservation(
                self.symbol, member(Side, self.side), self.asset, units, self.limit_price
            )
            account.order_ids.add(self.order_id)

    class OrderRefused(ExchangeAggregate.Event):
        """An order was turned away before the book; nothing was locked."""

        TOPIC = "bitex.account.OrderRefused"
        order_id: UUID
        reason: str

        def apply(self, account: Account) -> None:
            account.order_ids.add(self.order_id)

    class AmendRequested(ExchangeAggregate.Event):
        """An amend is on its way to the book; ``prelocked`` is what it may need on top."""

        TOPIC = "bitex.account.AmendRequested"
        order_id: UUID
        asset: str
        prelocked: Decimal

        def apply(self, account: Account) -> None:
            units = units_of(self.prelocked)
            account.holding(self.asset).lock(units)
            reservation = account.reservations[self.order_id]
            reservation.units += units
            reservation.amending = units

    class ReservationAdjusted(ExchangeAggregate.Event):
        """The book applied or refused an amend: the reservation is what the order needs
        now (a positive change locks more), and no amend is pending any more."""

        TOPIC = "bitex.account.ReservationAdjusted"
        order_id: UUID
        asset: str
        change: Decimal
        limit_price: Decimal | None

        def apply(self, account: Account) -> None:
            units = units_of(self.change)
            account.holding(self.asset).lock(units)
            reservation = account.reservations[self.order_id]
            reservation.units += units
            reservation.limit_price = self.limit_price
            reservation.amending = None

    class FundsReleased(ExchangeAggregate.Event):
        """An order is done: whatever it did not spend is available again."""

        TOPIC = "bitex.account.FundsReleased"
        order_id: UUID
        asset: str
        amount: Decimal
        reason: str

        def apply(self, account: Account) -> None:
            units = units_of(self.amount)
            account.holding(self.asset).lock(-units)
            del account.reservations[self.order_id]

    class TradeSettled(ExchangeAggregate.Event):
        """This account's side of one trade, fee included.

        ``spent`` leaves the order's reservation, ``released`` (a buy filled
        below its limit) returns to available, ``received`` less ``fee``
        arrives, and ``fee_rounding`` is how much the fee was rounded up.
        """

        TOPIC = "bitex.account.TradeSettled"
        order_id: UUID
        trade_id: str
        symbol: str
        side: str
        role: str
        price: Decimal
        quantity: Decimal
        spent_asset: str
        spent: Decimal
        released: Decimal
        received_asset: str
        received: Decimal
        fee: Decimal
        fee_rounding: Decimal

        def apply(self, account: Account) -> None:
            spent, released = units_of(self.spent), units_of(self.released)
            paying = account.holding(self.spent_asset)
            paying.locked -= spent + released
            paying.available += released
            account.reservations[self.order_id].units -= spent + released
            account.holding(self.received_asset).available += units_of(self.received) - units_of(
                self.fee
            )
            account.trade_ids.add(self.trade_id)

    class FeeRatesSet(ExchangeAggregate.Event):
        TOPIC = "bitex.account.FeeRatesSet"
        symbol: str
        maker: Decimal
        taker: Decimal

        def apply(self, account: Account) -> None:
            account.fee_overrides[self.symbol] = (FeeRate(self.maker), FeeRate(self.taker))

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.holdings: dict[str, Holding] = {}
        self.reservations: dict[UUID, Reservation] = {}
        self.order_ids: set[UUID] = set()
        self.deposit_tx_ids: set[str] = set()
        self.withdrawal_ids: set[str] = set()
        self.trade_ids: set[str] = set()
        self.fee_overrides: dict[str, tuple[FeeRate, FeeRate]] = {}

    @classmethod
    def open(cls, owner: str, at: datetime) -> Account:
        return cls._create(cls.Opened, id=account_id_for(owner), owner=owner, timestamp=at)

    # -- reading -----------------------------------------------------------

    def holding(self, asset: str) -> Holding:
        holding = self.holdings.get(asset)
        if holding is None:
            holding = self.holdings[asset] = Holding()
        return holding

    def available(self, asset: Asset) -> int:
        holding = self.holdings.get(asset.code)
        return holding.available if holding else 0

    def locked(self, asset: Asset) -> int:
        holding = self.holdings.get(asset.code)
        return holding.locked if holding else 0

    def fee_rates(self, market: Market) -> tuple[FeeRate, FeeRate]:
        """(maker, taker) for this account on ``market``: its override, or the market's."""
        return self.fee_overrides.get(market.symbol, (market.maker_fee, market.taker_fee))

    # -- commands ----------------------------------------------------------

    def deposit(self, asset: Asset, amount: Decimal, tx_id: str, at: datetime) -> bool:
        """Credit a deposit once per external transaction id; False if seen before."""
        units = self._positive_units(asset, amount)
        if tx_id in self.deposit_tx_ids:
            return False
        self._record(
            self.Deposited, at, asset=asset.code, amount=asset.to_decimal(units), tx_id=tx_id
        )
        return True

    def withdraw(self, asset: Asset, amount: Decimal, withdrawal_id: str, at: datetime) -> bool:
        """Pay out from available funds, once per withdrawal id."""
        units = self._positive_units(asset, amount)
        if withdrawal_id in self.withdrawal_ids:
            return False
        if units > self.available(asset):
            msg = (
                f"cannot withdraw {asset.to_decimal(units)} {asset.code}: "
                f"{asset.to_decimal(self.available(asset))} available"
            )
            raise InsufficientFunds(msg)
        self._record(
            self.Withdrawn,
            at,
            asset=asset.code,
            amount=asset.to_decimal(units),
            withdrawal_id=withdrawal_id,
        )
        return True

    def lock(
        self,
        order_id: UUID,
        market: Market,
        side: Side,
        units: int,
        limit_price: Decimal | None,
        at: datetime,
    ) -> None:
        """Reserve ``units`` of the asset the order pays with."""
        asset = market.quote if side is Side.BUY else market.base
        if units <= 0 or units > self.available(asset):
            msg = (
                f"order needs {asset.to_decimal(max(units, 0))} {asset.code}, "
                f"{asset.to_decimal(self.available(asset))} available"
            )
            raise InsufficientFunds(msg)
        self._record(
            self.FundsLocked,
            at,
            order_id=order_id,
            symbol=market.symbol,
            side=side.value,
            asset=asset.code,
            amount=asset.to_decimal(units),
            limit_price=limit_price,
        )

    def refuse(self, order_id: UUID, reason: str, at: datetime) -> None:
        self._record(self.OrderRefused, at, order_id=order_id, reason=reason)

    def adjust(
        self, order_id: UUID, market: Market, units: int, limit_price: Decimal | None, at: datetime
    ) -> None:
        """Make an order's reservation exactly ``units`` (an amend changed its needs)."""
        reservation = self.reservation(order_id)
        asset = market.quote if reservation.side is Side.BUY else market.base
        change = units - reservation.units
        if change > self.available(asset):
            msg = (
                f"amend needs {asset.to_decimal(change)} more {asset.code}, "
                f"{asset.to_decimal(self.available(asset))} available"
            )
            raise InsufficientFunds(msg)
        if change or limit_price != reservation.limit_price or reservation.amending is not None:
            self._record(
                self.ReservationAdjusted,
                at,
                order_id=order_id,
                asset=asset.code,
                change=asset.to_decimal(change),
                limit_price=limit_price,
            )

    def request_amend(self, order_id: UUID, market: Market, extra: int, at: datetime) -> None:
        """Lock ``extra`` for an amend before the book sees it; one amend at a time."""
        reservation = self.reservation(order_id)
        if reservation.amending is not None:
            msg = f"order {order_id} has an amend in progress; wait for its outcome"
            raise DomainError(msg, "amend_in_progress")
        asset = market.quote if reservation.side is Side.BUY else market.base
        if extra > self.available(asset):
            msg = (
                f"amend needs {asset.to_decimal(extra)} more {asset.code}, "
                f"{asset.to_decimal(self.available(asset))} available"
            )
            raise InsufficientFunds(msg)
        self._record(
            self.AmendRequested,
            at,
            order_id=order_id,
            asset=asset.code,
            prelocked=asset.to_decimal(extra),
        )

    def release(self, order_id: UUID, market: Market, reason: str, at: datetime) -> None:
        """Close an order's reservation, returning what it did not spend."""
        reservation = self.reservation(order_id)
        asset = market.quote if reservation.side is Side.BUY else market.base
        self._record(
            self.FundsReleased,
            at,
            order_id=order_id,
            asset=asset.code,
            amount=asset.to_decimal(reservation.units),
            reason=reason,
        )

    def settle(self, fill: SettlementFill, market: Market, at: datetime) -> None:
        """Settle this account's side of a trade at the maker's price."""
        reservation = self.reservation(fill.order_id)
        notional = market.notional_units(fill.price_ticks, fill.lots)
        base_units = fill.lots * market.base_units_per_lot
        maker_rate, taker_rate = self.fee_rates(market)
        rate = maker_rate if fill.is_maker else taker_rate
        if fill.side is Side.BUY:
            paying, receiving = market.quote, market.base
            spent, received = notional, base_units
            released = 0
            if reservation.limit_price is not None:
                limit_ticks = market.price_to_ticks(reservation.limit_price)
                released = market.notional_units(limit_ticks - fill.price_ticks, fill.lots)
        else:
            paying, receiving = market.base, market.quote
            spent, received, released = base_units, notional, 0
        if spent + released > reservation.units:
            msg = f"order {fill.order_id} would spend more than it reserved"
            raise InvariantViolation(msg)
        fee, rounding, denominator = rate.charge(received)
        with localcontext(prec=60):
            fee_rounding = (Decimal(rounding) / denominator).scaleb(-receiving.scale)
        self._record(
            self.TradeSettled,
            at,
            order_id=fill.order_id,
            trade_id=fill.trade_id,
            symbol=market.symbol,
            side=fill.side.value,
            role="maker" if fill.is_maker else "taker",
            price=market.ticks_to_price(fill.price_ticks),
            quantity=market.lots_to_quantity(fill.lots),
            spent_asset=paying.code,
            spent=paying.to_decimal(spent),
            released=paying.to_decimal(released),
            received_asset=receiving.code,
            received=receiving.to_decimal(received),
            fee=receiving.to_decimal(fee),
            fee_rounding=fee_rounding,
        )

    def set_fee_rates(self, market: Market, maker: FeeRate, taker: FeeRate, at: datetime) -> None:
        self._record(self.FeeRatesSet, at, symbol=market.symbol, maker=maker.rate, taker=taker.rate)

    # -- helpers -----------------------------------------------------------

    def reservation(self, order_id: UUID) -> Reservation:
        try:
            return self.reservations[order_id]
        except KeyError:
            msg = f"account {self.id} has no funds locked for order {order_id}"
            raise UnknownOrder(msg) from None

    @staticmethod
    def _positive_units(asset: Asset, amount: Decimal) -> int:
        units = asset.to_units(amount)
        if units <= 0:
            msg = f"amount must be positive, got {amount}"
            raise InvalidAmount(msg)
        return units
