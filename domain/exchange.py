"""The whole exchange in one process: accounts, venues and settlement, in order.

This is the reference model. The distributed write side splits the same steps
across processors (accounts by account, venues by market) and must end in the
same state; tests and the replay tool compare against this.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from domain.accounts import Account
from domain.aggregates import account_id_for, order_id_for
from domain.errors import DomainError, InsufficientFunds, UnknownMarket, UnknownOrder
from domain.markets import FeeRate, Market
from domain.matching import SelfTradePrevention, Side, TimeInForce
from domain.money import Asset
from domain.orders import Order, OrderRequest, OrderType, validate_order
from domain.settlement import (
    SETTLING_EVENTS,
    lock_for_order,
    prelock_for_amend,
    settle_order_event,
)
from domain.venue import Event, Venue


class UnknownAccount(DomainError):
    code = "unknown_account"


class Exchange:
    def __init__(self, markets: dict[str, Market], at: datetime) -> None:
        self.markets = markets
        self.assets: dict[str, Asset] = {}
        for market in markets.values():
            self.assets[market.base.code] = market.base
            self.assets[market.quote.code] = market.quote
        self.accounts: dict[UUID, Account] = {}
        self.venues: dict[str, Venue] = {}
        self._venue_of: dict[UUID, Venue] = {}
        self._pending: list[Event] = []
        for symbol, market in sorted(markets.items()):
            self.venues[symbol] = Venue.open(market, at)
            self._pending.extend(self.venues[symbol].collect_events())

    # -- reading -----------------------------------------------------------

    def market(self, symbol: str) -> Market:
        try:
            return self.markets[symbol]
        except KeyError:
            msg = f"unknown market {symbol!r}"
            raise UnknownMarket(msg) from None

    def asset(self, code: str) -> Asset:
        try:
            return self.assets[code]
        except KeyError:
            msg = f"unknown asset {code!r}"
            raise UnknownMarket(msg, "unknown_asset") from None

    def account(self, account_id: UUID) -> Account:
        try:
            return self.accounts[account_id]
        except KeyError:
            msg = f"unknown account {account_id}"
            raise UnknownAccount(msg) from None

    def order(self, account_id: UUID, order_id: UUID) -> Order:
        return self._owning_venue(account_id, order_id).owned_order(account_id, order_id)

    def collect_events(self) -> list[Event]:
        """Every event since the last call, in the order it happened."""
        events, self._pending = self._pending, []
        return events

    # -- commands ----------------------------------------------------------

    def open_account(self, owner: str, at: datetime) -> Account:
        account_id = account_id_for(owner)
        account = self.accounts.get(account_id)
        if account is None:
            account = self.accounts[account_id] = Account.open(owner, at)
            self._collect(account)
        return account

    def deposit(
        self, account_id: UUID, asset: str, amount: Decimal, tx_id: str, at: datetime
    ) -> bool:
        account = self.account(account_id)
        done = account.deposit(self.asset(asset), amount, tx_id, at)
        self._collect(account)
        return done

    def withdraw(
        self, account_id: UUID, asset: str, amount: Decimal, withdrawal_id: str, at: datetime
    ) -> bool:
        account = self.account(account_id)
        done = account.withdraw(self.asset(asset), amount, withdrawal_id, at)
        self._collect(account)
        return done

    def set_fee_rates(
        self, account_id: UUID, symbol: str, maker: Decimal, taker: Decimal, at: datetime
    ) -> None:
        account = self.account(account_id)
        account.set_fee_rates(self.market(symbol), FeeRate(maker), FeeRate(taker), at)
        self._collect(account)

    def place(
        self,
        account_id: UUID,
        command_id: str,
        at: datetime,
        *,
        symbol: str,
        side: Side,
        type: OrderType,
        price: Decimal | None = None,
        quantity: Decimal | None = None,
        quote_quantity: Decimal | None = None,
        time_in_force: TimeInForce | None = None,
        post_only: bool = False,
        stp: SelfTradePrevention = SelfTradePrevention.CANCEL_TAKER,
        client_order_id: str | None = None,
    ) -> Order:
        """Place an order; a client order id seen before returns that order unchanged."""
        account = self.account(account_id)
        order_id = order_id_for(account_id, client_order_id, command_id)
        if order_id in account.order_ids:
            return self._venue_of[order_id].orders[order_id]
        market = self.market(symbol)
        request = validate_order(
            market,
            order_id=order_id,
            account_id=account_id,
            side=side,
            type=type,
            price=price,
            quantity=quantity,
            quote_quantity=quote_quantity,
            time_in_force=time_in_force,
            post_only=post_only,
            stp=stp,
            client_order_id=client_order_id,
        )
        venue = self.venues[symbol]
        self._venue_of[order_id] = venue
        return self._submit(account, venue, request, at)

    def cancel(self, account_id: UUID, order_id: UUID, at: datetime) -> Order:
        venue = self._owning_venue(account_id, order_id)
        order = venue.cancel(account_id, order_id, "cancelled_by_user", at)
        self._settle(venue)
        return order

    def cancel_all(self, account_id: UUID, symbol: str, at: datetime) -> list[Order]:
        self.account(account_id)
        venue = self.venues[self.market(symbol).symbol]
        orders = venue.cancel_all(account_id, "cancelled_by_user", at)
        self._settle(venue)
        return orders

    def amend(
        self,
        account_id: UUID,
        order_id: UUID,
        at: datetime,
        *,
        price: Decimal | None,
        quantity: Decimal,
    ) -> Order:
        """Change an open order; more funds are locked first if it needs them."""
        venue = self._owning_venue(account_id, order_id)
        venue.check_amend(account_id, order_id, price, quantity)
        account = self.account(account_id)
        prelock_for_amend(account, venue.market, order_id, price, quantity, at)
        self._collect(account)
        order = venue.amend(account_id, order_id, price, quantity, at)
        self._settle(venue)
        return order

    # -- internals ---------------------------------------------------------

    def _submit(self, account: Account, venue: Venue, request: OrderRequest, at: datetime) -> Order:
        funds = lock_for_order(account, venue.market, request, at)
        self._collect(account)
        if not funds:
            order = venue.reject(request, InsufficientFunds.code, at)
            self._pending.extend(venue.collect_events())
            return order
        order = venue.submit(request, funds, at)
        self._settle(venue)
        return order

    def _owning_venue(self, account_id: UUID, order_id: UUID) -> Venue:
        self.account(account_id)
        venue = self._venue_of.get(order_id)
        if venue is None:
            msg = f"no order {order_id}"
            raise UnknownOrder(msg)
        return venue

    def _settle(self, venue: Venue) -> None:
        """Record the venue's events, each followed by the account's answer to it."""
        for event in venue.collect_events():
            self._pending.append(event)
            if isinstance(event, SETTLING_EVENTS):
                order = venue.orders[event.originator_id]
                account = self.accounts[order.account_id]
                settle_order_event(account, venue.market, event)
                self._collect(account)

    def _collect(self, account: Account) -> None:
        self._pending.extend(account.collect_events())
