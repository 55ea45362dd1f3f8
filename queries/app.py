"""The query gateway: the read half of the HTTP API, and the WebSocket.

It answers only from the read models: MySQL (history: trades, candles,
orders, fills, ledger, balances) and Redis (hot data: book snapshots,
tickers, sessions, and the pub/sub channels the WebSocket relays). It never
reads Kafka. MySQL is synchronous, so every query runs in a worker thread,
one query per request.

``bitex serve`` runs it with uvicorn (``create_app`` is the factory).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import redis.asyncio as aioredis
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from domain.markets import Market, demo_markets
from domain.orders import TERMINAL_STATUSES, OrderStatus
from infra.auth import Authenticator, Principal, load_master_key
from infra.formats import amount_text, moment_text
from infra.http import EXCEPTION_HANDLERS, ApiError, JSONResponse, bad_request
from infra.mysql import create_engine
from infra.read_models import CANDLE_INTERVALS
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from infra.topics import TopicMap
from queries import params
from queries.encoding import decimal_text
from queries.feed import Feed
from queries.openapi import document
from queries.readers import Page, ReadModels
from queries.ws import Live, serve

MAX_DEPTH = 1000
DEFAULT_DEPTH = 100
STATUSES: dict[str, frozenset[str] | None] = {
    "open": frozenset(OrderStatus) - TERMINAL_STATUSES,
    "closed": frozenset(TERMINAL_STATUSES),
    "all": None,
}
TICKER_FIELDS = (
    "open",
    "high",
    "low",
    "last",
    "volume",
    "quote_volume",
    "trades",
    "best_bid",
    "best_ask",
    "at",
)


def market_json(market: Market) -> dict[str, Any]:
    return {
        "symbol": market.symbol,
        "base": market.base.code,
        "quote": market.quote.code,
        "price_scale": market.price_scale,
        "base_scale": market.base.scale,
        "quote_scale": market.quote.scale,
        "tick_size": decimal_text(market.tick_size),
        "lot_size": decimal_text(market.lot_size),
        "min_quantity": decimal_text(market.min_quantity),
        "max_quantity": decimal_text(market.max_quantity),
        "min_notional": decimal_text(market.min_notional),
        "maker_fee": decimal_text(market.maker_fee.rate),
        "taker_fee": decimal_text(market.taker_fee.rate),
    }


def path_with_query(request: Request) -> str:
    """The path and query as the client sent them (and signed them)."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    query = request.scope.get("query_string", b"")
    whole = raw + b"?" + query if query else raw
    return bytes(whole).decode("utf-8", "replace")


def page(items: list[dict[str, Any]], next_cursor: str | None = None) -> Response:
    return JSONResponse({"items": items, "next_cursor": next_cursor})


class QueryGateway:
    """The endpoints, and what they share once the app has started."""

    def __init__(
        self,
        settings: Settings,
        keys: RedisKeys,
        markets: dict[str, Market],
        master_key: bytes | None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.markets = markets
        self.master_key = master_key
        self.markets_body = orjson.dumps(
            {"items": [market_json(m) for m in markets.values()], "next_cursor": None}
        )
        self.openapi_body = orjson.dumps(document())
        self._engine: Engine | None = None
        self._redis: aioredis.Redis | None = None
        self._live: Live | None = None
        self._read: ReadModels | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(self.settings, pool_size=10, max_overflow=10)
        redis = create_redis(self.settings)
        feed = Feed(self.settings.redis_url)
        try:
            master_key = self.master_key or load_master_key(self.settings)
            await feed.start()
            self._engine, self._redis = engine, redis
            self._read = ReadModels(engine, self.markets)
            authenticator = Authenticator(engine, redis, self.keys, master_key)
            self._live = Live(feed, redis, self.keys, self.markets, authenticator)
            yield
        finally:
            self._live = self._read = None
            await feed.close()
            await redis.aclose()
            engine.dispose()

    @property
    def live(self) -> Live:
        assert self._live is not None, "the app has not started (run its lifespan)"
        return self._live

    @property
    def read(self) -> ReadModels:
        assert self._read is not None, "the app has not started (run its lifespan)"
        return self._read

    @property
    def redis(self) -> aioredis.Redis:
        return self.live.redis

    def market(self, request: Request) -> Market:
        symbol = request.path_params["symbol"]
        market = self.markets.get(symbol)
        if market is None:
            raise ApiError(404, "unknown_market", f"unknown market {symbol!r}")
        return market

    def market_filter(self, request: Request) -> str | None:
        symbol = request.query_params.get("symbol")
        if symbol is not None and symbol not in self.markets:
            raise ApiError(400, "unknown_market", f"unknown market {symbol!r}")
        return symbol

    async def caller(self, request: Request) -> Principal:
        principal = await self.live.authenticator.authenticate(
            request.method, path_with_query(request), await request.body(), request.headers
        )
        principal.require("read")
        return principal

    async def _page(
        self, reader: Callable[..., Page], cursor: params.CursorShape, *args: Any
    ) -> Response:
        items, last = await run_in_threadpool(reader, *args)
        return page(items, None if last is None else cursor.encode(last))

    # -- public -------------------------------------------------------------------

    async def list_markets(self, request: Request) -> Response:
        return Response(self.markets_body, media_type="application/json")

    async def book(self, request: Request) -> Response:
        market = self.market(request)
        depth = params.integer(
            request.query_params, "depth", DEFAULT_DEPTH, 1, MAX_DEPTH, "bad_depth"
        )
        raw = await self.redis.get(self.keys.book_snapshot(market.symbol))
        if raw is None:
            return JSONResponse({"symbol": market.symbol, "sequence": 0, "bids": [], "asks": []})
        snapshot = orjson.loads(raw)
        return JSONResponse(
            {
                "symbol": market.symbol,
                "sequence": snapshot["sequence"],
                "bids": snapshot["bids"][:depth],
                "asks": snapshot["asks"][:depth],
            }
        )

    async def trades(self, request: Request) -> Response:
        market = self.market(request)
        query = request.query_params
        return await self._page(
            self.read.trades,
            params.TRADES,
            market.symbol,
            params.limit(query),
            params.TRADES.decode(query),
        )

    async def ticker(self, request: Request) -> Response:
        market = self.market(request)
        raw = await self.redis.get(self.keys.ticker(market.symbol))
        stored: dict[str, Any] = {} if raw is None else orjson.loads(raw)
        empty: dict[str, Any] = dict.fromkeys(TICKER_FIELDS)
        empty.update(
            volume=amount_text(Decimal(0), market.base.scale),
            quote_volume=amount_text(Decimal(0), market.quote.scale),
            trades=0,
        )
        body = {"symbol": market.symbol}
        body.update({name: stored.get(name, empty[name]) for name in TICKER_FIELDS})
        body["at"] = _utc_z(body["at"])
        return JSONResponse(body)

    async def candles(self, request: Request) -> Response:
        market = self.market(request)
        query = request.query_params
        interval = params.choice(query, "interval", CANDLE_INTERVALS, None)
        start, end = params.time_param(query, "start"), params.time_param(query, "end")
        if start is not None and end is not None and start > end:
            raise bad_request("bad_parameter", "start must not be after end")
        return await self._page(
            self.read.candles,
            params.CANDLES,
            market.symbol,
            interval,
            start,
            end,
            params.limit(query),
            params.CANDLES.decode(query),
        )

    async def openapi(self, request: Request) -> Response:
        return Response(self.openapi_body, media_type="application/json")

    # -- private --------------------------------------------------------------------

    async def balances(self, request: Request) -> Response:
        caller = await self.caller(request)
        return page(await run_in_threadpool(self.read.balances, caller.account_id))

    async def orders(self, request: Request) -> Response:
        caller = await self.caller(request)
        query = request.query_params
        symbol = self.market_filter(request)
        status = params.choice(query, "status", tuple(STATUSES), "all")
        return await self._page(
            self.read.orders,
            params.ORDERS,
            caller.account_id,
            symbol,
            STATUSES[status],
            params.limit(query),
            params.ORDERS.decode(query),
        )

    async def order(self, request: Request) -> Response:
        caller = await self.caller(request)
        order_id = request.path_params["order_id"]
        found = None
        if _is_uuid(order_id):
            found = await run_in_threadpool(self.read.order, caller.account_id, order_id)
        if found is None:
            raise ApiError(404, "order_not_found", f"no order {order_id!r}")
        return JSONResponse(found)

    async def fills(self, request: Request) -> Response:
        caller = await self.caller(request)
        query = request.query_params
        symbol = self.market_filter(request)
        order_id = query.get("order_id")
        if order_id is not None and not _is_uuid(order_id):
            raise bad_request("bad_parameter", f"order_id must be an order's id, got {order_id!r}")
        return await self._page(
            self.read.fills,
            params.FILLS,
            caller.account_id,
            symbol,
            order_id,
            params.limit(query),
            params.FILLS.decode(query),
        )

    async def ledger(self, request: Request) -> Response:
        caller = await self.caller(request)
        query = request.query_params
        asset = query.get("asset")
        if asset is not None and asset not in self.read.scales:
            raise bad_request("bad_parameter", f"unknown asset {asset!r}")
        return await self._page(
            self.read.ledger,
            params.LEDGER,
            caller.account_id,
            asset,
            params.limit(query),
            params.LEDGER.decode(query),
        )

    # -- live -------------------------------------------------------------------------

    async def websocket(self, websocket: WebSocket) -> None:
        await serve(websocket, self.live)

    def routes(self) -> list[Route | WebSocketRoute]:
        return [
            Route("/openapi.json", self.openapi),
            Route("/v1/markets", self.list_markets),
            Route("/v1/markets/{symbol}/book", self.book),
            Route("/v1/markets/{symbol}/trades", self.trades),
            Route("/v1/markets/{symbol}/ticker", self.ticker),
            Route("/v1/markets/{symbol}/candles", self.candles),
            Route("/v1/balances", self.balances),
            Route("/v1/orders", self.orders),
            Route("/v1/orders/{order_id}", self.order),
            Route("/v1/fills", self.fills),
            Route("/v1/ledger", self.ledger),
            WebSocketRoute("/v1/ws", self.websocket),
        ]


def _utc_z(value: Any) -> Any:
    """An ISO 8601 time written the API's way (``...Z``); anything else as it is."""
    if not isinstance(value, str):
        return value
    try:
        return moment_text(datetime.fromisoformat(value))
    except ValueError:
        return value


def _is_uuid(value: str) -> bool:
    if len(value) != 36:
        return False
    try:
        return str(UUID(value)) == value.lower()
    except ValueError:
        return False


def create_app(
    settings: Settings | None = None,
    keys: RedisKeys | None = None,
    markets: dict[str, Market] | None = None,
    *,
    master_key: bytes | None = None,
) -> Starlette:
    """The query gateway's ASGI app.

    Defaults come from the environment: ``Settings.from_env()``, the Redis
    namespace of ``BITEX_TOPIC_PREFIX``, the demo markets, and the API-key master
    key of ``load_master_key``.
    """
    gateway = QueryGateway(
        settings or Settings.from_env(),
        keys or RedisKeys.for_prefix(TopicMap.from_env().prefix),
        demo_markets() if markets is None else markets,
        master_key,
    )
    app = Starlette(
        routes=gateway.routes(),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=gateway.lifespan,
        max_body_size=64 * 1024,
    )
    app.state.gateway = gateway
    return app
