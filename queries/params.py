"""Query parameters and page cursors, checked before anything is read.

Every list answers ``{"items": [...], "next_cursor": str | null}``, newest
first. A cursor is opaque to clients: base64url (unpadded) of the JSON of the
list's name and the sort key of the last row returned; the next page is the
rows strictly after it in the list's order. Anything that does not decode to
exactly that shape is a 400 ``bad_cursor``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.datastructures import QueryParams

from infra.http import bad_request

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_CURSOR_LENGTH = 512

Key = tuple[Any, ...]
"""A row's sort key: ints, strings and naive UTC datetimes."""


def integer(params: QueryParams, name: str, default: int, low: int, high: int, code: str) -> int:
    """A decimal integer in ``[low, high]``, or ``default`` when absent."""
    raw = params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not low <= int(raw) <= high:
        raise bad_request(code, f"{name} must be an integer from {low} to {high}, got {raw!r}")
    return int(raw)


def limit(params: QueryParams) -> int:
    return integer(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, "bad_limit")


def choice(params: QueryParams, name: str, allowed: tuple[str, ...], default: str | None) -> str:
    raw = params.get(name, default)
    if raw is None or raw not in allowed:
        listed = ", ".join(allowed)
        raise bad_request(f"bad_{name}", f"{name} must be one of {listed}, got {raw!r}")
    return raw


def time_param(params: QueryParams, name: str) -> datetime | None:
    """A time as ISO 8601 (``2026-01-01T00:00:00Z``; no offset means UTC) or as
    milliseconds since the epoch; a naive UTC datetime, as MySQL stores times."""
    raw = params.get(name)
    if raw is None:
        return None
    try:
        if raw.isascii() and raw.isdigit() and len(raw) <= 15:
            value = datetime.fromtimestamp(int(raw) / 1000, UTC)
        else:
            value = datetime.fromisoformat(raw)
            if value.tzinfo is not None:
                value = value.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        raise bad_request(
            "bad_parameter",
            f"{name} must be an ISO 8601 time or milliseconds since the epoch, got {raw!r}",
        ) from None
    return value.replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class CursorShape:
    """One list's cursor: its name and the types of its sort key."""

    name: str
    types: tuple[type, ...]

    def encode(self, key: Key) -> str:
        values = [v.isoformat() if isinstance(v, datetime) else v for v in key]
        raw = orjson.dumps([self.name, *values])
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, params: QueryParams) -> Key | None:
        """The ``cursor`` parameter's sort key; None on the first page."""
        raw = params.get("cursor")
        if raw is None or raw == "":
            return None
        try:
            return self._decode(raw)
        except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
            raise bad_request("bad_cursor", "cursor is not one this list gave out") from None

    def _decode(self, raw: str) -> Key:
        if len(raw) > MAX_CURSOR_LENGTH or not raw.isascii():
            raise ValueError(raw)
        padded = raw + "=" * (-len(raw) % 4)
        decoded = orjson.loads(base64.b64decode(padded, altchars=b"-_", validate=True))
        if not isinstance(decoded, list) or len(decoded) != len(self.types) + 1:
            raise ValueError(raw)
        if decoded[0] != self.name:
            raise ValueError(raw)
        key: list[Any] = []
        for kind, value in zip(self.types, decoded[1:], strict=True):
            if kind is datetime and isinstance(value, str):
                moment = datetime.fromisoformat(value)
                if moment.tzinfo is not None:
                    raise ValueError(raw)
                key.append(moment)
            elif (kind is int and type(value) is int and 0 <= value < 2**63) or (
                kind is str and isinstance(value, str) and len(value) <= 128
            ):
                key.append(value)
            else:
                raise ValueError(raw)
        return tuple(key)


TRADES = CursorShape("trades", (int,))
"""A market's trades by sequence number."""
CANDLES = CursorShape("candles", (datetime,))
"""A market's candles of one interval by open time."""
ORDERS = CursorShape("orders", (datetime, str))
"""An account's orders by (created_at, order_id)."""
FILLS = CursorShape("fills", (datetime, str, str))
"""An account's fills by (at, trade_id, role)."""
LEDGER = CursorShape("ledger", (datetime, int, str, int))
"""An account's ledger entries by (at, event_version, event_id, leg)."""
