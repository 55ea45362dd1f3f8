"""The query gateway over HTTP, in process, against the real MySQL and Redis.

Rows and keys are written as the projections and the command gateway write
them (tables of ``infra.read_models``, Redis keys of ``RedisKeys``); the app
only reads them.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from sqlalchemy import insert, update
from sqlalchemy.engine import Engine
from starlette.routing import Route, WebSocketRoute

from infra.auth import api_key_secret, sha256_hex, signed_headers
from infra.read_models import (
    api_keys,
    balances,
    candles,
    fills,
    ledger_entries,
    orders,
    trades,
    users,
)
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from queries.app import create_app
from tests.integration.conftest import seed_markets

pytestmark = pytest.mark.integration

MASTER = bytes(range(32))
T0 = datetime(2026, 3, 1, 12, 0, 0)


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
async def client(read_db: Settings, keys: RedisKeys) -> AsyncIterator[httpx.AsyncClient]:
    seed_markets(read_db)  # as the projection writes the demo markets' listings
    app = create_app(read_db, keys, master_key=MASTER)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bitex") as http,
    ):
        yield http


@dataclass
class User:
    user_id: str
    account_id: str
    token: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def make_user(
    db: Engine, redis: aioredis.Redis, keys: RedisKeys, name: str, ttl: int = 300
) -> User:
    """A user as the command gateway records one, with a live session."""
    user = User(str(uuid.uuid4()), str(uuid.uuid4()), f"token-{uuid.uuid4().hex}")
    with db.begin() as connection:
        connection.execute(
            insert(users).values(
                user_id=user.user_id,
                email=f"{name}-{user.user_id[:8]}@example.com",
                password_hash="argon2-not-used-here",
                role="user",
                account_id=user.account_id,
                created_at=T0,
            )
        )
    session = {"user_id": user.user_id, "account_id": user.account_id, "role": "user"}
    await redis.set(keys.session(sha256_hex(user.token)), orjson.dumps(session), ex=ttl)
    return user


def make_key(db: Engine, user: User, permissions: str = "read", revoked: bool = False) -> str:
    key_id = f"k-{uuid.uuid4().hex[:20]}"
    with db.begin() as connection:
        connection.execute(
            insert(api_keys).values(
                key_id=key_id,
                user_id=user.user_id,
                permissions=permissions,
                label="test",
                created_at=T0,
                revoked_at=T0 if revoked else None,
            )
        )
    return key_id


def signed(key_id: str, path: str, now_ms: int | None = None) -> dict[str, str]:
    return signed_headers(key_id, api_key_secret(MASTER, key_id), "GET", path, b"", now_ms)


async def walk(
    http: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Every item of a list, page by page; and how many pages it took."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        separator = "&" if "?" in path else "?"
        url = path if cursor is None else f"{path}{separator}cursor={cursor}"
        response = await http.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert pages < 100


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


# -- public market data ---------------------------------------------------------------


async def test_markets_list_every_market_with_its_rules(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/markets")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["next_cursor"] is None
    assert [m["symbol"] for m in body["items"]] == ["BTC-USDT", "ETH-USDT", "ETH-BTC"]
    assert body["items"][0] == {
        "symbol": "BTC-USDT",
        "base": "BTC",
        "quote": "USDT",
        "price_scale": 2,
        "base_scale": 8,
        "quote_scale": 6,
        "tick_size": "0.01",
        "lot_size": "0.0001",
        "min_quantity": "0.0001",
        "max_quantity": "1000",
        "min_notional": "1",
        "maker_fee": "0.001",
        "taker_fee": "0.002",
    }


async def test_book_answers_the_snapshot_sliced_to_depth(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    snapshot = {
        "symbol": "BTC-USDT",
        "sequence": 42,
        "bids": [["50000.00", "0.5000"], ["49999.99", "1.0000"], ["49990.00", "2.0000"]],
        "asks": [["50001.00", "0.2500"], ["50002.00", "0.7500"]],
    }
    await redis_client.set(keys.book_snapshot("BTC-USDT"), orjson.dumps(snapshot))

    response = await client.get("/v1/markets/BTC-USDT/book")
    assert response.status_code == 200
    assert response.json() == snapshot

    response = await client.get("/v1/markets/BTC-USDT/book?depth=1")
    assert response.json() == {
        "symbol": "BTC-USDT",
        "sequence": 42,
        "bids": [["50000.00", "0.5000"]],
        "asks": [["50001.00", "0.2500"]],
    }

    # No snapshot yet: an empty book at sequence 0.
    response = await client.get("/v1/markets/ETH-USDT/book?depth=1000")
    assert response.json() == {"symbol": "ETH-USDT", "sequence": 0, "bids": [], "asks": []}


async def test_ticker_answers_the_stored_ticker_or_nulls_and_zeros(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    ticker = {
        "symbol": "BTC-USDT",
        "open": "49000.00",
        "high": "51000.00",
        "low": "48500.00",
        "last": "50000.00",
        "volume": "12.50000000",
        "quote_volume": "625000.000000",
        "trades": 321,
        "best_bid": "49999.99",
        "best_ask": "50000.01",
        "at": "2026-03-01T12:00:00.000000Z",
    }
    stored = {**ticker, "at": "2026-03-01T12:00:00+00:00"}
    await redis_client.set(keys.ticker("BTC-USDT"), orjson.dumps(stored))
    assert (await client.get("/v1/markets/BTC-USDT/ticker")).json() == ticker

    assert (await client.get("/v1/markets/ETH-BTC/ticker")).json() == {
        "symbol": "ETH-BTC",
        "open": None,
        "high": None,
        "low": None,
        "last": None,
        "volume": "0.00000000",
        "quote_volume": "0.00000000",
        "trades": 0,
        "best_bid": None,
        "best_ask": None,
        "at": None,
    }


async def test_trades_newest_first_every_page_without_gaps_or_duplicates(
    client: httpx.AsyncClient, db: Engine
) -> None:
    rows = [
        {
            "trade_id": f"BTC-USDT-{seq}",
            "symbol": "BTC-USDT",
            "seq": seq,
            "price": Decimal("50000.00") + seq,
            "quantity": Decimal("0.0100") * seq,
            "taker_side": "buy" if seq % 2 else "sell",
            "taker_order_id": str(uuid.uuid4()),
            "maker_order_id": str(uuid.uuid4()),
            "at": T0 + timedelta(seconds=seq, microseconds=250),
        }
        for seq in range(1, 8)
    ]
    rows.append({**rows[0], "trade_id": "ETH-USDT-1", "symbol": "ETH-USDT"})
    with db.begin() as connection:
        connection.execute(insert(trades), rows)

    first = (await client.get("/v1/markets/BTC-USDT/trades?limit=1")).json()
    assert first["items"] == [
        {
            "trade_id": "BTC-USDT-7",
            "symbol": "BTC-USDT",
            "sequence": 7,
            "price": "50007.00",
            "quantity": "0.07000000",
            "taker_side": "buy",
            "at": "2026-03-01T12:00:07.000250Z",
        }
    ]  # no order ids: who traded is not public
    assert first["next_cursor"] is not None

    items, pages = await walk(client, "/v1/markets/BTC-USDT/trades?limit=3")
    assert [item["sequence"] for item in items] == [7, 6, 5, 4, 3, 2, 1]
    assert pages == 3
    items, pages = await walk(client, "/v1/markets/BTC-USDT/trades?limit=7")
    assert (len(items), pages) == (7, 1)
    eth = (await client.get("/v1/markets/ETH-USDT/trades")).json()
    assert [item["trade_id"] for item in eth["items"]] == ["ETH-USDT-1"]


async def test_candles_by_interval_and_time_range(client: httpx.AsyncClient, db: Engine) -> None:
    def candle(interval: str, minute: int) -> dict[str, Any]:
        return {
            "symbol": "ETH-BTC",
            "interval": interval,
            "open_time": T0 + timedelta(minutes=minute),
            "open": Decimal("0.05000"),
            "high": Decimal("0.05100"),
            "low": Decimal("0.04900"),
            "close": Decimal("0.05050"),
            "volume": Decimal("3.000"),
            "quote_volume": Decimal("0.15150"),
            "trades": minute + 1,
        }

    with db.begin() as connection:
        connection.execute(
            insert(candles), [candle("1m", m) for m in range(10)] + [candle("5m", 0)]
        )

    body = (await client.get("/v1/markets/ETH-BTC/candles?interval=5m")).json()
    assert body == {
        "items": [
            {
                "open_time": "2026-03-01T12:00:00Z",
                "open": "0.05000",
                "high": "0.05100",
                "low": "0.04900",
                "close": "0.05050",
                "volume": "3.00000000",
                "quote_volume": "0.15150000",
                "trades": 1,
            }
        ],
        "next_cursor": None,
    }
    items, pages = await walk(client, "/v1/markets/ETH-BTC/candles?interval=1m&limit=4")
    assert [item["trades"] for item in items] == list(range(10, 0, -1))
    assert pages == 3
    # start is included, end is not; ISO 8601 or milliseconds since the epoch.
    start = "2026-03-01T12:02:00Z"
    end_ms = int(datetime.fromisoformat("2026-03-01T12:05:00+00:00").timestamp() * 1000)
    ranged = (
        await client.get(f"/v1/markets/ETH-BTC/candles?interval=1m&start={start}&end={end_ms}")
    ).json()
    assert [item["open_time"] for item in ranged["items"]] == [
        "2026-03-01T12:04:00Z",
        "2026-03-01T12:03:00Z",
        "2026-03-01T12:02:00Z",
    ]
    offset = await client.get(
        "/v1/markets/ETH-BTC/candles?interval=1m&start=2026-03-01T14:08:00%2B02:00"
    )
    assert [item["trades"] for item in offset.json()["items"]] == [10, 9]


# -- bad input --------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


BAD_REQUESTS = [
    ("/v1/markets/DOGE-USDT/book", 404, "unknown_market"),
    ("/v1/markets/btc-usdt/trades", 404, "unknown_market"),
    ("/v1/markets/DOGE-USDT/ticker", 404, "unknown_market"),
    ("/v1/markets/DOGE-USDT/candles?interval=1m", 404, "unknown_market"),
    ("/v1/markets/BTC-USDT/book?depth=0", 400, "bad_depth"),
    ("/v1/markets/BTC-USDT/book?depth=1001", 400, "bad_depth"),
    ("/v1/markets/BTC-USDT/book?depth=-5", 400, "bad_depth"),
    ("/v1/markets/BTC-USDT/book?depth=ten", 400, "bad_depth"),
    ("/v1/markets/BTC-USDT/book?depth=", 400, "bad_depth"),
    ("/v1/markets/BTC-USDT/trades?limit=0", 400, "bad_limit"),
    ("/v1/markets/BTC-USDT/trades?limit=501", 400, "bad_limit"),
    ("/v1/markets/BTC-USDT/trades?limit=1.5", 400, "bad_limit"),
    ("/v1/markets/BTC-USDT/trades?limit=99999999999999999999", 400, "bad_limit"),
    ("/v1/markets/BTC-USDT/trades?cursor=not-a-cursor!", 400, "bad_cursor"),
    ("/v1/markets/BTC-USDT/trades?cursor=" + _b64(b"[1,2"), 400, "bad_cursor"),
    ("/v1/markets/BTC-USDT/trades?cursor=" + _b64(b'["trades","7"]'), 400, "bad_cursor"),
    ("/v1/markets/BTC-USDT/trades?cursor=" + _b64(b'["trades",-1]'), 400, "bad_cursor"),
    ("/v1/markets/BTC-USDT/trades?cursor=" + _b64(b'["trades",1e400]'), 400, "bad_cursor"),
    ("/v1/markets/BTC-USDT/trades?cursor=" + _b64(b'["trades",2,3]'), 400, "bad_cursor"),
    ("/v1/markets/BTC-USDT/trades?cursor=" + _b64(b'["candles",7]'), 400, "bad_cursor"),
    ("/v1/markets/BTC-USDT/trades?cursor=" + "A" * 600, 400, "bad_cursor"),
    ("/v1/markets/BTC-USDT/candles", 400, "bad_interval"),
    ("/v1/markets/BTC-USDT/candles?interval=2m", 400, "bad_interval"),
    ("/v1/markets/BTC-USDT/candles?interval=1m&limit=1000", 400, "bad_limit"),
    ("/v1/markets/BTC-USDT/candles?interval=1m&start=yesterday", 400, "bad_parameter"),
    ("/v1/markets/BTC-USDT/candles?interval=1m&end=999999999999999", 400, "bad_parameter"),
    (
        "/v1/markets/BTC-USDT/candles?interval=1m&start=2026-03-02T00:00:00Z&end=2026-03-01",
        400,
        "bad_parameter",
    ),
    (
        "/v1/markets/BTC-USDT/candles?interval=1m&cursor=" + _b64(b'["candles","2026-13-01"]'),
        400,
        "bad_cursor",
    ),
    ("/v1/nowhere", 404, "not_found"),
    ("/v1/markets/BTC-USDT", 404, "not_found"),
]


@pytest.mark.parametrize(("path", "status", "code"), BAD_REQUESTS)
async def test_bad_public_requests_answer_a_4xx_code(
    client: httpx.AsyncClient, path: str, status: int, code: str
) -> None:
    assert_error(await client.get(path), status, code)


async def test_bad_private_requests_answer_a_4xx_code(
    client: httpx.AsyncClient, db: Engine, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    alice = await make_user(db, redis_client, keys, "alice")
    orders_cursor = _b64(b'["orders","2026-03-01T12:00:00","x"]')
    cases = [
        ("/v1/orders?status=pending", 400, "bad_status"),
        ("/v1/orders?symbol=DOGE-USDT", 400, "unknown_market"),
        ("/v1/orders?limit=0", 400, "bad_limit"),
        (
            "/v1/orders?cursor=" + _b64(b'["fills","2026-03-01T12:00:00","x","maker"]'),
            400,
            "bad_cursor",
        ),
        ("/v1/fills?cursor=" + orders_cursor, 400, "bad_cursor"),
        ("/v1/fills?order_id=42", 400, "bad_parameter"),
        ("/v1/fills?symbol=nope", 400, "unknown_market"),
        ("/v1/ledger?asset=DOGE", 400, "bad_parameter"),
        ("/v1/ledger?limit=-1", 400, "bad_limit"),
        (
            "/v1/ledger?cursor=" + _b64(b'["ledger","2026-03-01T12:00:00+01:00",1,"e",0]'),
            400,
            "bad_cursor",
        ),
        ("/v1/orders/not-an-order", 404, "order_not_found"),
    ]
    for path, status, code in cases:
        assert_error(await client.get(path, headers=alice.bearer), status, code)
    # A cursor this list gave out is accepted.
    response = await client.get("/v1/orders?cursor=" + orders_cursor, headers=alice.bearer)
    assert response.json() == {"items": [], "next_cursor": None}


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/markets", content=b"{}")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]
    assert_error(await client.delete("/v1/orders/x"), 405, "method_not_allowed")


# -- the caller's own data -------------------------------------------------------------------


async def test_balances_list_every_asset_zero_when_never_held(
    client: httpx.AsyncClient, db: Engine, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    alice = await make_user(db, redis_client, keys, "alice")
    bob = await make_user(db, redis_client, keys, "bob")
    with db.begin() as connection:
        connection.execute(
            insert(balances),
            [
                {
                    "account_id": alice.account_id,
                    "asset": "BTC",
                    "available": Decimal("1.25"),
                    "locked": Decimal("0.5"),
                    "updated_at": T0,
                },
                {
                    "account_id": alice.account_id,
                    "asset": "USDT",
                    "available": Decimal("1000.000001"),
                    "locked": Decimal("0"),
                    "updated_at": T0,
                },
                {
                    "account_id": bob.account_id,
                    "asset": "ETH",
                    "available": Decimal("9"),
                    "locked": Decimal("0"),
                    "updated_at": T0,
                },
            ],
        )
    response = await client.get("/v1/balances", headers=alice.bearer)
    assert response.status_code == 200
    assert response.json() == {
        "items": [
            {"asset": "BTC", "available": "1.25000000", "locked": "0.50000000"},
            {"asset": "ETH", "available": "0.00000000", "locked": "0.00000000"},
            {"asset": "USDT", "available": "1000.000001", "locked": "0.000000"},
        ],
        "next_cursor": None,
    }


def _order(account_id: str, n: int, **overrides: Any) -> dict[str, Any]:
    row = {
        "order_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{account_id}/{n}")),
        "account_id": account_id,
        "symbol": "BTC-USDT",
        "side": "buy",
        "type": "limit",
        "price": Decimal("50000.00"),
        "quantity": Decimal("0.2500"),
        "quote_quantity": None,
        "time_in_force": "GTC",
        "post_only": False,
        "stp": "cancel_taker",
        "client_order_id": f"c-{n}",
        "status": "open",
        "reason": None,
        "filled_quantity": Decimal("0"),
        "filled_notional": Decimal("0"),
        "remaining": Decimal("0.2500"),
        "created_at": T0 + timedelta(seconds=n // 2),  # pairs share a time: ids break ties
        "updated_at": T0 + timedelta(seconds=n // 2),
    }
    row.update(overrides)
    return row


async def test_orders_only_the_callers_filtered_and_paginated(
    client: httpx.AsyncClient, db: Engine, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    alice = await make_user(db, redis_client, keys, "alice")
    bob = await make_user(db, redis_client, keys, "bob")
    statuses = [
        "accepted",
        "open",
        "partially_filled",
        "filled",
        "cancelled",
        "expired",
        "rejected",
    ]
    alice_rows = [
        _order(
            alice.account_id,
            n,
            status=statuses[n % len(statuses)],
            symbol="ETH-USDT" if n % 3 == 0 else "BTC-USDT",
        )
        for n in range(11)
    ]
    with db.begin() as connection:
        connection.execute(insert(orders), alice_rows)
        connection.execute(insert(orders), [_order(bob.account_id, n) for n in range(4)])

    newest_first = sorted(alice_rows, key=lambda r: (r["created_at"], r["order_id"]), reverse=True)
    for limit in (1, 2, 3, 11, 100):
        items, pages = await walk(client, f"/v1/orders?limit={limit}", alice.bearer)
        assert [item["order_id"] for item in items] == [r["order_id"] for r in newest_first]
        assert pages == max(1, -(-11 // limit))

    open_items, _ = await walk(client, "/v1/orders?status=open&limit=2", alice.bearer)
    assert {item["status"] for item in open_items} == {"accepted", "open", "partially_filled"}
    assert len(open_items) == sum(
        r["status"] in ("accepted", "open", "partially_filled") for r in alice_rows
    )
    closed_items, _ = await walk(client, "/v1/orders?status=closed&limit=2", alice.bearer)
    assert len(open_items) + len(closed_items) == 11
    assert not {item["status"] for item in closed_items} & {"accepted", "open", "partially_filled"}
    eth_items, _ = await walk(client, "/v1/orders?symbol=ETH-USDT&limit=2", alice.bearer)
    assert [item["symbol"] for item in eth_items] == ["ETH-USDT"] * 4

    bob_items, _ = await walk(client, "/v1/orders", bob.bearer)
    assert len(bob_items) == 4
    assert not {item["order_id"] for item in bob_items} & {r["order_id"] for r in alice_rows}


async def test_an_order_by_id_is_only_the_callers(
    client: httpx.AsyncClient, db: Engine, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    alice = await make_user(db, redis_client, keys, "alice")
    bob = await make_user(db, redis_client, keys, "bob")
    mine = _order(
        alice.account_id,
        1,
        type="market",
        side="buy",
        price=None,
        quantity=None,
        quote_quantity=Decimal("100"),
        time_in_force="IOC",
        status="filled",
        filled_quantity=Decimal("0.002"),
        filled_notional=Decimal("99.98"),
        remaining=None,
        client_order_id=None,
        created_at=datetime(2026, 3, 1, 12, 0, 0, 123456),
    )
    theirs = _order(bob.account_id, 2)
    with db.begin() as connection:
        connection.execute(insert(orders), [mine, theirs])

    response = await client.get(f"/v1/orders/{mine['order_id']}", headers=alice.bearer)
    assert response.status_code == 200
    assert response.json() == {
        "order_id": mine["order_id"],
        "client_order_id": None,
        "symbol": "BTC-USDT",
        "side": "buy",
        "type": "market",
        "price": None,
        "quantity": None,
        "quote_quantity": "100.000000",
        "time_in_force": "IOC",
        "post_only": False,
        "self_trade_prevention": "cancel_taker",
        "status": "filled",
        "reason": None,
        "filled_quantity": "0.00200000",
        "filled_notional": "99.980000",
        "remaining": None,
        "created_at": "2026-03-01T12:00:00.123456Z",
        "updated_at": "2026-03-01T12:00:00.000000Z",
    }

    someone_elses = await client.get(f"/v1/orders/{theirs['order_id']}", headers=alice.bearer)
    missing = await client.get(f"/v1/orders/{uuid.uuid4()}", headers=alice.bearer)
    assert_error(someone_elses, 404, "order_not_found")
    assert_error(missing, 404, "order_not_found")
    # Indistinguishable from a missing order, but for the id it names.
    assert someone_elses.json()["error"]["message"].replace(
        theirs["order_id"], "?"
    ) == missing.json()["error"]["message"].replace(missing.url.path.rsplit("/", 1)[1], "?")
    ok = await client.get(f"/v1/orders/{theirs['order_id']}", headers=bob.bearer)
    assert ok.json()["order_id"] == theirs["order_id"]


async def test_fills_only_the_callers_filtered_and_paginated(
    client: httpx.AsyncClient, db: Engine, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    alice = await make_user(db, redis_client, keys, "alice")
    bob = await make_user(db, redis_client, keys, "bob")
    order_a, order_b = str(uuid.uuid4()), str(uuid.uuid4())

    def fill(
        account: str, order: str, trade: int, role: str, symbol: str = "BTC-USDT"
    ) -> dict[str, Any]:
        return {
            "trade_id": f"{symbol}-{trade}",
            "role": role,
            "account_id": account,
            "order_id": order,
            "symbol": symbol,
            "side": "buy" if role == "taker" else "sell",
            "price": Decimal("50000.00"),
            "quantity": Decimal("0.0100"),
            "spent_asset": "USDT",
            "spent": Decimal("500"),
            "received_asset": "BTC",
            "received": Decimal("0.00998"),
            "fee": Decimal("0.00002"),
            "at": T0 + timedelta(seconds=trade // 2),
        }

    rows = [fill(alice.account_id, order_a, t, "taker") for t in range(6)]
    # A self-trade: both sides of one trade are Alice's, at one time.
    rows.append(fill(alice.account_id, order_b, 6, "maker"))
    rows.append(fill(alice.account_id, order_a, 6, "taker"))
    rows.append(fill(alice.account_id, order_b, 7, "maker", symbol="ETH-USDT"))
    with db.begin() as connection:
        connection.execute(insert(fills), rows)
        connection.execute(insert(fills), [fill(bob.account_id, str(uuid.uuid4()), 100, "maker")])

    first = (await client.get("/v1/fills?limit=1", headers=alice.bearer)).json()
    assert first["items"] == [
        {
            "trade_id": "ETH-USDT-7",
            "order_id": order_b,
            "symbol": "ETH-USDT",
            "side": "sell",
            "role": "maker",
            "price": "50000.00",
            "quantity": "0.01000000",
            "spent_asset": "USDT",
            "spent": "500.000000",
            "received_asset": "BTC",
            "received": "0.00998000",
            "fee_asset": "BTC",
            "fee": "0.00002000",
            "at": "2026-03-01T12:00:03.000000Z",
        }
    ]
    for limit in (1, 2, 4, 50):
        items, _ = await walk(client, f"/v1/fills?limit={limit}", alice.bearer)
        assert [(i["trade_id"], i["role"]) for i in items] == [
            ("ETH-USDT-7", "maker"),
            ("BTC-USDT-6", "taker"),
            ("BTC-USDT-6", "maker"),
            ("BTC-USDT-5", "taker"),
            ("BTC-USDT-4", "taker"),
            ("BTC-USDT-3", "taker"),
            ("BTC-USDT-2", "taker"),
            ("BTC-USDT-1", "taker"),
            ("BTC-USDT-0", "taker"),
        ]
    by_order, _ = await walk(client, f"/v1/fills?order_id={order_b}&limit=1", alice.bearer)
    assert [i["trade_id"] for i in by_order] == ["ETH-USDT-7", "BTC-USDT-6"]
    by_symbol, _ = await walk(client, "/v1/fills?symbol=ETH-USDT", alice.bearer)
    assert [i["trade_id"] for i in by_symbol] == ["ETH-USDT-7"]
    bobs, _ = await walk(client, "/v1/fills", bob.bearer)
    assert [i["trade_id"] for i in bobs] == ["BTC-USDT-100"]
    # Bob cannot reach Alice's fills by naming her order.
    assert (await client.get(f"/v1/fills?order_id={order_a}", headers=bob.bearer)).json() == {
        "items": [],
        "next_cursor": None,
    }


async def test_ledger_only_the_callers_filtered_and_paginated(
    client: httpx.AsyncClient, db: Engine, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    alice = await make_user(db, redis_client, keys, "alice")
    bob = await make_user(db, redis_client, keys, "bob")

    def entry(account: str, version: int, leg: int, asset: str, amount: str) -> dict[str, Any]:
        return {
            "event_id": account,
            "event_version": version,
            "leg": leg,
            "ledger_account": account,
            "bucket": "available",
            "asset": asset,
            "amount": Decimal(amount),
            "kind": "Deposited",
            "reference": f"tx-{version}",
            "at": T0 + timedelta(seconds=version // 3),
        }

    rows = [entry(alice.account_id, v, 0, "USDT", "100") for v in range(1, 8)]
    rows += [entry(alice.account_id, 8, leg, "BTC", "-0.5" if leg else "0.5") for leg in range(2)]
    external = {**entry(alice.account_id, 1, 1, "USDT", "-100"), "ledger_account": "external"}
    with db.begin() as connection:
        connection.execute(insert(ledger_entries), [*rows, external])
        connection.execute(insert(ledger_entries), [entry(bob.account_id, 1, 0, "ETH", "1")])

    first = (await client.get("/v1/ledger?limit=1", headers=alice.bearer)).json()
    assert first["items"] == [
        {
            "event_id": alice.account_id,
            "event_version": 8,
            "leg": 1,
            "asset": "BTC",
            "amount": "-0.50000000",
            "bucket": "available",
            "kind": "Deposited",
            "reference": "tx-8",
            "at": "2026-03-01T12:00:02.000000Z",
        }
    ]
    expected = [(8, 1), (8, 0), *((v, 0) for v in range(7, 0, -1))]
    for limit in (1, 2, 5, 500):
        items, _ = await walk(client, f"/v1/ledger?limit={limit}", alice.bearer)
        assert [(i["event_version"], i["leg"]) for i in items] == expected
    usdt, _ = await walk(client, "/v1/ledger?asset=USDT&limit=3", alice.bearer)
    assert [i["amount"] for i in usdt] == ["100.000000"] * 7
    bobs, _ = await walk(client, "/v1/ledger", bob.bearer)
    assert [(i["asset"], i["amount"]) for i in bobs] == [("ETH", "1.00000000")]


# -- authentication ------------------------------------------------------------------------


async def test_bearer_missing_bad_or_expired_is_401(
    client: httpx.AsyncClient, db: Engine, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    alice = await make_user(db, redis_client, keys, "alice")
    assert (await client.get("/v1/balances", headers=alice.bearer)).status_code == 200

    missing = await client.get("/v1/balances")
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    bad = await client.get("/v1/balances", headers={"Authorization": "Bearer nope"})
    assert_error(bad, 401, "unauthorized")
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    basic = await client.get("/v1/orders", headers={"Authorization": "Basic YWxpY2U6cHc="})
    assert_error(basic, 401, "unauthorized")

    brief = await make_user(db, redis_client, keys, "brief")
    await redis_client.pexpire(keys.session(sha256_hex(brief.token)), 150)
    assert (await client.get("/v1/orders", headers=brief.bearer)).status_code == 200
    time.sleep(0.3)
    assert_error(await client.get("/v1/orders", headers=brief.bearer), 401, "unauthorized")


async def test_api_key_signatures(
    client: httpx.AsyncClient, db: Engine, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    alice = await make_user(db, redis_client, keys, "alice")
    key = make_key(db, alice, "read,trade")
    path = "/v1/orders?status=open&limit=5"

    good = signed(key, path)
    response = await client.get(path, headers=good)
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_cursor": None}

    assert_error(await client.get(path, headers=good), 401, "replayed_signature")

    tampered = signed(key, path)
    assert_error(
        await client.get("/v1/orders?status=all&limit=5", headers=tampered), 401, "bad_signature"
    )
    wrong_secret = signed(key, path)
    wrong_secret["BX-SIGN"] = "0" * 64
    assert_error(await client.get(path, headers=wrong_secret), 401, "bad_signature")

    now = int(time.time() * 1000)
    assert_error(
        await client.get(path, headers=signed(key, path, now - 6000)), 401, "stale_timestamp"
    )
    assert_error(
        await client.get(path, headers=signed(key, path, now + 6000)), 401, "stale_timestamp"
    )

    missing = signed(key, path)
    del missing["BX-TS"]
    assert_error(await client.get(path, headers=missing), 401, "unauthorized")

    unknown = signed("k-nobody", path)
    assert_error(await client.get(path, headers=unknown), 401, "unknown_key")
    revoked = make_key(db, alice, "read", revoked=True)
    assert_error(await client.get(path, headers=signed(revoked, path)), 401, "unknown_key")

    trade_only = make_key(db, alice, "trade")
    assert_error(await client.get(path, headers=signed(trade_only, path)), 403, "forbidden")

    # The key reads its own user's account, like the session does.
    with db.begin() as connection:
        connection.execute(insert(orders), [_order(alice.account_id, 1)])
    by_key = await client.get("/v1/orders", headers=signed(key, "/v1/orders"))
    by_session = await client.get("/v1/orders", headers=alice.bearer)
    assert by_key.json() == by_session.json()
    assert len(by_key.json()["items"]) == 1


# -- the document ------------------------------------------------------------------------------


async def test_openapi_documents_every_route(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    routes = app.routes  # type: ignore[attr-defined]
    assert routes
    for route in routes:
        assert isinstance(route, Route | WebSocketRoute)
        assert route.path in document["paths"], route.path
        operations = document["paths"][route.path]
        methods = (route.methods or set()) - {"HEAD"} if isinstance(route, Route) else {"GET"}
        for method in methods:
            operation = operations[method.lower()]
            assert "200" in operation["responses"] or "101" in operation["responses"]
            for name in {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}:
                assert "{" + name + "}" in route.path

    components = document["components"]
    assert set(components["schemas"]["Error"]["properties"]["error"]["properties"]) == {
        "code",
        "message",
    }
    schemes = components["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert {schemes[name]["name"] for name in ("apiKey", "apiKeyTimestamp", "apiKeySignature")} == {
        "BX-KEY",
        "BX-TS",
        "BX-SIGN",
    }
    orders_op = document["paths"]["/v1/orders"]["get"]
    assert {"400", "401", "403"} <= set(orders_op["responses"])
    assert document["paths"]["/v1/markets"]["get"]["security"] == []
    # Every $ref resolves.
    text = response.text
    for ref in {part.split('"')[0] for part in text.split('"$ref":"')[1:]}:
        section, name = ref.removeprefix("#/components/").split("/")
        assert name in components[section], ref


# -- concurrent requests ----------------------------------------------------------------------


async def test_concurrent_requests_share_reads_yet_each_gets_its_own_fresh_answer(
    read_db: Settings,
    db: Engine,
    redis_client: aioredis.Redis,
    keys: RedisKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Balances, sessions and snapshots of concurrent requests are read in batches
    (``queries.readers.Batched``): every caller still gets exactly their own answer,
    as fresh as when they asked, and a failed batch fails only its own requests."""
    people = [await make_user(db, redis_client, keys, f"p{i}") for i in range(12)]
    with db.begin() as connection:
        connection.execute(
            insert(balances),
            [
                {
                    "account_id": person.account_id,
                    "asset": "BTC",
                    "available": Decimal(i),
                    "locked": Decimal(0),
                    "updated_at": T0,
                }
                for i, person in enumerate(people)
            ],
        )
    snapshot = {"symbol": "BTC-USDT", "sequence": 1, "bids": [["1.00", "1.0000"]], "asks": []}
    await redis_client.set(keys.book_snapshot("BTC-USDT"), orjson.dumps(snapshot))

    seed_markets(read_db)  # as the projection writes the demo markets' listings
    app = create_app(read_db, keys, master_key=MASTER)
    # The 500s below are answers; the app also raises their errors to the server.
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bitex") as http,
    ):

        async def btc(person: User) -> str:
            response = await http.get("/v1/balances", headers=person.bearer)
            assert response.status_code == 200, response.text
            [held] = [i for i in response.json()["items"] if i["asset"] == "BTC"]
            return str(held["available"])

        gateway = app.state.gateway
        real = gateway.read.balances_of
        batches: list[int] = []

        def counted(account_ids: list[str]) -> dict[str, Any]:
            batches.append(len(account_ids))
            return real(account_ids)  # type: ignore[no-any-return]

        monkeypatch.setattr(gateway.read, "balances_of", counted)
        found = await asyncio.gather(*[btc(p) for _ in range(5) for p in people])
        assert found == [f"{i}.00000000" for _ in range(5) for i in range(len(people))]
        assert len(batches) < 5 * len(people), batches  # reads were shared
        assert max(batches) <= len(people)  # each account once a batch

        # Fresh: a change is seen by the next request (no answer is kept).
        with db.begin() as connection:
            connection.execute(
                update(balances)
                .where(balances.c.account_id == people[3].account_id)
                .values(available=Decimal(77))
            )
        assert await btc(people[3]) == "77.00000000"
        books = await asyncio.gather(*[http.get("/v1/markets/BTC-USDT/book") for _ in range(20)])
        assert {b.json()["sequence"] for b in books} == {1}
        await redis_client.set(
            keys.book_snapshot("BTC-USDT"), orjson.dumps(snapshot | {"sequence": 2})
        )
        assert (await http.get("/v1/markets/BTC-USDT/book")).json()["sequence"] == 2

        # A logout takes effect at once, right after a burst of that session's requests.
        await asyncio.gather(*[btc(people[0]) for _ in range(10)])
        await redis_client.delete(keys.session(sha256_hex(people[0].token)))
        gone = await http.get("/v1/balances", headers=people[0].bearer)
        assert_error(gone, 401, "unauthorized")

        # A batch that fails fails its own requests only.
        monkeypatch.setattr(gateway.read, "balances_of", _fails)
        failed = await asyncio.gather(
            *[http.get("/v1/balances", headers=p.bearer) for p in people[1:]]
        )
        assert {response.status_code for response in failed} == {500}
        monkeypatch.setattr(gateway.read, "balances_of", real)
        assert await asyncio.gather(*[btc(p) for p in people[1:3]]) == [
            "1.00000000",
            "2.00000000",
        ]


def _fails(account_ids: list[str]) -> dict[str, Any]:
    raise RuntimeError("the database is gone")


async def test_the_query_gateway_alone_is_alive_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"mysql": "ok", "redis": "ok"}
