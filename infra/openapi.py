"""OpenAPI 3.1 building blocks shared by both gateways, and the document that joins them.

Each gateway describes its part, ``{"paths": ..., "components": ...}``
(``queries.openapi.read_part()``, ``commands.openapi.write_part()``);
``document(*parts)`` merges them into one document. Served alone, a gateway
documents its own part; on the one base URL, ``/openapi.json`` has both.
"""

from __future__ import annotations

from typing import Any

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
body`. A signature is accepted once. Reads need the key's `read` permission,
orders `trade`, withdrawals `withdraw`; creating API keys needs a session.
"""


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def string(description: str, **extra: Any) -> Json:
    return {"type": "string", "description": description, **extra}


DECIMAL = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "examples": ["0.50000000"]}
NULLABLE_DECIMAL = {"type": ["string", "null"], "pattern": r"^-?\d+(\.\d+)?$"}
TIME = {"type": "string", "format": "date-time", "examples": ["2026-01-01T12:00:00.000000Z"]}
UUID = {"type": "string", "format": "uuid"}


def object_schema(properties: Json, nullable: tuple[str, ...] = ()) -> Json:
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in nullable],
    }


MARKET = object_schema(
    {
        "symbol": string("BASE-QUOTE", examples=["BTC-USDT"]),
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
)
"""A market and its rules as ``infra.market_listing.market_json`` writes them (both
gateways answer with it)."""

ERROR = object_schema(
    {
        "error": object_schema(
            {
                "code": string("a stable machine-readable code", examples=["bad_limit"]),
                "message": string("what went wrong, for people"),
            }
        )
    }
)


def error_response(description: str) -> Json:
    return {
        "description": description,
        "content": {"application/json": {"schema": ref("Error")}},
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


def _probe(
    operation_id: str,
    summary: str,
    statuses: dict[str, str],
    media: tuple[str, Json] = ("application/json", {"type": "object"}),
) -> Json:
    media_type, schema = media
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["meta"],
            "security": [],
            "responses": {
                status: {"description": description, "content": {media_type: {"schema": schema}}}
                for status, description in statuses.items()
            },
        }
    }


HEALTH_PATHS: Json = {
    "/healthz": _probe("healthz", "Liveness: the process answers", {"200": "alive"}),
    "/readyz": _probe(
        "readyz",
        "Readiness: every dependency answers (each named in `checks`)",
        {"200": "ready", "503": "a dependency does not answer"},
    ),
    "/metrics": _probe(
        "metrics",
        "Prometheus metrics: requests by route and status, their latency, orders",
        {"200": "the text exposition format"},
        ("text/plain", {"type": "string"}),
    ),
}
"""Every gateway serves these (``infra.health``, ``infra.metrics``)."""


def document(*parts: Json) -> Json:
    """One document from the gateways' parts: paths and components merged in order."""
    paths: Json = {path: dict(item) for path, item in HEALTH_PATHS.items()}
    merged: Json = {"schemas": {"Error": ERROR}, "securitySchemes": SECURITY_SCHEMES}
    for part in parts:
        for path, item in part["paths"].items():
            paths.setdefault(path, {}).update(item)
        for section, entries in part.get("components", {}).items():
            merged[section] = {**merged.get(section, {}), **entries}
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": PRIVATE,
        "tags": [
            {"name": "market data", "description": "public market data"},
            {"name": "account", "description": "the caller's own data"},
            {"name": "users", "description": "registration, sessions and API keys"},
            {"name": "trading", "description": "placing, cancelling and amending orders"},
            {"name": "funds", "description": "deposits and withdrawals"},
            {"name": "markets", "description": "listing markets (operators)"},
            {"name": "live", "description": "the WebSocket"},
            {"name": "meta"},
        ],
        "paths": paths,
        "components": merged,
    }
