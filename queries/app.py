"""The query gateway: the read half of the HTTP API, and the WebSocket.

It answers only from the read models: MySQL (history: trades, candles,
orders, fills, ledger, balances) and Redis (hot data: book snapshots,
tickers, sessions, and the pub/sub channels the WebSocket relays). It never
reads Kafka. MySQL is synchronous, so every query runs in one of a few worker
threads (``queries.readers.READ_THREADS``), one query per request.

What every client asks again and again is read in batches
(``queries.readers.Batched``): the Redis GETs of concurrent requests (sessions,
book snapshots, tickers) go as one MGET, the balances of concurrent requests as
one query, and no answer comes from a read sent before its request arrived.
A book's answer at each depth is encoded once per snapshot.

``bitex serve`` runs it with uvicorn (``create_app`` is the factory).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import orjson
import redis.asyncio as aioredis
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from domain.markets import Market
from domain.orders import TERMINAL_STATUSES, OrderStatus
from infra.auth import Authenticator, Principal, load_master_key
from infra.formats import amount_text, moment_text
from infra.health import Check, health_routes, mysql_check
from infra.http import EXCEPTION_HANDLERS, ApiError, JSONResponse, bad_request, path_with_query
from infra.market_listing import MarketCatalog, market_json
from infra.metrics import RequestMetrics, metrics_route
from infra.read_models import CANDLE_INTERVALS
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from infra.topics import TopicMap
from queries import params
from queries.feed import Feed
from queries.openapi import read_document
from queries.readers import READ_THREADS, Batched, BatchedGets, Item, Page, ReadModels, read_engine
from queries.ws import Live, serve

MAX_DEPTH = 1000
DEFAULT_DEPTH = 100
STATUSES: dict[str, frozenset[str] | None] = {
    "open": frozenset(OrderStatus) - TERMINAL_STATUSES,
    "closed": frozenset(TERMINAL_STATUSES),
    "all": None,
}
RENDERED_DEPTHS = 16
"""Encoded answers kept per book snapshot (one per depth asked)."""
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


def page(items: list[dict[str, Any]], next_cursor: str | None = None) -> Response:
    return JSONResponse({"items": items, "next_cursor": next_cursor})


T = TypeVar("T")


class Books:
    """``GET /v1/markets/{symbol}/book`` answers, from the Redis snapshots.

    The snapshot (the best 1000 levels a side) is parsed once per version, and
    the answer at each depth encoded once per version; until the projection
    writes a new snapshot, an answer costs a (batched) Redis read and a
    comparison of bytes.
    """

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._rendered: dict[str, tuple[bytes | None, dict[int, bytes]]] = {}

    async def body(self, symbol: str, depth: int) -> bytes:
        raw = await self.redis.get(self.keys.book_snapshot(symbol))
        if isinstance(raw, str):
            raw = raw.encode()
        rendered = self._rendered.get(symbol)
        if rendered is None or not (rendered[0] is raw or rendered[0] == raw):
            rendered = self._rendered[symbol] = (raw, {})
        bodies = rendered[1]
        body = bodies.get(depth)
        if body is None:
            if len(bodies) >= RENDERED_DEPTHS:
                bodies.clear()
            body = bodies[depth] = self._render(symbol, raw, depth)
        return body

    @staticmethod
    def _render(symbol: str, raw: bytes | None, depth: int) -> bytes:
        if raw is None:
            return orjson.dumps({"symbol": symbol, "sequence": 0, "bids": [], "asks": []})
        snapshot = orjson.loads(raw)
        return orjson.dumps(
            {
                "symbol": symbol,
                "sequence": snapshot["sequence"],
                "bids": snapshot["bids"][:depth],
                "asks": snapshot["asks"][:depth],
            }
        )


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
        self.catalog = MarketCatalog(markets)
        self.markets = self.catalog.markets
        self.master_key = master_key
        self.openapi_body = orjson.dumps(read_document())
        self._engine: Engine | None = None
        self._redis: aioredis.Redis | None = None
        self._live: Live | None = None
        self._read: ReadModels | None = None
        self._books: Books | None = None
        self._balances: Batched[str, list[Item]] | None = None
        self._threads: ThreadPoolExecutor | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        engine = read_engine(self.settings)
        redis = create_redis(self.settings, BatchedGets)
        feed = Feed(self.settings.redis_url)
        threads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="mysql-read")
        read = ReadModels(engine, self.markets)
        self.catalog.on_new(read.learn)

        async def balances_of(account_ids: list[str]) -> dict[str, list[Item]]:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(threads, read.balances_of, account_ids)

        balances: Batched[str, list[Item]] = Batched(balances_of)
        try:
            master_key = self.master_key or load_master_key(self.settings)
            await self.catalog.start(engine)
            await feed.start()
            self._engine, self._redis, self._threads = engine, redis, threads
            self._read, self._balances = read, balances
            self._books = Books(redis, self.keys)
            authenticator = Authenticator(engine, redis, self.keys, master_key)
            self._live = Live(
                feed, redis, self.keys, self.markets, authenticator, self.catalog.find
            )
            # Everything alive now (modules, the app, pools) lives as long as the
            # process: keep it out of the garbage collector's full passes, which
            # otherwise walk it all again and again under load (10-20% of a
            # request's time here). Undone when the app stops.
            gc.collect()
            gc.freeze()
            yield
        finally:
            gc.unfreeze()
            self._live = self._read = self._books = self._balances = None
            await balances.close()
            await feed.close()
            await redis.aclose()
            self._threads = None
            threads.shutdown(wait=False, cancel_futures=True)
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

    @property
    def books(self) -> Books:
        assert self._books is not None, "the app has not started (run its lifespan)"
        return self._books

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """Run a MySQL read on one of the read threads."""
        assert self._threads is not None, "the app has not started (run its lifespan)"
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)

    async def market(self, request: Request) -> Market:
        symbol = request.path_params["symbol"]
        market = await self.catalog.find(symbol)
        if market is None:
            raise ApiError(404, "unknown_market", f"unknown market {symbol!r}")
        return market

    async def market_filter(self, request: Request) -> str | None:
        symbol = request.query_params.get("symbol")
        if symbol is not None and await self.catalog.find(symbol) is None:
            raise ApiError(400, "unknown_market", f"unknown market {symbol!r}")
        return symbol

    async def caller(self, request: Request) -> Principal:
        headers = request.headers
        # A request with neither header has no body (RFC 9112 6.3): nothing to wait for.
        has_body = "content-length" in headers or "transfer-encoding" in headers
        body = await request.body() if has_body else b""
        principal = await self.live.authenticator.authenticate(
            request.method, path_with_query(request), body, headers
        )
        principal.require("read")
        return principal

    async def _page(
        self, reader: Callable[..., Page], cursor: params.CursorShape, *args: Any
    ) -> Response:
        items, last = await self.in_thread(reader, *args)
        return page(items, None if last is None else cursor.encode(last))

    # -- public -------------------------------------------------------------------

    async def list_markets(self, request: Request) -> Response:
        """Every listed market: read again each time (a handful of rows), so a market
        appears as soon as the read model has its listing."""
        await self.catalog.reload()
        items = [market_json(market) for market in self.markets.values()]  # as listed
        return page(items)

    async def book(self, request: Request) -> Response:
        market = await self.market(request)
        depth = params.integer(
            request.query_params, "depth", DEFAULT_DEPTH, 1, MAX_DEPTH, "bad_depth"
        )
        body = await self.books.body(market.symbol, depth)
        return Response(body, media_type="application/json")

    async def trades(self, request: Request) -> Response:
        market = await self.market(request)
        query = request.query_params
        return await self._page(
            self.read.trades,
            params.TRADES,
            market.symbol,
            params.limit(query),
            params.TRADES.decode(query),
        )

    async def ticker(self, request: Request) -> Response:
        market = await self.market(request)
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
        market = await self.market(request)
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
        assert self._balances is not None, "the app has not started (run its lifespan)"
        return page(await self._balances.get(caller.account_id))

    async def orders(self, request: Request) -> Response:
        caller = await self.caller(request)
        query = request.query_params
        symbol = await self.market_filter(request)
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
            found = await self.in_thread(self.read.order, caller.account_id, order_id)
        if found is None:
            raise ApiError(404, "order_not_found", f"no order {order_id!r}")
        return JSONResponse(found)

    async def fills(self, request: Request) -> Response:
        caller = await self.caller(request)
        query = request.query_params
        symbol = await self.market_filter(request)
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

    def readiness(self) -> dict[str, Check]:
        """What this gateway needs to answer (nothing while it is not started)."""
        if self._engine is None or self._redis is None:
            return {}
        return {"mysql": mysql_check(self._engine), "redis": self._redis.ping}

    def routes(self) -> list[Route | WebSocketRoute]:
        # The router tries routes in order and no two paths overlap: the most
        # requested come first.
        return [
            Route("/v1/markets/{symbol}/book", self.book),
            Route("/v1/balances", self.balances),
            Route("/v1/markets/{symbol}/ticker", self.ticker),
            Route("/v1/markets/{symbol}/trades", self.trades),
            Route("/openapi.json", self.openapi),
            Route("/v1/markets", self.list_markets),
            Route("/v1/markets/{symbol}/candles", self.candles),
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
    namespace of ``BITEX_TOPIC_PREFIX``, the markets the read model lists, and the API-key master
    key of ``load_master_key``.
    """
    gateway = query_gateway(settings, keys, markets, master_key=master_key)
    app = Starlette(
        routes=[*gateway.routes(), *health_routes(gateway.readiness), metrics_route()],
        middleware=[Middleware(RequestMetrics)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=gateway.lifespan,
        max_body_size=64 * 1024,
    )
    app.state.gateway = gateway
    return app


def query_gateway(
    settings: Settings | None = None,
    keys: RedisKeys | None = None,
    markets: dict[str, Market] | None = None,
    *,
    master_key: bytes | None = None,
) -> QueryGateway:
    return QueryGateway(
        settings or Settings.from_env(),
        keys or RedisKeys.for_prefix(TopicMap.from_env().prefix),
        {} if markets is None else markets,
        master_key,
    )
