"""How the read side writes amounts and times, in MySQL rows, Redis and JSON alike.

Amounts are strings at a fixed scale and never rounded; times are UTC, stored
naive in DATETIME columns and written ISO 8601 with ``Z``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Context, Decimal

_WIDE = Context(prec=80)
"""Quantizing DECIMAL(40, 18) values needs more than the default 28 digits."""

_QUANTA = tuple(Decimal(1).scaleb(-scale) for scale in range(19))


def amount_text(value: Decimal, scale: int | None) -> str:
    """``value`` written with exactly ``scale`` decimals (``"1.50000000"`` at scale 8).

    A value that does not fit the scale (or an asset we do not list) is written
    in full rather than rounded: the read side never rounds money.
    """
    if scale is not None:
        exact = value.quantize(_QUANTA[scale], context=_WIDE)
        if exact == value:
            return f"{exact:f}"
    return f"{value.normalize(_WIDE):f}"


def naive_utc(at: datetime) -> datetime:
    """``at`` in UTC without tzinfo, as DATETIME columns hold it (naive means UTC)."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at


def moment_text(at: datetime) -> str:
    """``2026-01-01T12:00:00.250000Z``: microseconds always, as events are stamped."""
    at = naive_utc(at)
    return f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond:06d}Z"
