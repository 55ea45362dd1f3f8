"""The command gateway end to end: HTTP -> Kafka -> processors -> projections -> HTTP.

One exchange runs for the whole module: the account and matching processors
and the projections as real processes on an isolated topic prefix and scratch
database, and both gateways on one base URL (``infra.api``) served by uvicorn
on a loopback port.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect

from infra.auth import signed_headers
from infra.kafka_io import end_offsets
from infra.settings import Settings
from infra.topics import TopicMap
from tests.integration.conftest import bitex_cli, live_exchange

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "correct horse battery"
OPERATOR = "ops@example.com"


@dataclass
class Exchange:
    url: str
    settings: Settings
    topics: TopicMap
    http: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/v1/ws"

    async def commands_published(self) -> int:
        """How many commands the account inboxes hold: bad input must not add any."""
        ends = await end_offsets(self.settings, [self.topics.account_commands])
        return sum(ends.values())

    async def register(self, email: str) -> dict[str, Any]:
        response = await self.http.post("/v1/users", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def login(self, email: str) -> dict[str, str]:
        response = await self.http.post("/v1/sessions", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    async def user(self) -> tuple[dict[str, Any], dict[str, str]]:
        """A fresh registered, logged-in user: (registration, auth headers)."""
        email = f"u-{uuid.uuid4().hex[:12]}@example.com"
        return await self.register(email), await self.login(email)

    async def deposit(self, email: str, asset: str, amount: str) -> None:
        operator = await self.login(OPERATOR)
        body = {"email": email, "asset": asset, "amount": amount, "tx_id": uuid.uuid4().hex}
        response = await self.http.post("/v1/admin/deposits", json=body, headers=operator)
        assert response.status_code == 201, response.text

    async def balances(self, auth: dict[str, str]) -> dict[str, tuple[Decimal, Decimal]]:
        """The caller's non-zero balances: asset -> (available, locked)."""
        response = await self.http.get("/v1/balances", headers=auth)
        assert response.status_code == 200, response.text
        held = (
            (b["asset"], Decimal(b["available"]), Decimal(b["locked"]))
            for b in response.json()["items"]
        )
        return {asset: (free, locked) for asset, free, locked in held if free or locked}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def exchange(
    scratch_db: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Exchange]:
    topics = TopicMap(prefix=f"it-cmd-{uuid.uuid4().hex[:10]}-")
    logs: Path = tmp_path_factory.mktemp("logs")
    async with (
        live_exchange(scratch_db, topics, logs, (OPERATOR, PASSWORD)) as (_, url),
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield Exchange(url, scratch_db, topics, http)


async def _wait_until(check: Callable[[], Any], timeout: float = 10) -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


async def _order_update(ws: ClientConnection, status: str, timeout: float = 10) -> Any:
    """The first order update with ``status`` (earlier states may come first, or not at
    all: each batch of the projection publishes an order's state as it left it)."""
    async with asyncio.timeout(timeout):
        while True:
            message = orjson.loads(await ws.recv())
            if message.get("channel") == "orders" and message["data"]["status"] == status:
                return message["data"]


# -- end to end -----------------------------------------------------------------------------


async def test_two_users_register_get_funded_and_trade(exchange: Exchange) -> None:
    alice_email, bob_email = (f"{n}-{uuid.uuid4().hex[:8]}@example.com" for n in ("a", "b"))
    await exchange.register(alice_email)
    await exchange.register(bob_email)
    again = await exchange.http.post(
        "/v1/users", json={"email": alice_email.upper(), "password": PASSWORD}
    )
    assert (again.status_code, again.json()["error"]["code"]) == (409, "email_taken")
    alice_auth, bob_auth = await exchange.login(alice_email), await exchange.login(bob_email)
    await exchange.deposit(alice_email, "USDT", "100000")
    await exchange.deposit(bob_email, "BTC", "2")
    assert await exchange.balances(alice_auth) == {"USDT": (Decimal(100000), Decimal(0))}

    async with connect(exchange.ws_url) as alice_ws, connect(exchange.ws_url) as bob_ws:
        for ws, auth in ((alice_ws, alice_auth), (bob_ws, bob_auth)):
            token = auth["Authorization"].split()[1]
            await ws.send(orjson.dumps({"op": "auth", "token": token}).decode())
            assert orjson.loads(await ws.recv())["op"] == "authenticated"
            await ws.send(orjson.dumps({"op": "subscribe", "channels": ["orders"]}).decode())
            assert orjson.loads(await ws.recv())["op"] == "subscribed"

        buy = {
            "symbol": "BTC-USDT",
            "side": "buy",
            "type": "limit",
            "price": "30000.00",
            "quantity": "1.5",
            "client_order_id": "alice-1",
        }
        placed = await exchange.http.post("/v1/orders", json=buy, headers=alice_auth)
        assert placed.status_code == 201, placed.text
        resting = placed.json()
        assert (resting["status"], resting["fills"]) == ("open", [])
        assert resting["client_order_id"] == "alice-1"

        # Read-your-writes: the next GETs see the order and the locked funds.
        mine = await exchange.http.get(f"/v1/orders/{resting['order_id']}", headers=alice_auth)
        assert mine.status_code == 200
        assert mine.json()["status"] == "open"
        assert await exchange.balances(alice_auth) == {"USDT": (Decimal(55000), Decimal(45000))}
        book = (await exchange.http.get("/v1/markets/BTC-USDT/book")).json()
        assert [30000, 1.5] in [[float(p), float(q)] for p, q in book["bids"]]

        sell = {
            "symbol": "BTC-USDT",
            "side": "sell",
            "type": "limit",
            "price": "29000",
            "quantity": "1",
        }
        taken = await exchange.http.post("/v1/orders", json=sell, headers=bob_auth)
        assert taken.status_code == 201, taken.text
        taker = taken.json()
        assert taker["status"] == "filled"
        assert [(f["price"], f["quantity"]) for f in taker["fills"]] == [("30000.00", "1.00000000")]
        assert taker["fills"][0]["maker_order_id"] == resting["order_id"]

        alice_fill = await _order_update(alice_ws, "partially_filled")
        bob_fill = await _order_update(bob_ws, "filled")
        assert Decimal(alice_fill["filled_quantity"]) == 1
        assert alice_fill["order_id"] == resting["order_id"]
        assert bob_fill["order_id"] == taker["order_id"]

    fills = (await exchange.http.get("/v1/fills", headers=bob_auth)).json()["items"]
    assert [(f["price"], f["quantity"], f["role"]) for f in fills] == [
        ("30000.00", "1.00000000", "taker")
    ]

    async def settled() -> bool:
        alice_now = await exchange.balances(alice_auth)
        bob_now = await exchange.balances(bob_auth)
        return alice_now.get("BTC", (0, 0))[0] > 0 and bob_now.get("USDT", (0, 0))[0] > 0

    assert await _wait_until(settled)
    alice_now, bob_now = await exchange.balances(alice_auth), await exchange.balances(bob_auth)
    maker_fee, taker_fee = Decimal("0.001"), Decimal("0.002")
    assert alice_now["USDT"] == (Decimal(55000), Decimal(15000))
    assert alice_now["BTC"][0] == Decimal(1) - Decimal(1) * maker_fee
    assert bob_now["BTC"] == (Decimal(1), Decimal(0))
    assert bob_now["USDT"][0] == Decimal(30000) - Decimal(30000) * taker_fee

    book = (await exchange.http.get("/v1/markets/BTC-USDT/book")).json()
    assert ["30000.00", "0.50000000"] in book["bids"]

    # Nobody touches what is not theirs.
    order_path = f"/v1/orders/{resting['order_id']}"
    for method in ("GET", "DELETE"):
        response = await exchange.http.request(method, order_path, headers=bob_auth)
        assert (response.status_code, response.json()["error"]["code"]) == (
            404,
            "order_not_found",
        ), method
    amend = await exchange.http.patch(order_path, json={"quantity": "0.1"}, headers=bob_auth)
    assert amend.status_code == 404
    body = {"email": bob_email, "asset": "BTC", "amount": "5", "tx_id": "self-service"}
    deposit = await exchange.http.post("/v1/admin/deposits", json=body, headers=bob_auth)
    assert (deposit.status_code, deposit.json()["error"]["code"]) == (403, "forbidden")

    cancelled = await exchange.http.delete(order_path, headers=alice_auth)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    again_cancel = await exchange.http.delete(order_path, headers=alice_auth)
    assert (again_cancel.status_code, again_cancel.json()["error"]["code"]) == (
        409,
        "order_not_open",
    )
    assert (await exchange.balances(alice_auth))["USDT"] == (Decimal(70000), Decimal(0))


async def test_deposits_are_idempotent_on_the_tx_id_and_withdrawals_need_funds(
    exchange: Exchange,
) -> None:
    registered, auth = await exchange.user()
    operator = await exchange.login(OPERATOR)
    body = {"account_id": registered["account_id"], "asset": "ETH", "amount": "3", "tx_id": "t1"}
    first = await exchange.http.post("/v1/admin/deposits", json=body, headers=operator)
    second = await exchange.http.post("/v1/admin/deposits", json=body, headers=operator)
    assert (first.status_code, first.json()["status"]) == (201, "credited")
    assert (second.status_code, second.json()["status"]) == (200, "duplicate")

    withdraw = {"asset": "ETH", "amount": "1.25", "withdrawal_id": "w1"}
    paid = await exchange.http.post("/v1/withdrawals", json=withdraw, headers=auth)
    assert (paid.status_code, paid.json()["status"]) == (201, "debited")
    too_much = {"asset": "ETH", "amount": "5"}
    refused = await exchange.http.post("/v1/withdrawals", json=too_much, headers=auth)
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "insufficient_funds")
    assert await exchange.balances(auth) == {"ETH": (Decimal("1.75"), Decimal(0))}


async def test_a_repeated_client_order_id_makes_one_order(exchange: Exchange) -> None:
    registered, auth = await exchange.user()
    await exchange.deposit(registered["email"], "USDT", "1000")
    order = {
        "symbol": "BTC-USDT",
        "side": "buy",
        "type": "limit",
        "price": "100",
        "quantity": "0.5",
        "client_order_id": "same-one",
    }
    answers = await asyncio.gather(
        *(exchange.http.post("/v1/orders", json=order, headers=auth) for _ in range(8))
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["order_id"] for a in answers}) == 1
    listed = (await exchange.http.get("/v1/orders", headers=auth)).json()["items"]
    assert [o["client_order_id"] for o in listed] == ["same-one"]
    assert await exchange.balances(auth) == {"USDT": (Decimal(950), Decimal(50))}


async def test_api_keys_sign_requests_once_and_stop_working_when_revoked(
    exchange: Exchange,
) -> None:
    registered, auth = await exchange.user()
    await exchange.deposit(registered["email"], "USDT", "500")
    created = await exchange.http.post(
        "/v1/api-keys", json={"permissions": ["read", "trade"], "label": "bot"}, headers=auth
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["permissions"] == ["read", "trade"]

    def signed(method: str, path: str, body: bytes = b"", **kw: Any) -> dict[str, str]:
        return signed_headers(key["key_id"], key["secret"], method, path, body, **kw)

    order = orjson.dumps(
        {"symbol": "ETH-USDT", "side": "buy", "type": "limit", "price": "10", "quantity": "1"}
    )
    headers = signed("POST", "/v1/orders", order)
    placed = await exchange.http.post("/v1/orders", content=order, headers=headers)
    assert placed.status_code == 201, placed.text
    replayed = await exchange.http.post("/v1/orders", content=order, headers=headers)
    assert replayed.json()["error"]["code"] == "replayed_signature"
    stale = signed("POST", "/v1/orders", order, now_ms=int(time.time() * 1000) - 60_000)
    late = await exchange.http.post("/v1/orders", content=order, headers=stale)
    assert (late.status_code, late.json()["error"]["code"]) == (401, "stale_timestamp")
    forged = {**signed("POST", "/v1/orders", order), "BX-SIGN": "0" * 64}
    bad = await exchange.http.post("/v1/orders", content=order, headers=forged)
    assert (bad.status_code, bad.json()["error"]["code"]) == (401, "bad_signature")

    withdraw = orjson.dumps({"asset": "USDT", "amount": "1"})
    no_right = await exchange.http.post(
        "/v1/withdrawals", content=withdraw, headers=signed("POST", "/v1/withdrawals", withdraw)
    )
    assert (no_right.status_code, no_right.json()["error"]["code"]) == (403, "forbidden")
    by_key = await exchange.http.post(
        "/v1/api-keys",
        json={"permissions": ["read"]},
        headers=signed("POST", "/v1/api-keys", orjson.dumps({"permissions": ["read"]})),
    )
    assert by_key.status_code in (401, 403)

    revoked = await exchange.http.delete(f"/v1/api-keys/{key['key_id']}", headers=auth)
    assert revoked.status_code == 200, revoked.text
    after = await exchange.http.post(
        "/v1/orders", content=order, headers=signed("POST", "/v1/orders", order)
    )
    assert (after.status_code, after.json()["error"]["code"]) == (401, "unknown_key")
    assert (await exchange.balances(auth))["USDT"] == (Decimal(490), Decimal(10))


async def test_a_session_ends_at_logout_and_wrong_passwords_are_refused(
    exchange: Exchange,
) -> None:
    registered, auth = await exchange.user()
    wrong = await exchange.http.post(
        "/v1/sessions", json={"email": registered["email"], "password": "not the password"}
    )
    nobody = await exchange.http.post(
        "/v1/sessions", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    for refused in (wrong, nobody):
        assert (refused.status_code, refused.json()["error"]["code"]) == (
            401,
            "invalid_credentials",
        )
    assert (await exchange.http.delete("/v1/sessions", headers=auth)).status_code == 204
    after = await exchange.http.get("/v1/balances", headers=auth)
    assert after.status_code == 401


async def test_a_write_with_an_ended_unknown_or_malformed_bearer_is_401(
    exchange: Exchange,
) -> None:
    _, auth = await exchange.user()
    assert (await exchange.http.delete("/v1/sessions", headers=auth)).status_code == 204
    before = await exchange.commands_published()
    for headers, invalid_token in (
        (auth, True),  # logged out
        ({"Authorization": "Bearer nope"}, True),
        ({"Authorization": "Basic YWxpY2U6cHc="}, False),
    ):
        refused = await exchange.http.post("/v1/orders", json=LIMIT_BUY, headers=headers)
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthorized")
        challenge = refused.headers["www-authenticate"]
        assert challenge.startswith("Bearer")
        assert ('error="invalid_token"' in challenge) == invalid_token
    assert await exchange.commands_published() == before


# -- bad input ------------------------------------------------------------------------------

LIMIT_BUY = {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "100", "quantity": "1"}

BAD_ORDERS: list[tuple[str, Any, int, str]] = [
    ("not json", b"{nope", 400, "invalid_json"),
    ("not an object", b"[1, 2]", 400, "invalid_json"),
    ("empty", b"", 400, "invalid_json"),
    ("unknown field", {**LIMIT_BUY, "leverage": 100}, 400, "unknown_field"),
    ("missing symbol", {k: v for k, v in LIMIT_BUY.items() if k != "symbol"}, 400, "missing_field"),
    ("missing side", {k: v for k, v in LIMIT_BUY.items() if k != "side"}, 400, "missing_field"),
    ("unknown market", {**LIMIT_BUY, "symbol": "DOGE-USDT"}, 400, "unknown_market"),
    ("bad side", {**LIMIT_BUY, "side": "long"}, 400, "invalid_value"),
    ("bad type", {**LIMIT_BUY, "type": "stop"}, 400, "invalid_value"),
    ("price as float", {**LIMIT_BUY, "price": 100.5}, 400, "invalid_type"),
    ("price as list", {**LIMIT_BUY, "price": ["1"]}, 400, "invalid_type"),
    ("negative price", {**LIMIT_BUY, "price": "-1"}, 400, "invalid_amount"),
    ("zero quantity", {**LIMIT_BUY, "quantity": "0"}, 400, "invalid_amount"),
    ("NaN quantity", {**LIMIT_BUY, "quantity": "NaN"}, 400, "invalid_amount"),
    ("infinite price", {**LIMIT_BUY, "price": "Infinity"}, 400, "invalid_amount"),
    ("not a number", {**LIMIT_BUY, "price": "ten"}, 400, "invalid_amount"),
    ("huge quantity", {**LIMIT_BUY, "quantity": "1e30"}, 400, "invalid_quantity"),
    ("huge price", {**LIMIT_BUY, "price": "1E+999999"}, 400, "invalid_price"),
    ("off-tick price", {**LIMIT_BUY, "price": "100.001"}, 400, "invalid_price"),
    ("off-lot quantity", {**LIMIT_BUY, "quantity": "0.000000001"}, 400, "invalid_quantity"),
    (
        "below min notional",
        {**LIMIT_BUY, "price": "0.01", "quantity": "0.0001"},
        400,
        "min_notional",
    ),
    (
        "limit without price",
        {k: v for k, v in LIMIT_BUY.items() if k != "price"},
        400,
        "missing_field",
    ),
    ("market with price", {**LIMIT_BUY, "type": "market"}, 400, "invalid_order"),
    (
        "post-only IOC",
        {**LIMIT_BUY, "post_only": True, "time_in_force": "IOC"},
        400,
        "invalid_order",
    ),
    ("post_only not bool", {**LIMIT_BUY, "post_only": "yes"}, 400, "invalid_type"),
    ("bad client id", {**LIMIT_BUY, "client_order_id": "a b"}, 400, "invalid_value"),
    ("bad tif", {**LIMIT_BUY, "time_in_force": "GTD"}, 400, "invalid_value"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [pytest.param(body, status, code, id=name) for name, body, status, code in BAD_ORDERS],
)
async def test_bad_orders_are_refused_and_publish_nothing(
    exchange: Exchange, body: Any, status: int, code: str
) -> None:
    registered, auth = await exchange.user()
    await exchange.deposit(registered["email"], "USDT", "100000")
    before = await exchange.commands_published()
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = await exchange.http.post(
        "/v1/orders", content=content, headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert await exchange.commands_published() == before
    assert await exchange.balances(auth) == {"USDT": (Decimal(100000), Decimal(0))}


BAD_REQUESTS: list[tuple[str, str, str, Any, bool, int, str]] = [
    # (name, method, path, body, authenticated, status, code)
    (
        "register: bad email",
        "POST",
        "/v1/users",
        {"email": "x", "password": PASSWORD},
        False,
        400,
        "invalid_email",
    ),
    (
        "register: short password",
        "POST",
        "/v1/users",
        {"email": "s@example.com", "password": "short"},
        False,
        400,
        "weak_password",
    ),
    (
        "register: password not a string",
        "POST",
        "/v1/users",
        {"email": "t@example.com", "password": 12345678},
        False,
        400,
        "invalid_type",
    ),
    (
        "login: missing password",
        "POST",
        "/v1/sessions",
        {"email": "s@example.com"},
        False,
        400,
        "missing_field",
    ),
    ("order: no token", "POST", "/v1/orders", LIMIT_BUY, False, 401, "unauthorized"),
    (
        "withdraw: no token",
        "POST",
        "/v1/withdrawals",
        {"asset": "USDT", "amount": "1"},
        False,
        401,
        "unauthorized",
    ),
    (
        "withdraw: unknown asset",
        "POST",
        "/v1/withdrawals",
        {"asset": "XYZ", "amount": "1"},
        True,
        400,
        "unknown_asset",
    ),
    (
        "withdraw: too many decimals",
        "POST",
        "/v1/withdrawals",
        {"asset": "USDT", "amount": "0.0000001"},
        True,
        400,
        "invalid_amount",
    ),
    (
        "withdraw: negative",
        "POST",
        "/v1/withdrawals",
        {"asset": "USDT", "amount": "-5"},
        True,
        400,
        "invalid_amount",
    ),
    (
        "deposit: not an operator",
        "POST",
        "/v1/admin/deposits",
        {"email": "s@example.com", "asset": "USDT", "amount": "1", "tx_id": "x"},
        True,
        403,
        "forbidden",
    ),
    (
        "api key: unknown permission",
        "POST",
        "/v1/api-keys",
        {"permissions": ["admin"]},
        True,
        400,
        "invalid_permissions",
    ),
    (
        "api key: no permissions",
        "POST",
        "/v1/api-keys",
        {"permissions": []},
        True,
        400,
        "invalid_permissions",
    ),
    (
        "amend: bad id",
        "PATCH",
        "/v1/orders/not-an-id",
        {"quantity": "1"},
        True,
        404,
        "order_not_found",
    ),
    (
        "amend: unknown order",
        "PATCH",
        f"/v1/orders/{uuid.uuid4()}",
        {"quantity": "1"},
        True,
        404,
        "order_not_found",
    ),
    (
        "amend: zero quantity",
        "PATCH",
        f"/v1/orders/{uuid.uuid4()}",
        {"quantity": "0"},
        True,
        400,
        "invalid_amount",
    ),
    ("cancel all: no symbol", "DELETE", "/v1/orders", None, True, 400, "missing_parameter"),
    (
        "cancel all: unknown market",
        "DELETE",
        "/v1/orders?symbol=NOPE",
        None,
        True,
        400,
        "unknown_market",
    ),
    ("revoke: unknown key", "DELETE", "/v1/api-keys/nope", None, True, 404, "api_key_not_found"),
    (
        "list a market: not an operator",
        "POST",
        "/v1/admin/markets",
        {"base": "SOL", "base_scale": 9, "quote": "USDT", "quote_scale": 6},
        True,
        403,
        "forbidden",
    ),
    ("list a market: anonymous", "POST", "/v1/admin/markets", {}, False, 401, "unauthorized"),
    (
        "oversized body",
        "POST",
        "/v1/orders",
        {**LIMIT_BUY, "client_order_id": "x" * 20_000},
        True,
        413,
        "body_too_large",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "authenticated", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_REQUESTS],
)
async def test_bad_requests_answer_a_clear_4xx_and_change_nothing(
    exchange: Exchange,
    method: str,
    path: str,
    body: Any,
    authenticated: bool,
    status: int,
    code: str,
) -> None:
    registered, auth = await exchange.user()
    await exchange.deposit(registered["email"], "USDT", "100")
    before = await exchange.commands_published()
    response = await exchange.http.request(
        method,
        path,
        content=None if body is None else orjson.dumps(body),
        headers=auth if authenticated else {},
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    if status != 404:  # a refused command for an unknown order is published and refused
        assert await exchange.commands_published() == before
    assert await exchange.balances(auth) == {"USDT": (Decimal(100), Decimal(0))}


async def test_logins_are_rate_limited_per_address(exchange: Exchange) -> None:
    await asyncio.sleep(1.0)  # a fresh one-second window
    attempts = await asyncio.gather(
        *(
            exchange.http.post("/v1/sessions", json={"email": "n@example.com", "password": "x"})
            for _ in range(50)  # two one-second windows let 40 through at most
        )
    )
    limited = [a for a in attempts if a.status_code == 429]
    assert limited, [a.status_code for a in attempts]
    assert limited[0].json()["error"]["code"] == "rate_limited"
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert {a.status_code for a in attempts} <= {401, 429}
    await asyncio.sleep(1.0)


async def test_openapi_documents_reads_and_writes(exchange: Exchange) -> None:
    document = (await exchange.http.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths["/v1/orders"]) == {"get", "post", "delete"}
    assert set(paths["/v1/orders/{order_id}"]) == {"get", "delete", "patch"}
    for path in (
        "/v1/users",
        "/v1/sessions",
        "/v1/api-keys",
        "/v1/admin/deposits",
        "/v1/admin/markets",
    ):
        assert "post" in paths[path]
    assert "/v1/withdrawals" in paths
    refs = orjson.dumps(document).decode()
    for name in ("NewOrder", "OrderResult", "Session", "ApiKey", "Balance", "Error", "NewMarket"):
        assert f'"#/components/schemas/{name}"' in refs
        assert name in document["components"]["schemas"]


async def test_operators_are_added_from_the_command_line(exchange: Exchange) -> None:
    def add(email: str, password: str, *flags: str) -> Any:
        arguments = ("operator", "add", "--email", email, "--password", password, *flags)
        return bitex_cli(exchange.topics, *arguments)

    again = await add(OPERATOR, PASSWORD)
    assert again.returncode == 1
    assert "email_taken" in again.stderr
    exist_ok = await add(OPERATOR.upper(), PASSWORD, "--exist-ok")
    assert exist_ok.returncode == 0
    assert exist_ok.stdout.strip() == f"operator {OPERATOR} exists already"
    assert (await add("x@example.com", "short")).returncode == 2

    operator = await exchange.login(OPERATOR)
    registered, _ = await exchange.user()
    body = {"account_id": registered["account_id"], "asset": "BTC", "amount": "1", "tx_id": "cli"}
    deposit = await exchange.http.post("/v1/admin/deposits", json=body, headers=operator)
    assert deposit.status_code == 201, deposit.text


async def test_the_api_is_alive_and_ready_when_its_services_answer(exchange: Exchange) -> None:
    alive = await exchange.http.get("/healthz")
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    ready = await exchange.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"mysql": "ok", "redis": "ok", "kafka": "ok"}


async def test_metrics_count_requests_by_route_and_orders_by_outcome(exchange: Exchange) -> None:
    registered, auth = await exchange.user()
    await exchange.deposit(registered["email"], "USDT", "100")
    order = {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "10", "quantity": "1"}
    assert (await exchange.http.post("/v1/orders", json=order, headers=auth)).status_code == 201
    exposed = (await exchange.http.get("/metrics")).text
    assert 'bitex_http_requests_total{method="POST",route="/v1/orders",status="201"}' in exposed
    assert 'bitex_orders_total{outcome="accepted"}' in exposed
