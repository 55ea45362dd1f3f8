"""How read models become JSON: orjson, decimals as strings at a fixed scale,
times as ISO 8601 UTC with ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from infra.formats import amount_text


def optional_amount(value: Decimal | None, scale: int | None) -> str | None:
    return None if value is None else amount_text(value, scale)


def minute(value: datetime) -> str:
    """``2026-01-01T12:00:00Z``: for candle open times (whole minutes)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}Z"


def decimal_text(value: Decimal) -> str:
    """A market parameter as configured (``"0.01"``), never in exponent form."""
    return f"{value:f}"
