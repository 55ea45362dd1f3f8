"""The read API's part of the OpenAPI document (``infra.openapi`` joins the parts)."""

from __future__ import annotations

from infra.openapi import (
    DECIMAL,
    MARKET,
    NULLABLE_DECIMAL,
    PRIVATE,
    TIME,
    UUID,
    Json,
    document,
    error_response,
    object_schema,
    ref,
)
from infra.read_models import CANDLE_INTERVALS

LEVEL = {
    "type": "array",
    "description": "[price, quantity]",
    "prefixItems": [DECIMAL, DECIMAL],
    "minItems": 2,
    "maxItems": 2,
}


def _page_of(item: str) -> Json:
    return object_schema(
        {
            "items": {"type": "array", "items": ref(item)},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "pass as `cursor` for the next page; null on the last page",
            },
        }
    )


SCHEMAS: Json = {
    "Market": MARKET,
    "Book": object_schema(
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
    "Trade": object_schema(
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
    "Ticker": object_schema(
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
    "Candle": object_schema(
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
    "Balance": object_schema(
        {"asset": {"type": "string"}, "available": DECIMAL, "locked": DECIMAL}
    ),
    "Order": object_schema(
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
    "Fill": object_schema(
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
    "LedgerEntry": object_schema(
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


RESPONSES: Json = {
    "BadRequest": error_response(
        "a parameter is invalid (bad_limit, bad_cursor, bad_depth, bad_interval, "
        "bad_status, bad_parameter, unknown_market)"
    ),
    "Unauthorized": {
        **error_response(
            "no credentials, or bad ones (unauthorized, unknown_key, bad_signature, "
            "stale_timestamp, replayed_signature)"
        ),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "Forbidden": error_response("the API key lacks the read permission (forbidden)"),
    "UnknownMarket": error_response("no such market (unknown_market)"),
    "NotFound": error_response("no such resource (not_found, order_not_found)"),
}


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
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


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
    return {"schemas": SCHEMAS, "responses": RESPONSES}


def read_part() -> Json:
    return {"paths": read_paths(), "components": components()}


def read_document() -> Json:
    """The query gateway's document, when it is served alone."""
    return document(read_part())
