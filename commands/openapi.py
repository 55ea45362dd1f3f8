"""The write API's part of the OpenAPI document (``infra.openapi`` joins the parts)."""

from __future__ import annotations

from typing import Any

from domain.markets import MARKET_FIELDS
from infra.openapi import (
    DECIMAL,
    MARKET,
    NULLABLE_DECIMAL,
    PRIVATE,
    UUID,
    Json,
    document,
    error_response,
    object_schema,
    ref,
    string,
)

SESSION_ONLY: list[Json] = [{"bearer": []}]


def _optional(properties: Json, required: tuple[str, ...]) -> Json:
    return {"type": "object", "properties": properties, "required": list(required)}


CREDENTIALS = _optional(
    {
        "email": string("an e-mail address (case does not matter)", examples=["ada@example.com"]),
        "password": string("8 to 256 characters", minLength=8, maxLength=256),
    },
    ("email", "password"),
)

ORDER_STATUS = {
    "type": "string",
    "enum": [
        "accepted",
        "rejected",
        "open",
        "partially_filled",
        "filled",
        "cancelled",
        "expired",
    ],
}

SCHEMAS: Json = {
    "Credentials": CREDENTIALS,
    "User": object_schema(
        {"user_id": UUID, "email": {"type": "string"}, "account_id": UUID, "role": string("user")}
    ),
    "Session": object_schema(
        {
            "token": string("the bearer token: send it as `Authorization: Bearer <token>`"),
            "token_type": string("always bearer"),
            "expires_in": {"type": "integer", "description": "seconds"},
            "user_id": UUID,
            "account_id": UUID,
            "role": string("user or operator"),
        }
    ),
    "NewApiKey": _optional(
        {
            "permissions": {
                "type": "array",
                "items": {"type": "string", "enum": ["read", "trade", "withdraw"]},
                "minItems": 1,
            },
            "label": string("a name for the key", maxLength=100),
        },
        ("permissions",),
    ),
    "ApiKey": object_schema(
        {
            "key_id": string("BX-KEY"),
            "secret": string("shown once: sign requests with it; it is not stored"),
            "permissions": {"type": "array", "items": {"type": "string"}},
            "label": {"type": "string"},
        }
    ),
    "NewOrder": _optional(
        {
            "symbol": string("the market", examples=["BTC-USDT"]),
            "side": {"type": "string", "enum": ["buy", "sell"]},
            "type": {"type": "string", "enum": ["limit", "market"]},
            "price": {**DECIMAL, "description": "limit orders: a multiple of the tick size"},
            "quantity": {**DECIMAL, "description": "base quantity, a multiple of the lot size"},
            "quote_quantity": {**DECIMAL, "description": "market buys: spend this much quote"},
            "time_in_force": {
                "type": "string",
                "enum": ["GTC", "IOC", "FOK"],
                "description": "limit: GTC (default), IOC, FOK; market: IOC (default) or FOK",
            },
            "post_only": {"type": "boolean", "default": False},
            "client_order_id": string(
                "your id: resubmitting it returns the original order", maxLength=64
            ),
            "self_trade_prevention": {
                "type": "string",
                "enum": ["cancel_taker", "cancel_maker", "cancel_both"],
                "default": "cancel_taker",
            },
            "response_type": {
                "type": "string",
                "enum": ["full", "result", "ack"],
                "default": "full",
                "description": "full: the outcome once reads reflect it; result: the outcome "
                "as soon as it comes; ack: 202 once the order is on the log",
            },
        },
        ("symbol", "side", "type"),
    ),
    "OrderFill": object_schema(
        {
            "trade_id": {"type": "string"},
            "price": DECIMAL,
            "quantity": DECIMAL,
            "maker_order_id": UUID,
        }
    ),
    "OrderResult": object_schema(
        {
            "order_id": UUID,
            "client_order_id": {"type": ["string", "null"]},
            "symbol": {"type": "string"},
            "status": ORDER_STATUS,
            "reason": {"type": ["string", "null"]},
            "price": NULLABLE_DECIMAL,
            "remaining": NULLABLE_DECIMAL,
            "filled_quantity": DECIMAL,
            "filled_notional": DECIMAL,
            "fills": {"type": "array", "items": ref("OrderFill")},
        },
        nullable=("client_order_id", "reason", "price", "remaining", "fills"),
    ),
    "Pending": object_schema(
        {"status": string("pending: on the log, outcome not known yet")},
    ),
    "Amend": _optional({"price": DECIMAL, "quantity": DECIMAL}, ("quantity",)),
    "Deposit": _optional(
        {
            "account_id": UUID,
            "email": string("instead of account_id: the user's address"),
            "asset": {"type": "string"},
            "amount": DECIMAL,
            "tx_id": string("the external transaction id: a deposit is credited once"),
        },
        ("asset", "amount", "tx_id"),
    ),
    "NewMarket": _optional(
        {
            "base": string("the base asset's code (1-12 upper-case letters or digits)"),
            "base_scale": {"type": "integer", "minimum": 0, "maximum": 18},
            "quote": string("the quote asset's code"),
            "quote_scale": {"type": "integer", "minimum": 0, "maximum": 18},
            "tick_size": DECIMAL,
            "lot_size": DECIMAL,
            "min_quantity": DECIMAL,
            "max_quantity": DECIMAL,
            "min_notional": DECIMAL,
            "maker_fee": string('a rate in [0, 1), e.g. "0.001"'),
            "taker_fee": string("a rate in [0, 1)"),
        },
        MARKET_FIELDS,
    ),
    "ListedMarket": MARKET,
    "Withdrawal": _optional(
        {
            "asset": {"type": "string"},
            "amount": DECIMAL,
            "withdrawal_id": string("your id: a withdrawal is paid once"),
        },
        ("asset", "amount"),
    ),
    "Done": {"type": "object", "description": "what was done", "additionalProperties": True},
}

RESPONSES: Json = {
    "Invalid": error_response(
        "bad input, changing nothing (invalid_json, unknown_field, missing_field, "
        "invalid_type, invalid_value, invalid_amount, invalid_order, unknown_market, "
        "unknown_asset, insufficient_funds, invalid_market, ...)"
    ),
    "Unauthenticated": error_response(
        "no credentials, or bad ones (unauthorized, invalid_credentials, unknown_key, "
        "bad_signature, stale_timestamp, replayed_signature)"
    ),
    "Refused": error_response("not allowed (forbidden, session_required)"),
    "Missing": error_response("no such thing of yours (order_not_found, api_key_not_found)"),
    "Conflict": error_response(
        "the state does not allow it (email_taken, order_not_open, market_exists, "
        "asset_scale_conflict, ...)"
    ),
    "TooLarge": error_response("the body is over 16 KiB (body_too_large)"),
    "RateLimited": {
        **error_response("too many requests (rate_limited)"),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}


def _json(schema: str) -> Json:
    return {"content": {"application/json": {"schema": ref(schema)}}}


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    ok: dict[str, tuple[str, str]],
    *,
    body: str | None = None,
    security: list[Json] | None = None,
    errors: tuple[str, ...] = ("Invalid", "Unauthenticated", "Refused", "RateLimited"),
    parameters: list[Json] | None = None,
) -> Json:
    codes = {
        "Invalid": "400",
        "Unauthenticated": "401",
        "Refused": "403",
        "Missing": "404",
        "Conflict": "409",
        "TooLarge": "413",
        "RateLimited": "429",
    }
    responses: dict[str, Any] = {
        status: {"description": description, **(_json(schema) if schema else {})}
        for status, (schema, description) in ok.items()
    }
    for name in (*errors, "TooLarge"):
        responses[codes[name]] = {"$ref": f"#/components/responses/{name}"}
    operation: Json = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": PRIVATE if security is None else security,
        "parameters": parameters or [],
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    return operation


def _path(name: str, description: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


PENDING = ("Pending", "the command is on the log; its outcome came too late to wait for")


def write_paths() -> Json:
    order_id = _path("order_id", "the order's id")
    return {
        "/v1/users": {
            "post": _operation(
                "register",
                "Register a user (and open their account)",
                "users",
                {"201": ("User", "registered"), "202": PENDING},
                body="Credentials",
                security=[],
                errors=("Invalid", "Conflict", "RateLimited"),
            )
        },
        "/v1/sessions": {
            "post": _operation(
                "login",
                "Log in: a bearer session token",
                "users",
                {"201": ("Session", "a new session")},
                body="Credentials",
                security=[],
                errors=("Invalid", "Unauthenticated", "RateLimited"),
            ),
            "delete": _operation(
                "logout",
                "End this session",
                "users",
                {"204": ("", "the token no longer works")},
                security=SESSION_ONLY,
                errors=("Unauthenticated", "Refused", "RateLimited"),
            ),
        },
        "/v1/api-keys": {
            "post": _operation(
                "createApiKey",
                "Create an API key (its secret is shown once)",
                "users",
                {"201": ("ApiKey", "the key and its secret")},
                body="NewApiKey",
                security=SESSION_ONLY,
            )
        },
        "/v1/api-keys/{key_id}": {
            "delete": _operation(
                "revokeApiKey",
                "Revoke an API key",
                "users",
                {"200": ("Done", "revoked")},
                security=SESSION_ONLY,
                errors=("Unauthenticated", "Refused", "Missing", "RateLimited"),
                parameters=[_path("key_id", "the key's id (BX-KEY)")],
            )
        },
        "/v1/orders": {
            "post": _operation(
                "placeOrder",
                "Place an order (needs the trade permission)",
                "trading",
                {
                    "201": ("OrderResult", "the order as the book left it, with its fills"),
                    "202": PENDING,
                },
                body="NewOrder",
            ),
            "delete": _operation(
                "cancelAll",
                "Cancel all your open orders in a market",
                "trading",
                {"200": ("Done", "the ids cancelled"), "202": PENDING},
                parameters=[
                    {
                        "name": "symbol",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            ),
        },
        "/v1/orders/{order_id}": {
            "delete": _operation(
                "cancelOrder",
                "Cancel an order",
                "trading",
                {"200": ("OrderResult", "cancelled"), "202": PENDING},
                errors=("Unauthenticated", "Refused", "Missing", "Conflict", "RateLimited"),
                parameters=[order_id],
            ),
            "patch": _operation(
                "amendOrder",
                "Amend an order's price or quantity",
                "trading",
                {"200": ("OrderResult", "amended"), "202": PENDING},
                body="Amend",
                errors=(
                    "Invalid",
                    "Unauthenticated",
                    "Refused",
                    "Missing",
                    "Conflict",
                    "RateLimited",
                ),
                parameters=[order_id],
            ),
        },
        "/v1/admin/deposits": {
            "post": _operation(
                "deposit",
                "Credit a deposit (operators only; once per tx_id)",
                "funds",
                {
                    "201": ("Done", "credited"),
                    "200": ("Done", "this tx_id was credited before"),
                    "202": PENDING,
                },
                body="Deposit",
                errors=("Invalid", "Unauthenticated", "Refused", "Missing", "RateLimited"),
            )
        },
        "/v1/admin/markets": {
            "post": _operation(
                "listMarket",
                "List a market (operators only): its asset pair and its rules",
                "markets",
                {
                    "201": ("ListedMarket", "listed"),
                    "200": ("ListedMarket", "this market was listed before, with these rules"),
                    "202": PENDING,
                },
                body="NewMarket",
                errors=("Invalid", "Unauthenticated", "Refused", "Conflict", "RateLimited"),
            )
        },
        "/v1/withdrawals": {
            "post": _operation(
                "withdraw",
                "Withdraw (needs the withdraw permission)",
                "funds",
                {
                    "201": ("Done", "debited"),
                    "200": ("Done", "this withdrawal_id was paid before"),
                    "202": PENDING,
                },
                body="Withdrawal",
            )
        },
    }


def write_part() -> Json:
    return {"paths": write_paths(), "components": {"schemas": SCHEMAS, "responses": RESPONSES}}


def write_document() -> Json:
    """The command gateway's document, when it is served alone."""
    return document(write_part())
