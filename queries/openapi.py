"""The OpenAPI 3.1 document of the read API, as plain data.

``read_paths()`` is the query gateway's part; the command gateway adds its
own: ``document(read_paths(), write_paths(), components=...)`` merges path
objects and extra components into one document, served at ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from infra.read_models import CANDLE_INTERVALS

Json = dict[str, Any]

TITLE = "BitEx API"
VERSION = "1.0.0"

DESCRIPTION = """\
Reads, writes and live data of the BitEx exchange.

Amounts are decimal strings at fixed scales: prices at the market's
`price_scale` (its tick size), quantities at the base asset's scale, notionals
at the quote's, balances and fees at their asset's. Times are ISO 8601 in UTC
(`2026-01-01T12:00:00.000000Z`). Every error answers
`{"error": {"code": "...", "message": "..."}}` with a 4xx status.

Lists answer `{"items": [...], "next_cursor": "..." | null}`, newest first;
pass `next_cursor` back as `cursor` for the next page (`limit` 1-500, default 100).

Private endpoints take either a bearer session token (`Authorization: Bearer
<token>`) or a signed API key: headers `BX-KEY` (the key id), `BX-TS`
(milliseconds since the epoch, within 5 s of the server's clock) and `BX-SIGN`,
the hex HMAC-SHA256 with the key's secret of `BX-TS + METHOD + path_with_query +
body`. A signature is accepted once. Reads need the key's `read` permission.
"""


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _string(description: str, **extra: Any) -> Json:
    return {"type": "string", "description": description, **extra}


DECIMAL = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "examples": ["0.50000000"]}
NULLABLE_DECIMAL = {"type": ["string", "null"], "pattern": r"^-?\d+(\.\d+)?$"}
TIME = {"type": "string", "format": "date-time", "examples": ["2026-01-01T12:00:00.000000Z"]}
UUID = {"type": "string", "format": "uuid"}
LEVEL = {
    "type": "array",
    "description": "[price, quantity]",
    "prefixItems": [DECIMAL, DECIMAL],
    "minItems": 2,
    "maxItems": 2,
}


def _object(properties: Json, nullable: tuple[str, ...] = ()) -> Json:
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in nullable],
    }


def _page_of(item: str) -> Json:
    return _object(
        {
            "items": {"type": "array", "items": _ref(item)},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "pass as `cursor` for the next page; null on the last page",
            },
        }
    )


SCHEMAS: Json = {
    "Error": _object(
        {
            "error": _object(
                {
                    "code": _string("a stable machine-readable code", examples=["bad_limit"]),
                    "message": _string("what went wrong, for people"),
                }
            )
        }
    ),
    "Market": _object(
        {
            "symbol": _string("BASE-QUOTE", examples=["BTC-USDT"]),
            "base": {"type": "string"},
            "quote": {"type": "string"},
            "price_scale": {"type": "integer", "description": "decimals of prices (the tick's)"},
            "base_scale": {"type": "integer", "description": "decimals of the base asset"},
            "quote_scale": {"type": "integer", "description": "decimals of the quote asset"},
            "tick_size": DECIMAL,
            "lot_size": DECIMAL,
            "min_quantity": DECIMAL,
            "max_quantity": DECIMAL,
            "min_notional": DECIMAL,
            "maker_fee": DECIMAL,
            "taker_fee": DECIMAL,
        }
    ),
    "Book": _object(
        {
            "symbol": {"type": "string"},
            "sequence": {
                "type": "integer",
                "description": "the last book change included; WebSocket diffs continue from it",
            },
            "bids": {"type": "array", "items": LEVEL, "description": "best (highest) first"},
            "asks": {"type": "array", "items": LEVEL, "description": "best (lowest) first"},
        }
    ),
    "Trade": _object(
        {
            "trade_id": {"type": "string"},
            "symbol": {"type": "string"},
            "sequence": {"type": "integer", "description": "the market's trade sequence number"},
            "price": DECIMAL,
            "quantity": DECIMAL,
            "taker_side": {"type": "string", "enum": ["buy", "sell"]},
            "at": TIME,
        }
    ),
    "Ticker": _object(
        {
            "symbol": {"type": "string"},
            "open": NULLABLE_DECIMAL,
            "high": NULLABLE_DECIMAL,
            "low": NULLABLE_DECIMAL,
            "last": NULLABLE_DECIMAL,
            "volume": {**DECIMAL, "description": "base volume of the last 24 hours"},
            "quote_volume": {**DECIMAL, "description": "quote volume of the last 24 hours"},
            "trades": {"type": "integer"},
            "best_bid": NULLABLE_DECIMAL,
            "best_ask": NULLABLE_DECIMAL,
            "at": {"type": ["string", "null"], "format": "date-time"},
        },
        nullable=("open", "high", "low", "last", "best_bid", "best_ask", "at"),
    ),
    "Candle": _object(
        {
            "open_time": TIME,
            "open": DECIMAL,
            "high": DECIMAL,
            "low": DECIMAL,
            "close": DECIMAL,
            "volume": DECIMAL,
            "quote_volume": DECIMAL,
            "trades": {"type": "integer"},
        }
    ),
    "Balance": _object({"asset": {"type": "string"}, "available": DECIMAL, "locked": DECIMAL}),
    "Order": _object(
        {
            "order_id": UUID,
            "client_order_id": {"type": ["string", "null"]},
            "symbol": {"type": "string"},
            "side": {"type": "string", "enum": ["buy", "sell"]},
            "type": {"type": "string", "enum": ["limit", "market"]},
            "price": NULLABLE_DECIMAL,
            "quantity": NULLABLE_DECIMAL,
            "quote_quantity": NULLABLE_DECIMAL,
            "time_in_force": {"type": "string", "enum": ["GTC", "IOC", "FOK"]},
            "post_only": {"type": "boolean"},
            "self_trade_prevention": {"type": "string"},
            "status": {
                "type": "string",
                "enum": [
                    "accepted",
                    "open",
                    "partially_filled",
                    "filled",
                    "cancelled",
                    "expired",
                    "rejected",
                ],
            },
            "reason": {"type": ["string", "null"]},
            "filled_quantity": DECIMAL,
            "filled_notional": DECIMAL,
            "remaining": NULLABLE_DECIMAL,
            "created_at": TIME,
            "updated_at": TIME,
        },
        nullable=("client_order_id", "price", "quantity", "quote_quantity", "reason", "remaining"),
    ),
    "Fill": _object(
        {
            "trade_id": {"type": "string"},
            "order_id": UUID,
            "symbol": {"type": "string"},
            "side": {"type": "string", "enum": ["buy", "sell"]},
            "role": {"type": "string", "enum": ["maker", "taker"]},
            "price": DECIMAL,
            "quantity": DECIMAL,
            "spent_asset": {"type": "string"},
            "spent": DECIMAL,
            "received_asset": {"type": "string"},
            "received": DECIMAL,
            "fee_asset": {
                "type": "string",
                "description": "fees are charged in the asset received",
            },
            "fee": DECIMAL,
            "at": TIME,
        }
    ),
    "LedgerEntry": _object(
        {
            "event_id": UUID,
            "event_version": {"type": "integer"},
            "leg": {"type": "integer"},
            "asset": {"type": "string"},
            "amount": {**DECIMAL, "description": "positive in, negative out"},
            "bucket": {"type": "string", "description": "available, locked or empty"},
            "kind": {"type": "string", "description": "the event that moved the funds"},
            "reference": {"type": "string", "description": "the order, trade, tx or withdrawal"},
            "at": TIME,
        }
    ),
}
for _name in ("Market", "Trade", "Candle", "Balance", "Order", "Fill", "LedgerEntry"):
    SCHEMAS[f"{_name}Page"] = _page_of(_name)


def _error(description: str) -> Json:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


RESPONSES: Json = {
    "BadRequest": _error(
        "a parameter is invalid (bad_limit, bad_cursor, bad_depth, bad_interval, "
        "bad_status, bad_parameter, unknown_market)"
    ),
    "Unauthorized": {
        **_error(
            "no credentials, or bad ones (unauthorized, unknown_key, bad_signature, "
            "stale_timestamp, replayed_signature)"
        ),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "Forbidden": _error("the API key lacks the read permission (forbidden)"),
    "UnknownMarket": _error("no such market (unknown_market)"),
    "NotFound": _error("no such resource (not_found, order_not_found)"),
}

SECURITY_SCHEMES: Json = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "a session token from POST /v1/sessions",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "BX-KEY",
        "description": "the API key id; the request must also carry BX-TS and BX-SIGN",
    },
    "apiKeyTimestamp": {
        "type": "apiKey",
        "in": "header",
        "name": "BX-TS",
        "description": "milliseconds since the epoch, within 5000 ms of the server's clock",
    },
    "apiKeySignature": {
        "type": "apiKey",
        "in": "header",
        "name": "BX-SIGN",
        "description": "hex HMAC-SHA256(secret, BX-TS + METHOD + path_with_query + body)",
    },
}

PRIVATE: list[Json] = [{"bearer": []}, {"apiKey": [], "apiKeyTimestamp": [], "apiKeySignature": []}]


def _query(name: str, description: str, schema: Json, required: bool = False) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


SYMBOL = {
    "name": "symbol",
    "in": "path",
    "required": True,
    "description": "the market, BASE-QUOTE",
    "schema": {"type": "string", "examples": ["BTC-USDT"]},
}
LIMIT = _query(
    "limit", "items per page", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}
)
CURSOR = _query("cursor", "next_cursor of the previous page", {"type": "string"})
SYMBOL_FILTER = _query(
    "symbol", "only this market (400 unknown_market if unlisted)", {"type": "string"}
)


def _ok(schema: str, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _errors(*names: str) -> Json:
    codes = {
        "BadRequest": "400",
        "Unauthorized": "401",
        "Forbidden": "403",
        "UnknownMarket": "404",
        "NotFound": "404",
    }
    return {codes[name]: {"$ref": f"#/components/responses/{name}"} for name in names}


def _get(
    operation_id: str,
    summary: str,
    ok: Json,
    parameters: list[Json] | None = None,
    errors: tuple[str, ...] = (),
    private: bool = False,
    tag: str = "market data",
) -> Json:
    operation: Json = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "parameters": parameters or [],
        "responses": {"200": ok, **_errors(*errors)},
    }
    if private:
        operation["security"] = PRIVATE
        operation["responses"].update(_errors("Unauthorized", "Forbidden"))
    else:
        operation["security"] = []
    return {"get": operation}


def read_paths() -> Json:
    """The path items of every endpoint the query gateway serves."""
    account = "account"
    return {
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["meta"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "the OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/v1/markets": _get(
            "listMarkets", "The listed markets and their rules", _ok("MarketPage", "every market")
        ),
        "/v1/markets/{symbol}/book": _get(
            "getBook",
            "The order book's top levels (from the live snapshot)",
            _ok("Book", "the book; an empty book with sequence 0 before any order"),
            [
                SYMBOL,
                _query(
                    "depth",
                    "levels per side",
                    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                ),
            ],
            ("BadRequest", "UnknownMarket"),
        ),
        "/v1/markets/{symbol}/trades": _get(
            "listTrades",
            "The market's trades, newest first",
            _ok("TradePage", "a page of trades"),
            [SYMBOL, LIMIT, CURSOR],
            ("BadRequest", "UnknownMarket"),
        ),
        "/v1/markets/{symbol}/ticker": _get(
            "getTicker",
            "24-hour statistics and the best bid and ask",
            _ok("Ticker", "the ticker; nulls and zeros before any trade"),
            [SYMBOL],
            ("UnknownMarket",),
        ),
        "/v1/markets/{symbol}/candles": _get(
            "listCandles",
            "OHLCV candles, newest first",
            _ok("CandlePage", "a page of candles"),
            [
                SYMBOL,
                _query(
                    "interval",
                    "candle width",
                    {"type": "string", "enum": list(CANDLE_INTERVALS)},
                    True,
                ),
                _query(
                    "start",
                    "first open time included: ISO 8601 or ms since the epoch",
                    {"type": "string"},
                ),
                _query(
                    "end",
                    "open times before this only: ISO 8601 or ms since the epoch",
                    {"type": "string"},
                ),
                LIMIT,
                CURSOR,
            ],
            ("BadRequest", "UnknownMarket"),
        ),
        "/v1/balances": _get(
            "listBalances",
            "The caller's balances, every listed asset included",
            _ok("BalancePage", "one item per asset (no further pages)"),
            private=True,
            tag=account,
        ),
        "/v1/orders": _get(
            "listOrders",
            "The caller's orders, newest first",
            _ok("OrderPage", "a page of orders"),
            [
                SYMBOL_FILTER,
                _query(
                    "status",
                    "open (accepted, open, partially filled), closed (filled, cancelled, "
                    "expired, rejected) or all",
                    {"type": "string", "enum": ["open", "closed", "all"], "default": "all"},
                ),
                LIMIT,
                CURSOR,
            ],
            ("BadRequest",),
            private=True,
            tag=account,
        ),
        "/v1/orders/{order_id}": _get(
            "getOrder",
            "One of the caller's orders",
            _ok("Order", "the order"),
            [
                {
                    "name": "order_id",
                    "in": "path",
                    "required": True,
                    "schema": UUID,
                }
            ],
            ("NotFound",),
            private=True,
            tag=account,
        ),
        "/v1/fills": _get(
            "listFills",
            "The caller's fills, newest first",
            _ok("FillPage", "a page of fills"),
            [SYMBOL_FILTER, _query("order_id", "only this order's fills", UUID), LIMIT, CURSOR],
            ("BadRequest",),
            private=True,
            tag=account,
        ),
        "/v1/ledger": _get(
            "listLedger",
            "The caller's ledger entries (every balance change), newest first",
            _ok("LedgerEntryPage", "a page of ledger entries"),
            [_query("asset", "only this asset", {"type": "string"}), LIMIT, CURSOR],
            ("BadRequest",),
            private=True,
            tag=account,
        ),
        "/v1/ws": {
            "get": {
                "operationId": "websocket",
                "summary": "Live data over a WebSocket",
                "description": (
                    'Upgrade to a WebSocket. Send `{"op": "subscribe", "channels": '
                    '["book:BTC-USDT", "trades:BTC-USDT", "ticker:BTC-USDT"]}`; after `{"op": '
                    '"auth", "token": "..."}` (or `"key"`, `"ts"`, `"sign"` signing '
                    '`ts + "GET/v1/ws"`) also `orders` and `balances`. Messages arrive as '
                    '`{"channel": ..., "data": ...}`; a book subscription starts with `{"channel": '
                    '..., "type": "snapshot", "data": ...}`, then diffs whose `sequence` '
                    "continues the snapshot's; on a gap, subscribe again."
                ),
                "tags": ["live"],
                "security": [],
                "responses": {"101": {"description": "switching to the WebSocket protocol"}},
            }
        },
    }


def components() -> Json:
    return {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "securitySchemes": SECURITY_SCHEMES,
    }


def document(*path_sets: Json, extra_components: Json | None = None) -> Json:
    """The whole document from path objects (``read_paths()`` when none are given),
    merged in order, with the shared components and any ``extra_components``."""
    paths: Json = {}
    for path_set in path_sets or (read_paths(),):
        for path, item in path_set.items():
            paths.setdefault(path, {}).update(item)
    merged = components()
    for section, entries in (extra_components or {}).items():
        merged = {**merged, section: {**merged.get(section, {}), **entries}}
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": PRIVATE,
        "tags": [
            {"name": "market data", "description": "public market data"},
            {"name": "account", "description": "the caller's own data"},
            {"name": "live", "description": "the WebSocket"},
            {"name": "meta"},
        ],
        "paths": paths,
        "components": merged,
    }
