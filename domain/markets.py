"""Markets as data: symbols, tick and lot sizes, limits and fee rates.

Inside the matching engine prices are whole ticks and quantities whole lots;
a market converts at the edge and refuses anything off the grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from domain.errors import DomainError, InvalidOrder
from domain.money import Asset, ceil_div, parse_decimal

MAX_STEPS = 10**15
"""The most ticks in a price or lots in a quantity (far beyond any real order)."""


@dataclass(frozen=True, slots=True)
class FeeRate:
    """A fee as an exact fraction, charged rounded up to the asset's unit."""

    rate: Decimal

    def __post_init__(self) -> None:
        if not (self.rate.is_finite() and Decimal(0) <= self.rate < Decimal(1)):
            msg = f"a fee rate must be in [0, 1), got {self.rate}"
            raise ValueError(msg)

    def charge(self, units: int) -> tuple[int, int, int]:
        """Fee on ``units``: (fee units, rounding numerator, rounding denominator).

        The fee is rounded up; the rounding (fee minus the exact fee) is
        returned as a fraction so that callers can record it exactly.
        """
        numerator, denominator = self.rate.as_integer_ratio()
        exact = units * numerator
        fee = ceil_div(exact, denominator)
        return fee, fee * denominator - exact, denominator


@dataclass(frozen=True, slots=True)
class Market:
    """A trading pair and its rules. ``symbol`` is ``BASE-QUOTE``."""

    base: Asset
    quote: Asset
    tick_size: Decimal
    lot_size: Decimal
    min_quantity: Decimal
    max_quantity: Decimal
    min_notional: Decimal
    maker_fee: FeeRate
    taker_fee: FeeRate

    def __post_init__(self) -> None:
        try:
            self._check_rules()
        except DomainError as error:
            msg = f"market {self.symbol} is misconfigured: {error.message}"
            raise ValueError(msg) from None

    def _check_rules(self) -> None:
        for name in ("tick_size", "lot_size", "min_quantity", "max_quantity"):
            if getattr(self, name) <= 0:
                msg = f"{self.symbol}: {name} must be positive"
                raise ValueError(msg)
        self.quote.to_units(self.tick_size, "tick_size")
        self.base.to_units(self.lot_size, "lot_size")
        # One tick times one lot must be a whole number of quote units, so
        # that every notional, lock and settlement is exact in quote units.
        self.quote.to_units(self.tick_size * self.lot_size, "tick_size x lot_size")
        self.quantity_to_lots(self.min_quantity)
        self.quantity_to_lots(self.max_quantity)
        if self.min_quantity > self.max_quantity:
            msg = f"{self.symbol}: min_quantity exceeds max_quantity"
            raise ValueError(msg)
        if self.min_notional < 0:
            msg = f"{self.symbol}: min_notional must not be negative"
            raise ValueError(msg)
        self.quote.to_units(self.min_notional, "min_notional")

    @property
    def symbol(self) -> str:
        return f"{self.base.code}-{self.quote.code}"

    @property
    def price_scale(self) -> int:
        """Decimals of the tick size: prices are written on its grid (``"50000.00"``)."""
        exponent = self.tick_size.normalize().as_tuple().exponent
        assert isinstance(exponent, int)
        return max(-exponent, 0)

    @property
    def quote_units_per_tick_lot(self) -> int:
        """Quote units paid for one lot at a price of one tick."""
        return self.quote.to_units(self.tick_size * self.lot_size)

    @property
    def base_units_per_lot(self) -> int:
        return self.base.to_units(self.lot_size)

    @property
    def min_lots(self) -> int:
        return self.quantity_to_lots(self.min_quantity)

    @property
    def max_lots(self) -> int:
        return self.quantity_to_lots(self.max_quantity)

    @property
    def min_notional_units(self) -> int:
        return self.quote.to_units(self.min_notional)

    def price_to_ticks(self, price: Decimal) -> int:
        """Whole ticks for ``price``; a price off the tick grid is refused."""
        if price <= 0:
            msg = f"price must be positive, got {price}"
            raise InvalidOrder(msg, "invalid_price")
        if price >= self.tick_size * MAX_STEPS:  # before dividing: the quotient must fit
            msg = f"price {price} is too large"
            raise InvalidOrder(msg, "invalid_price")
        ticks, rest = divmod(price, self.tick_size)
        if rest:
            msg = f"price {price} is not a multiple of the tick size {self.tick_size}"
            raise InvalidOrder(msg, "invalid_price")
        return int(ticks)

    def quantity_to_lots(self, quantity: Decimal) -> int:
        """Whole lots for ``quantity``; a quantity off the lot grid is refused."""
        if quantity <= 0:
            msg = f"quantity must be positive, got {quantity}"
            raise InvalidOrder(msg, "invalid_quantity")
        if quantity >= self.lot_size * MAX_STEPS:
            msg = f"quantity {quantity} is too large"
            raise InvalidOrder(msg, "invalid_quantity")
        lots, rest = divmod(quantity, self.lot_size)
        if rest:
            msg = f"quantity {quantity} is not a multiple of the lot size {self.lot_size}"
            raise InvalidOrder(msg, "invalid_quantity")
        return int(lots)

    def ticks_to_price(self, ticks: int) -> Decimal:
        return self.quote.to_decimal(ticks * self.quote.to_units(self.tick_size))

    def lots_to_quantity(self, lots: int) -> Decimal:
        return self.base.to_decimal(lots * self.base_units_per_lot)

    def notional_units(self, ticks: int, lots: int) -> int:
        return ticks * lots * self.quote_units_per_tick_lot

    def resting_need(self, buying: bool, ticks: int, lots: int) -> int:
        """What a resting limit order must keep locked: quote for a buy, base for a sell."""
        return self.notional_units(ticks, lots) if buying else lots * self.base_units_per_lot


def assets_of(markets: Mapping[str, Market]) -> dict[str, Asset]:
    """Every asset the markets trade, by code."""
    found: dict[str, Asset] = {}
    for market in markets.values():
        found[market.base.code] = market.base
        found[market.quote.code] = market.quote
    return found


def list_markets(*markets: Market) -> dict[str, Market]:
    """Index markets by symbol, refusing two with the same symbol."""
    by_symbol: dict[str, Market] = {}
    for market in markets:
        if market.symbol in by_symbol:
            msg = f"market {market.symbol} is listed twice"
            raise ValueError(msg)
        by_symbol[market.symbol] = market
    return by_symbol


MARKET_FIELDS = (
    "base",
    "base_scale",
    "quote",
    "quote_scale",
    "tick_size",
    "lot_size",
    "min_quantity",
    "max_quantity",
    "min_notional",
    "maker_fee",
    "taker_fee",
)
"""What defines a market, flat: how a listing travels (commands, events, rows, JSON)."""

DECIMAL_FIELDS = MARKET_FIELDS[4:]
"""The fields of a market that are decimals (the rest: codes and scales)."""


def plain(value: Decimal) -> Decimal:
    """``value`` without trailing zeros and never in exponent form (``"1000"``, ``"0.01"``)."""
    reduced = value.normalize()
    exponent = reduced.as_tuple().exponent
    assert isinstance(exponent, int)
    return reduced.quantize(Decimal(1)) if exponent > 0 else reduced


def market_fields(market: Market) -> dict[str, str | int]:
    """A market as plain values: codes, scales, and decimals written without
    trailing zeros, so one market always gives the same bytes."""
    decimals = {
        "tick_size": market.tick_size,
        "lot_size": market.lot_size,
        "min_quantity": market.min_quantity,
        "max_quantity": market.max_quantity,
        "min_notional": market.min_notional,
        "maker_fee": market.maker_fee.rate,
        "taker_fee": market.taker_fee.rate,
    }
    return {
        "base": market.base.code,
        "base_scale": market.base.scale,
        "quote": market.quote.code,
        "quote_scale": market.quote.scale,
        **{name: format(plain(value), "f") for name, value in decimals.items()},
    }


def market_from_fields(fields: Mapping[str, object]) -> Market:
    """The market ``fields`` define (as ``market_fields`` writes them, or as an operator
    sends them: decimals as strings); ``ValueError`` names what is wrong."""
    missing = [name for name in MARKET_FIELDS if fields.get(name) is None]
    if missing:
        msg = f"a market needs {', '.join(missing)}"
        raise ValueError(msg)
    scales = {}
    for name in ("base_scale", "quote_scale"):
        value = fields[name]
        if isinstance(value, bool) or not isinstance(value, int):
            msg = f"{name} must be an integer, got {value!r}"
            raise ValueError(msg)
        scales[name] = value
    codes = {}
    for name in ("base", "quote"):
        value = fields[name]
        if not isinstance(value, str):
            msg = f"{name} must be an asset code, got {value!r}"
            raise ValueError(msg)
        codes[name] = value
    try:
        amounts = {name: plain(parse_decimal(fields[name], name)) for name in DECIMAL_FIELDS}
    except DomainError as error:
        raise ValueError(error.message) from None
    base = Asset(codes["base"], scales["base_scale"])
    quote = Asset(codes["quote"], scales["quote_scale"])
    if base.code == quote.code:
        msg = f"a market trades two assets, not {base.code} against itself"
        raise ValueError(msg)
    return Market(
        base=base,
        quote=quote,
        tick_size=amounts["tick_size"],
        lot_size=amounts["lot_size"],
        min_quantity=amounts["min_quantity"],
        max_quantity=amounts["max_quantity"],
        min_notional=amounts["min_notional"],
        maker_fee=FeeRate(amounts["maker_fee"]),
        taker_fee=FeeRate(amounts["taker_fee"]),
    )


def asset_conflicts(market: Market, assets: Mapping[str, Asset]) -> str | None:
    """Why ``market`` cannot join markets trading ``assets`` (an asset with another
    scale: balances are kept in minor units), or None."""
    for asset in (market.base, market.quote):
        known = assets.get(asset.code)
        if known is not None and known.scale != asset.scale:
            return f"{asset.code} is listed with {known.scale} decimals, not {asset.scale}"
    return None


def demo_markets() -> dict[str, Market]:
    """The markets ``bitex run`` lists on a fresh local exchange (and the markets unit
    tests and benchmarks hold in hand); no production role reads them."""
    btc, eth, usdt = Asset("BTC", 8), Asset("ETH", 8), Asset("USDT", 6)
    maker, taker = FeeRate(Decimal("0.001")), FeeRate(Decimal("0.002"))
    return list_markets(
        Market(
            base=btc,
            quote=usdt,
            tick_size=Decimal("0.01"),
            lot_size=Decimal("0.0001"),
            min_quantity=Decimal("0.0001"),
            max_quantity=Decimal("1000"),
            min_notional=Decimal("1"),
            maker_fee=maker,
            taker_fee=taker,
        ),
        Market(
            base=eth,
            quote=usdt,
            tick_size=Decimal("0.01"),
            lot_size=Decimal("0.001"),
            min_quantity=Decimal("0.001"),
            max_quantity=Decimal("10000"),
            min_notional=Decimal("1"),
            maker_fee=maker,
            taker_fee=taker,
        ),
        Market(
            base=eth,
            quote=btc,
            tick_size=Decimal("0.00001"),
            lot_size=Decimal("0.001"),
            min_quantity=Decimal("0.001"),
            max_quantity=Decimal("10000"),
            min_notional=Decimal("0.0001"),
            maker_fee=maker,
            taker_fee=taker,
        ),
    )
