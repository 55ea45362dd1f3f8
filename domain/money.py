"""Exact money: ``Decimal`` at the edges, integer minor units inside.

An amount enters the domain only if it is exactly representable at its asset's
scale; nothing is ever rounded silently. Rounding happens in one place
(:func:`ceil_div`), always in the exchange's favour, and callers record it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from domain.errors import InvalidAmount

MAX_UNITS = 10**30
"""Upper bound on any amount in minor units: far above any real balance, and
it keeps every product of two amounts inside exact integer arithmetic."""


def parse_decimal(value: object, what: str) -> Decimal:
    """Turn API input (str, int or Decimal) into a finite Decimal, or refuse it."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        msg = f"{what} must be a decimal string, got {type(value).__name__}"
        raise InvalidAmount(msg)
    try:
        number = Decimal(value)
    except (InvalidOperation, ValueError):
        msg = f"{what} is not a decimal number: {value!r}"
        raise InvalidAmount(msg) from None
    if not number.is_finite():
        msg = f"{what} must be finite, got {value!r}"
        raise InvalidAmount(msg)
    return number


@dataclass(frozen=True, slots=True)
class Asset:
    """A currency with a fixed number of decimal places (its scale)."""

    code: str
    scale: int

    def __post_init__(self) -> None:
        if not (self.code.isalnum() and self.code.isupper() and 1 <= len(self.code) <= 12):
            msg = f"asset code must be 1-12 upper-case letters or digits, got {self.code!r}"
            raise ValueError(msg)
        if not 0 <= self.scale <= 18:
            msg = f"asset scale must be between 0 and 18, got {self.scale}"
            raise ValueError(msg)

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.scale)

    def to_units(self, amount: Decimal, what: str = "amount") -> int:
        """Exact minor units of ``amount``; refuses more decimals than the scale."""
        scaled = amount.scaleb(self.scale)
        units = int(scaled)
        if units != scaled:
            msg = f"{what} {amount} has more than {self.scale} decimals for {self.code}"
            raise InvalidAmount(msg)
        if abs(units) >= MAX_UNITS:
            msg = f"{what} {amount} is too large"
            raise InvalidAmount(msg)
        return units

    def to_decimal(self, units: int) -> Decimal:
        """The Decimal for ``units`` minor units, always written with the full scale."""
        return Decimal(units).scaleb(-self.scale)


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer division rounded up (towards the exchange for fees charged)."""
    return -(-numerator // denominator)


KNOWN_UNITS_LIMIT = 1 << 16
_known_units: dict[int, tuple[Decimal, int]] = {}
"""``units_of`` of the amounts seen lately, by the ``id`` of the very Decimal object (the
entry holds it, so the id cannot be reused): decoded events share their amounts, and a
replay converts millions of them, each twice (its account, its posting). By the Decimal
itself it would cost its hash, three times the conversion for a new one."""


def units_of(amount: Decimal) -> int:
    """Minor units of an amount written at its asset's full scale (as events are).

    The digits of the amount, read as an integer: ``str`` writes them plainly
    unless the number is very small or has a positive exponent, and ``format``
    with ``f`` always does (slower, so second). Kept for that same object only:
    equal amounts of other scales (1.0 and 1.00) have other units.
    """
    known = _known_units.get(id(amount))
    if known is not None and known[0] is amount:
        return known[1]
    text = str(amount)
    if "E" in text:
        text = format(amount, "f")
    units = int(text.replace(".", ""))
    if len(_known_units) >= KNOWN_UNITS_LIMIT:
        _known_units.clear()
    _known_units[id(amount)] = (amount, units)
    return units
