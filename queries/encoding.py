"""How read models become JSON: orjson, decimals as strings at a fixed scale,
times as ISO 8601 UTC with ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Any

import orjson
from starlette.responses import Response

_WIDE = Context(prec=80)
"""Quantizing DECIMAL(40, 18) values needs more than the default 28 digits."""

_QUANTA = tuple(Decimal(1).scaleb(-scale) for scale in range(19))


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def amount(value: Decimal, scale: int | None) -> str:
    """``value`` written with exactly ``scale`` decimals (``"1.50000000"`` at scale 8).

    A value that does not fit the scale (or an asset we do not list) is written
    in full rather than rounded: the read side never rounds money.
    """
    if scale is not None:
        exact = value.quantize(_QUANTA[scale], context=_WIDE)
        if exact == value:
            return f"{exact:f}"
    return f"{value.normalize(_WIDE):f}"


def optional_amount(value: Decimal | None, scale: int | None) -> str | None:
    return None if value is None else amount(value, scale)


def moment(value: datetime) -> str:
    """``2026-01-01T12:00:00.250000Z``: microseconds always, as events are stamped."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond:06d}Z"


def minute(value: datetime) -> str:
    """``2026-01-01T12:00:00Z``: for candle open times (whole minutes)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}Z"


def decimal_text(value: Decimal) -> str:
    """A market parameter as configured (``"0.01"``), never in exponent form."""
    return f"{value:f}"
