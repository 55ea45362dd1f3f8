"""Listing a market at runtime, end to end: an operator lists ``SOL-USDT`` over HTTP,
users deposit and trade in it over HTTP, and the audit replays the session clean.

Its own exchange for the module (the processors and projections as processes on
an isolated topic prefix and scratch database, both gateways on one loopback
URL), so that ``bitex replay`` audits exactly this session.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from domain.markets import market_fields
from infra.kafka_io import end_offsets
from infra.market_listing import market_json
from infra.settings import Settings
from infra.topics import TopicMap
from projections.runner import wait_projected
from streams.workers import WriteSide
from tests.integration.conftest import bitex_cli, live_exchange
from tests.workload import SOL_USDT

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "correct horse battery"
OPERATOR = "lister@example.com"
LISTING: dict[str, Any] = dict(market_fields(SOL_USDT))


@dataclass
class Session:
    url: str
    settings: Settings
    topics: TopicMap
    side: WriteSide
    http: httpx.AsyncClient

    async def published(self) -> int:
        """Records on the command and event topics: bad input must add none."""
        topics = self.topics
        ends = await end_offsets(
            self.settings,
            [topics.account_commands, topics.matching_commands, topics.market_events],
        )
        return sum(ends.values())

    async def login(self, email: str) -> dict[str, str]:
        response = await self.http.post("/v1/sessions", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    async def user(self) -> tuple[str, dict[str, str]]:
        email = f"u-{uuid.uuid4().hex[:12]}@example.com"
        response = await self.http.post("/v1/users", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        return email, await self.login(email)

    async def list_market(self, body: Any, auth: dict[str, str]) -> httpx.Response:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return await self.http.post("/v1/admin/markets", content=content, headers=auth)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(
    scratch_db: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Session]:
    topics = TopicMap(prefix=f"it-list-{uuid.uuid4().hex[:10]}-")
    logs = tmp_path_factory.mktemp("logs")
    async with (
        live_exchange(scratch_db, topics, logs, (OPERATOR, PASSWORD)) as (side, url),
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield Session(url, scratch_db, topics, side, http)


BAD_LISTINGS: list[tuple[str, Any, int, str]] = [
    ("not json", b"{nope", 400, "invalid_json"),
    ("unknown field", {**LISTING, "leverage": "10"}, 400, "unknown_field"),
    ("missing tick size", {k: v for k, v in LISTING.items() if k != "tick_size"}, 400,
     "missing_field"),
    ("a float", {**LISTING, "tick_size": 0.001}, 400, "invalid_type"),
    ("a scale as text", {**LISTING, "base_scale": "9"}, 400, "invalid_type"),
    ("a scale too large", {**LISTING, "base_scale": 30}, 400, "invalid_value"),
    ("a lowercase asset", {**LISTING, "base": "sol"}, 400, "invalid_market"),
    ("an asset against itself", {**LISTING, "base": "USDT", "base_scale": 6}, 400,
     "invalid_market"),
    ("tick x lot finer than USDT", {**LISTING, "lot_size": "0.0001", "min_quantity": "0.0001"},
     400, "invalid_market"),
    ("tick finer than the quote scale", {**LISTING, "tick_size": "0.0000001"}, 400,
     "invalid_market"),
    ("a fee of 100%", {**LISTING, "taker_fee": "1"}, 400, "invalid_market"),
    ("a negative minimum notional", {**LISTING, "min_notional": "-1"}, 400, "invalid_market"),
    ("min above max", {**LISTING, "min_quantity": "200000"}, 400, "invalid_market"),
    ("USDT with other decimals", {**LISTING, "quote_scale": 8}, 409, "asset_scale_conflict"),
]  # fmt: skip


async def test_a_plain_user_cannot_list_a_market(session: Session) -> None:
    _, auth = await session.user()
    before = await session.published()
    response = await session.list_market(LISTING, auth)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
    anonymous = await session.http.post("/v1/admin/markets", json=LISTING)
    assert anonymous.status_code == 401
    assert await session.published() == before


@pytest.mark.parametrize(
    ("body", "status", "code"), [pytest.param(*case[1:], id=case[0]) for case in BAD_LISTINGS]
)
async def test_bad_listings_answer_a_clear_4xx_and_publish_nothing(
    session: Session, body: Any, status: int, code: str
) -> None:
    operator = await session.login(OPERATOR)
    before = await session.published()
    response = await session.list_market(body, operator)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert await session.published() == before


async def test_an_operator_lists_a_market_users_trade_in_it_and_the_log_audits_clean(
    session: Session, tmp_path: Path
) -> None:
    http = session.http
    operator = await session.login(OPERATOR)
    seller_email, seller = await session.user()
    buyer_email, buyer = await session.user()
    sell = {"symbol": "SOL-USDT", "side": "sell", "type": "limit", "price": "150", "quantity": "2"}

    # Before the listing the market and its new asset are unknown, everywhere.
    early = await http.post("/v1/orders", json=sell, headers=seller)
    assert (early.status_code, early.json()["error"]["code"]) == (400, "unknown_market")
    deposit = {"email": seller_email, "asset": "SOL", "amount": "10", "tx_id": "sol-early"}
    early = await http.post("/v1/admin/deposits", json=deposit, headers=operator)
    assert (early.status_code, early.json()["error"]["code"]) == (400, "unknown_asset")
    assert (await http.get("/v1/markets/SOL-USDT/book")).status_code == 404
    symbols = {m["symbol"] for m in (await http.get("/v1/markets")).json()["items"]}
    assert symbols == {"BTC-USDT", "ETH-USDT", "ETH-BTC"}  # listed by the harness, by command

    # The listing: 201 with the market as listed; its event is on the log.
    listed = await session.list_market(LISTING, operator)
    assert listed.status_code == 201, listed.text
    assert listed.json() == market_json(SOL_USDT)
    markets = {m["symbol"]: m for m in (await http.get("/v1/markets")).json()["items"]}
    assert markets["SOL-USDT"] == market_json(SOL_USDT)

    # The same listing again changes nothing; other rules under the symbol are refused.
    before = await session.published()
    again = await session.list_market({**LISTING, "tick_size": "0.0010"}, operator)
    assert (again.status_code, again.json()) == (200, market_json(SOL_USDT))
    other = await session.list_market({**LISTING, "max_quantity": "500"}, operator)
    assert (other.status_code, other.json()["error"]["code"]) == (409, "market_exists")
    assert await session.published() == before

    # Users deposit the new asset and trade in the new market, over HTTP.
    for email, asset, amount in ((seller_email, "SOL", "10"), (buyer_email, "USDT", "1000")):
        body = {"email": email, "asset": asset, "amount": amount, "tx_id": f"{asset}-{email}"}
        credited = await http.post("/v1/admin/deposits", json=body, headers=operator)
        assert credited.status_code == 201, credited.text
    resting = await http.post("/v1/orders", json=sell, headers=seller)
    assert resting.status_code == 201, resting.text
    assert resting.json()["status"] == "open"
    book = (await http.get("/v1/markets/SOL-USDT/book")).json()
    assert book["asks"] == [["150.000", "2.000000000"]]  # at the tick and SOL scales
    buy = {**sell, "side": "buy", "price": "150.5"}
    taken = await http.post("/v1/orders", json=buy, headers=buyer)
    assert taken.status_code == 201, taken.text
    assert taken.json()["status"] == "filled"
    assert [fill["price"] for fill in taken.json()["fills"]] == ["150.000"]

    async def settled() -> dict[str, Decimal]:
        items = (await http.get("/v1/balances", headers=buyer)).json()["items"]
        return {b["asset"]: Decimal(b["available"]) for b in items}

    for _ in range(100):
        held = await settled()
        if held.get("SOL"):
            break
        await asyncio.sleep(0.1)
    # 2 SOL less the 0.1% taker fee; 300 USDT spent at the maker's price.
    assert held["SOL"] == Decimal("1.998")
    assert held["USDT"] == Decimal("700")
    trades = (await http.get("/v1/markets/SOL-USDT/trades")).json()["items"]
    assert [(t["price"], t["quantity"]) for t in trades] == [("150.000", "2.000000000")]

    # The auditor: every market comes from the log, and the session replays clean.
    await session.side.wait_idle()
    await wait_projected(session.settings, session.topics, timeout=60)
    report_path = tmp_path / "report.json"
    replay = await bitex_cli(
        session.topics, "replay", "--quiet", "--report", str(report_path), settings=session.settings
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    report = orjson.loads(report_path.read_bytes())
    assert report["ok"] is True
    assert report["violations"] == []
    assert report["state"]["trades"] == 1
    statement = await bitex_cli(
        session.topics, "statement", "--account", "fees", settings=session.settings
    )
    assert statement.returncode == 0, statement.stderr
    assert "SOL" in statement.stdout  # the taker fee, in the asset of the new market
