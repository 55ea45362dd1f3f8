"""Deterministic command workloads, and how to apply one command to the in-process Exchange.

Shared by the processor tests, the kill -9 test and the pipeline benchmark.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.aggregates import account_id_for, order_id_for
from domain.errors import DomainError
from domain.exchange import Exchange
from domain.markets import FeeRate, Market
from domain.matching import SelfTradePrevention, Side, TimeInForce
from domain.money import Asset
from domain.orders import OrderType
from infra import messages
from infra.messages import Command

T0 = datetime(2026, 1, 1, tzinfo=UTC)

SOL_USDT = Market(
    base=Asset("SOL", 9),
    quote=Asset("USDT", 6),
    tick_size=Decimal("0.001"),
    lot_size=Decimal("0.01"),
    min_quantity=Decimal("0.01"),
    max_quantity=Decimal("100000"),
    min_notional=Decimal("1"),
    maker_fee=FeeRate(Decimal("0.0005")),
    taker_fee=FeeRate(Decimal("0.001")),
)
"""A market beyond the demo ones, with an asset of its own, for the listing tests."""

MARKETS = {
    # symbol: (mid price, price step, lot, max lots per order)
    "BTC-USDT": (Decimal(50_000), Decimal(5), Decimal("0.0001"), 200),
    "ETH-USDT": (Decimal(3_000), Decimal("0.5"), Decimal("0.001"), 200),
    "ETH-BTC": (Decimal("0.06"), Decimal("0.00001"), Decimal("0.001"), 200),
}
FUNDING = {"USDT": "5000000", "BTC": "100", "ETH": "1500"}


class Workload:
    """Generates commands the way a busy exchange would see them, reproducibly."""

    def __init__(self, seed: int, owners: int = 40) -> None:
        self.rng = random.Random(seed)
        self.owners = [f"trader-{i}" for i in range(owners)]
        self.count = 0
        self.orders: dict[str, list[tuple[UUID, str, bool]]] = {o: [] for o in self.owners}

    def command(self, kind: str, who: str, **fields: Any) -> Command:
        self.count += 1
        return Command(
            kind=kind,
            command_id=f"c{self.count}",
            at=T0 + timedelta(milliseconds=self.count),
            account_id=account_id_for(who),
            fields=fields,
        )

    def opening(self) -> list[Command]:
        """Every owner opens an account and is funded in every asset."""
        out = [self.command(messages.OPEN_ACCOUNT, o, owner=o) for o in self.owners]
        for owner in self.owners:
            for asset, amount in FUNDING.items():
                out.append(
                    self.command(
                        messages.DEPOSIT,
                        owner,
                        asset=asset,
                        amount=amount,
                        tx_id=f"{owner}-{asset}",
                    )
                )
        return out

    def trading(self, n: int, amend_post_only: bool = True) -> list[Command]:
        return [self.next_trade(amend_post_only) for _ in range(n)]

    def next_trade(self, amend_post_only: bool = True) -> Command:
        rng = self.rng
        owner = rng.choice(self.owners)
        symbol = rng.choice(list(MARKETS))
        mid, step, lot, max_lots = MARKETS[symbol]
        side = rng.choice(["buy", "sell"])
        roll = rng.random()
        mine = self.orders[owner]
        if roll < 0.12 and mine:
            order_id, _, _ = rng.choice(mine)
            return self.command(messages.CANCEL_ORDER, owner, order_id=str(order_id))
        if roll < 0.14:
            return self.command(messages.CANCEL_ALL, owner, symbol=symbol)
        if roll < 0.26 and mine:
            order_id, order_symbol, post_only = rng.choice(mine)
            if amend_post_only or not post_only:
                o_mid, o_step, o_lot, o_max = MARKETS[order_symbol]
                price = o_mid + o_step * rng.randint(-8, 8) if rng.random() < 0.7 else None
                return self.command(
                    messages.AMEND_ORDER,
                    owner,
                    order_id=str(order_id),
                    price=None if price is None else str(price),
                    quantity=str(o_lot * rng.randint(10, o_max)),
                )
        if roll < 0.30:
            asset = rng.choice(list(FUNDING))
            return self.command(
                messages.DEPOSIT, owner, asset=asset, amount="1000", tx_id=f"top-{self.count}"
            )
        quantity = lot * rng.randint(10, max_lots)
        fields: dict[str, Any] = {"symbol": symbol, "side": side, "stp": _stp(rng)}
        if roll < 0.38:
            fields["type"] = "market"
            if side == "buy" and rng.random() < 0.5:
                fields["quote_quantity"] = str((mid * quantity).quantize(Decimal("0.01")))
            else:
                fields["quantity"] = str(quantity)
            fields["time_in_force"] = (
                "FOK" if rng.random() < 0.2 and "quantity" in fields else "IOC"
            )
        else:
            offset = rng.randint(-6, 12)
            price = mid - step * offset if side == "buy" else mid + step * offset
            tif = rng.choices(["GTC", "IOC", "FOK"], [8, 2, 1])[0]
            fields.update(type="limit", price=str(price), quantity=str(quantity), time_in_force=tif)
            fields["post_only"] = tif == "GTC" and rng.random() < 0.15
            if rng.random() < 0.1:
                fields["client_order_id"] = f"{owner}-{rng.randint(0, 30)}"
        command = self.command(messages.PLACE_ORDER, owner, **fields)
        order_id = order_id_for(
            command.account_id, fields.get("client_order_id"), command.command_id
        )
        if fields["type"] == "limit" and fields["time_in_force"] == "GTC":
            mine.append((order_id, symbol, bool(fields["post_only"])))
            if len(mine) > 30:
                mine.pop(0)
        return command


def _stp(rng: random.Random) -> str:
    return rng.choice([mode.value for mode in SelfTradePrevention])


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def apply_to_exchange(exchange: Exchange, command: Command) -> None:
    """Apply a command to the in-process reference; refusals change nothing there."""
    f, at, account_id = command.fields, command.at, command.account_id
    try:
        if command.kind == messages.OPEN_ACCOUNT:
            exchange.open_account(f["owner"], at)
        elif command.kind == messages.DEPOSIT:
            exchange.deposit(account_id, f["asset"], Decimal(f["amount"]), f["tx_id"], at)
        elif command.kind == messages.WITHDRAW:
            withdrawal_id = f.get("withdrawal_id") or command.command_id
            exchange.withdraw(account_id, f["asset"], Decimal(f["amount"]), withdrawal_id, at)
        elif command.kind == messages.PLACE_ORDER:
            exchange.place(
                account_id,
                command.command_id,
                at,
                symbol=f["symbol"],
                side=Side(f["side"]),
                type=OrderType(f["type"]),
                price=_decimal(f.get("price")),
                quantity=_decimal(f.get("quantity")),
                quote_quantity=_decimal(f.get("quote_quantity")),
                time_in_force=TimeInForce(f["time_in_force"]) if f.get("time_in_force") else None,
                post_only=bool(f.get("post_only", False)),
                stp=SelfTradePrevention(f.get("stp") or SelfTradePrevention.CANCEL_TAKER),
                client_order_id=f.get("client_order_id"),
            )
        elif command.kind == messages.CANCEL_ORDER:
            exchange.cancel(account_id, UUID(f["order_id"]), at)
        elif command.kind == messages.CANCEL_ALL:
            exchange.cancel_all(account_id, f["symbol"], at)
        elif command.kind == messages.AMEND_ORDER:
            exchange.amend(
                account_id,
                UUID(f["order_id"]),
                at,
                price=_decimal(f.get("price")),
                quantity=Decimal(f["quantity"]),
            )
        else:
            msg = f"no reference for {command.kind}"
            raise AssertionError(msg)
    except DomainError:
        pass
