"""The command gateway: the write half of the HTTP API.

Each request is authenticated, rate-limited, checked (syntax and market
rules) and only then turned into exactly one command, stamped and published
to the account's inbox; the gateway awaits the outcome within a bound. Bad
input is refused before anything is published, so it changes nothing.

After an outcome the gateway waits (again within a bound) until both read
models have applied the versions the outcome names, so the caller's next GET
on the query gateway reflects what it just did. An order may ask for
``"response_type": "ack"`` instead (202 as soon as Kafka has the command) or
``"result"`` (the outcome without waiting for the read models).

``bitex serve`` runs it together with the query gateway on one base URL
(``infra.api``); ``create_app`` is the factory when it runs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from commands.bodies import Body, parse_object, refusal
from commands.openapi import write_document
from domain.aggregates import order_id_for
from domain.errors import DomainError
from domain.markets import (
    DECIMAL_FIELDS,
    MARKET_FIELDS,
    Market,
    asset_conflicts,
    market_from_fields,
)
from domain.matching import SelfTradePrevention, Side, TimeInForce
from domain.money import Asset
from domain.orders import OrderType, validate_order
from domain.users import Role, normal_email, permissions_text, user_account_id, user_id_for
from infra import messages
from infra.auth import (
    Authenticator,
    AuthError,
    Principal,
    api_key_secret,
    bearer_token,
    close_session,
    hash_password,
    load_master_key,
    open_session,
    session_principal,
    session_seconds,
    sha256_hex,
    verify_password,
)
from infra.command_client import CommandClient, new_command_id
from infra.formats import amount_text
from infra.health import Check, health_routes, mysql_check
from infra.http import (
    EXCEPTION_HANDLERS,
    ApiError,
    BodyLimit,
    JSONResponse,
    bad_request,
    path_with_query,
)
from infra.market_listing import MarketCatalog, listing_command, market_json
from infra.metrics import RequestMetrics, metrics_route, orders_counted
from infra.mysql import create_engine
from infra.rate_limits import Limits, RateLimiter
from infra.read_models import users
from infra.read_your_writes import ReadYourWrites
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from infra.topics import TopicMap
from infra.tracing import TraceRequests, setup_tracing

MAX_BODY_BYTES = 16 * 1024
MIN_PASSWORD = 8
MAX_PASSWORD = 256
CLIENT_ORDER_ID_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:"
)

STATUS_OF_CODE = {
    "email_taken": 409,
    "market_exists": 409,
    "asset_scale_conflict": 409,
    "order_not_open": 409,
    "order_changed": 409,
    "amend_in_progress": 409,
    "too_many_api_keys": 409,
    "order_not_found": 404,
    "api_key_not_found": 404,
    "unknown_account": 404,
    "unknown_user": 404,
}
"""The HTTP status of a write side refusal; any other code is a 400."""

ORDER_FIELDS = (
    "symbol",
    "side",
    "type",
    "price",
    "quantity",
    "quote_quantity",
    "time_in_force",
    "post_only",
    "client_order_id",
    "self_trade_prevention",
    "response_type",
)


class ResponseType(StrEnum):
    """How long an order's answer waits (Binance's newOrderRespType, one step further)."""

    ACK = "ack"
    """202 once Kafka has the command."""
    RESULT = "result"
    """The outcome, as soon as it comes."""
    FULL = "full"
    """The outcome, once the read models reflect it (the default: read-your-writes)."""


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class CommandGateway:
    """The endpoints, and what they share once the app has started."""

    def __init__(
        self,
        settings: Settings,
        topics: TopicMap,
        keys: RedisKeys,
        markets: dict[str, Market],
        master_key: bytes | None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.keys = keys
        self.catalog = MarketCatalog(markets)
        self.markets = self.catalog.markets
        self.assets: dict[str, Asset] = {}
        for market in markets.values():
            self._learn_assets(market)
        self.catalog.on_new(self._learn_assets)
        self.master_key = master_key
        self.outcome_timeout = _seconds("BITEX_COMMAND_TIMEOUT", 5.0)
        self.read_timeout = _seconds("BITEX_READ_YOUR_WRITES_TIMEOUT", 2.0)
        self.session_seconds = session_seconds()
        self._started: _Started | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(self.settings, pool_size=10, max_overflow=10)
        redis = create_redis(self.settings)
        client = CommandClient(self.settings, self.topics)
        read_your_writes = ReadYourWrites(engine, redis, self.keys)
        try:
            master_key = self.master_key or load_master_key(self.settings)
            await self.catalog.start(engine)
            await client.start()
            self._started = _Started(
                engine,
                redis,
                client,
                Authenticator(engine, redis, self.keys, master_key),
                RateLimiter(redis, self.keys, Limits.from_env()),
                read_your_writes,
                master_key,
            )
            yield
        finally:
            self._started = None
            await read_your_writes.close()
            await client.stop()
            await redis.aclose()
            engine.dispose()

    def readiness(self) -> dict[str, Check]:
        """What this gateway needs to answer (nothing while it is not started)."""
        s = self._started
        if s is None:
            return {}
        return {"mysql": mysql_check(s.engine), "redis": s.redis.ping, "kafka": s.client.ping}

    @property
    def started(self) -> _Started:
        assert self._started is not None, "the app has not started (run its lifespan)"
        return self._started

    # -- shared steps -------------------------------------------------------------

    async def caller(self, request: Request, permission: str | None) -> tuple[Principal, bytes]:
        """Who is asking (rate-limited per address and per key or user), and the body.

        A request that fails authentication still counts against its address.
        """
        address = _address(request)
        raw = await request.body()
        authorization = request.headers.get("authorization")
        if authorization is not None:  # a bearer token wins over a signature
            principal = await self._session_caller(authorization, address)
        else:
            principal = await self._signed_caller(request, raw, address)
        if permission is not None:
            principal.require(permission)
        return principal, raw

    async def _session_caller(self, authorization: str, address: str) -> Principal:
        """A bearer session's caller: the session read and both limits counted in one
        round trip (the hot path: most requests carry a session)."""
        limiter = self.started.limiter
        try:
            token = bearer_token(authorization)
        except AuthError:
            await limiter.check(("ip", address, limiter.limits.per_ip))
            raise
        return session_principal(
            await limiter.session(self.keys.session(sha256_hex(token)), address)
        )

    async def _signed_caller(self, request: Request, raw: bytes, address: str) -> Principal:
        """A signed request's caller (or the 401 of a request with no credentials); both
        limits are counted in one round trip once the caller is known."""
        s = self.started
        limits = s.limiter.limits
        per_address = ("ip", address, limits.per_ip)
        try:
            principal = await s.authenticator.authenticate(
                request.method, path_with_query(request), raw, request.headers
            )
        except AuthError:
            await s.limiter.check(per_address)
            raise
        subject = principal.key_id or f"user:{principal.user_id}"
        await s.limiter.check(per_address, ("key", subject, limits.per_key))
        return principal

    async def anonymous(self, request: Request) -> bytes:
        """The body of a registration or login, rate-limited per address (argon2 is costly)."""
        s = self.started
        address = _address(request)
        limits = s.limiter.limits
        await s.limiter.check(("ip", address, limits.per_ip), ("auth", address, limits.auth_per_ip))
        return await request.body()

    async def execute(
        self, command: messages.Command, read_your_writes: bool = True
    ) -> dict[str, Any] | None:
        """Publish, await the outcome and then (unless told not to) the read models;
        None if the outcome is late. A refusal raises the matching 4xx."""
        outcome = await self.started.client.execute(command, self.outcome_timeout)
        if outcome is None:
            return None
        if not outcome.ok:
            code = outcome.code or "refused"
            status = STATUS_OF_CODE.get(code, 400)
            raise ApiError(status, code, outcome.message or code)
        details = dict(outcome.details)
        written = details.pop("written", {})
        if read_your_writes:
            await self.started.read_your_writes.wait(written, self.read_timeout)
        return details

    def order_view(self, details: dict[str, Any]) -> dict[str, Any]:
        """An order outcome with amounts at the API's scales, as the query gateway writes them."""
        market = self.markets.get(str(details.get("symbol")))
        if market is None:
            return details
        scales = {
            "price": market.price_scale,
            "remaining": market.base.scale,
            "filled_quantity": market.base.scale,
            "filled_notional": market.quote.scale,
            "quantity": market.base.scale,
        }

        def scaled(fields: dict[str, Any]) -> dict[str, Any]:
            return {
                name: amount_text(Decimal(value), scales[name])
                if name in scales and value is not None
                else value
                for name, value in fields.items()
            }

        view = scaled(details)
        if "fills" in details:
            view["fills"] = [scaled(fill) for fill in details["fills"]]
        return view

    def answer(self, details: dict[str, Any] | None, pending: dict[str, Any]) -> Response:
        return _pending(pending) if details is None else JSONResponse(self.order_view(details))

    def _learn_assets(self, market: Market) -> None:
        for asset in (market.base, market.quote):
            self.assets.setdefault(asset.code, asset)

    async def market(self, symbol: str | None) -> Market:
        market = await self.catalog.find(symbol or "")
        if market is None:
            raise bad_request("unknown_market", f"unknown market {symbol!r}")
        return market

    async def asset_amount(self, body: Body) -> tuple[Asset, str]:
        code = body.required_text("asset", 12)
        if code not in self.assets:
            await self.catalog.refresh()  # its market may be listed since
        asset = self.assets.get(code)
        if asset is None:
            raise bad_request("unknown_asset", f"unknown asset {code!r}")
        amount = body.required_decimal("amount")
        try:
            asset.to_units(amount)
        except DomainError as error:
            raise refusal(error) from None
        return asset, format(amount, "f")

    # -- users, sessions, API keys ---------------------------------------------

    async def register(self, request: Request) -> Response:
        body = Body(parse_object(await self.anonymous(request)), ("email", "password"))
        email, password = _email(body), _password(body)
        password_hash = await asyncio.to_thread(hash_password, password)
        user_id = user_id_for(email)
        account_id = user_account_id(user_id)
        command = registration(email, password_hash, Role.USER)
        if await self.execute(command) is None:
            return _pending({"user_id": str(user_id), "account_id": str(account_id)})
        return JSONResponse(
            {
                "user_id": str(user_id),
                "email": email,
                "account_id": str(account_id),
                "role": "user",
            },
            status_code=201,
        )

    async def login(self, request: Request) -> Response:
        body = Body(parse_object(await self.anonymous(request)), ("email", "password"))
        email, password = _email(body), body.required_text("password", MAX_PASSWORD)
        row = await asyncio.to_thread(_user_row, self.started.engine, email)
        ok = await asyncio.to_thread(verify_password, row.password_hash if row else None, password)
        if row is None or not ok:
            raise AuthError("invalid_credentials", "the e-mail address or password is wrong")
        session = await open_session(
            self.started.redis,
            self.keys,
            user_id=row.user_id,
            account_id=row.account_id,
            role=row.role,
            email=row.email,
            seconds=self.session_seconds,
        )
        return JSONResponse(
            {
                "token": session.token,
                "token_type": "bearer",
                "expires_in": session.expires_in,
                "user_id": row.user_id,
                "account_id": row.account_id,
                "role": row.role,
            },
            status_code=201,
        )

    async def logout(self, request: Request) -> Response:
        principal, _ = await self.caller(request, None)
        if principal.via != "session":
            raise AuthError("session_required", "log out with the session's bearer token", 403)
        token = request.headers["authorization"].partition(" ")[2].strip()
        await close_session(self.started.redis, self.keys, token)
        return Response(status_code=204)

    async def create_api_key(self, request: Request) -> Response:
        principal, raw = await self.caller(request, None)
        if principal.via != "session":
            raise AuthError("session_required", "API keys are created with a session", 403)
        body = Body(parse_object(raw), ("permissions", "label"))
        try:
            permissions = permissions_text(body.strings("permissions"))
        except DomainError as error:
            raise refusal(error) from None
        label = body.text("label", required=False, max_length=100) or ""
        command = CommandClient.stamp(
            messages.CREATE_API_KEY,
            UUID(principal.account_id),
            {"user_id": principal.user_id, "permissions": permissions.split(","), "label": label},
        )
        details = await self.execute(command)
        if details is None:
            raise ApiError(503, "try_again", "the key was not confirmed in time; list your keys")
        key_id = str(details["result"])
        return JSONResponse(
            {
                "key_id": key_id,
                "secret": api_key_secret(self.started.master_key, key_id),
                "permissions": permissions.split(","),
                "label": label,
            },
            status_code=201,
        )

    async def revoke_api_key(self, request: Request) -> Response:
        principal, _ = await self.caller(request, None)
        if principal.via != "session":
            raise AuthError("session_required", "API keys are revoked with a session", 403)
        key_id = request.path_params["key_id"]
        if len(key_id) > 64:
            raise ApiError(404, "api_key_not_found", f"no API key {key_id!r}")
        command = CommandClient.stamp(
            messages.REVOKE_API_KEY,
            UUID(principal.account_id),
            {"user_id": principal.user_id, "key_id": key_id},
        )
        details = await self.execute(command)
        self.started.authenticator.forget(key_id)
        if details is None:
            return _pending({"key_id": key_id})
        return JSONResponse({"key_id": key_id, "status": "revoked"})

    # -- orders -------------------------------------------------------------------

    async def place_order(self, request: Request) -> Response:
        principal, raw = await self.caller(request, "trade")
        body = Body(parse_object(raw), ORDER_FIELDS)
        market = await self.market(body.required_text("symbol", 32))
        account_id = UUID(principal.account_id)
        client_order_id = _client_order_id(body)
        side = body.choice("side", Side)
        order_type = body.choice("type", OrderType)
        price, quantity = body.decimal("price"), body.decimal("quantity")
        quote_quantity = body.decimal("quote_quantity")
        time_in_force = body.optional_choice("time_in_force", TimeInForce)
        post_only = body.flag("post_only")
        stp = body.optional_choice("self_trade_prevention", SelfTradePrevention)
        response_type = body.optional_choice("response_type", ResponseType)
        command_id = new_command_id()
        order_id = order_id_for(account_id, client_order_id, command_id)
        try:
            validate_order(
                market,
                order_id=order_id,
                account_id=account_id,
                side=side,
                type=order_type,
                price=price,
                quantity=quantity,
                quote_quantity=quote_quantity,
                time_in_force=time_in_force,
                post_only=post_only,
                stp=stp or SelfTradePrevention.CANCEL_TAKER,
                client_order_id=client_order_id,
            )
        except DomainError as error:
            raise refusal(error) from None
        fields = {
            "symbol": market.symbol,
            "side": side.value,
            "type": order_type.value,
            "price": _text(price),
            "quantity": _text(quantity),
            "quote_quantity": _text(quote_quantity),
            "time_in_force": None if time_in_force is None else time_in_force.value,
            "post_only": post_only,
            "stp": None if stp is None else stp.value,
            "client_order_id": client_order_id,
        }
        command = CommandClient.stamp(messages.PLACE_ORDER, account_id, fields, command_id)
        accepted = {"order_id": str(order_id), "client_order_id": client_order_id}
        if response_type is ResponseType.ACK:
            await self.started.client.publish(command)
            orders_counted("published").inc()
            return _pending(accepted)
        details = await self.execute(command, response_type is not ResponseType.RESULT)
        if details is None:
            orders_counted("pending").inc()
            return _pending(accepted)
        orders_counted("rejected" if details.get("status") == "rejected" else "accepted").inc()
        order = self.order_view(details)
        return JSONResponse({**order, "client_order_id": client_order_id}, status_code=201)

    async def cancel_order(self, request: Request) -> Response:
        principal, _ = await self.caller(request, "trade")
        order_id = _order_id(request.path_params["order_id"])
        command = CommandClient.stamp(
            messages.CANCEL_ORDER, UUID(principal.account_id), {"order_id": str(order_id)}
        )
        return self.answer(await self.execute(command), {"order_id": str(order_id)})

    async def cancel_all(self, request: Request) -> Response:
        principal, _ = await self.caller(request, "trade")
        symbol = request.query_params.get("symbol")
        if symbol is None:
            raise bad_request("missing_parameter", "cancelling all orders needs ?symbol=")
        market = await self.market(symbol)
        command = CommandClient.stamp(
            messages.CANCEL_ALL, UUID(principal.account_id), {"symbol": market.symbol}
        )
        return self.answer(await self.execute(command), {"symbol": market.symbol})

    async def amend_order(self, request: Request) -> Response:
        principal, raw = await self.caller(request, "trade")
        order_id = _order_id(request.path_params["order_id"])
        body = Body(parse_object(raw), ("price", "quantity"))
        price, quantity = body.decimal("price"), body.required_decimal("quantity")
        command = CommandClient.stamp(
            messages.AMEND_ORDER,
            UUID(principal.account_id),
            {"order_id": str(order_id), "price": _text(price), "quantity": _text(quantity)},
        )
        return self.answer(await self.execute(command), {"order_id": str(order_id)})

    # -- funds ------------------------------------------------------------------------

    async def deposit(self, request: Request) -> Response:
        principal, raw = await self.caller(request, "trade")
        if principal.role != Role.OPERATOR:
            raise AuthError("forbidden", "deposits are made by operators", 403)
        body = Body(parse_object(raw), ("account_id", "email", "asset", "amount", "tx_id"))
        account_id = _deposit_account(body)
        asset, amount = await self.asset_amount(body)
        tx_id = body.required_text("tx_id")
        command = CommandClient.stamp(
            messages.DEPOSIT,
            account_id,
            {"asset": asset.code, "amount": amount, "tx_id": tx_id},
            command_id=f"deposit:{account_id}:{tx_id}",
        )
        deposit = {"account_id": str(account_id), "asset": asset.code, "amount": amount}
        details = await self.execute(command)
        if details is None:
            return _pending({**deposit, "tx_id": tx_id})
        status = str(details["result"])
        return JSONResponse(
            {**deposit, "tx_id": tx_id, "status": status},
            status_code=201 if status == "credited" else 200,
        )

    async def list_market(self, request: Request) -> Response:
        """List a market (operators): its rules pass the domain's own ``Market`` first.
        The same market again answers 200 and changes nothing; other rules under a
        listed symbol are refused (409)."""
        principal, raw = await self.caller(request, "trade")
        if principal.role != Role.OPERATOR:
            raise AuthError("forbidden", "markets are listed by operators", 403)
        market = _market(Body(parse_object(raw), MARKET_FIELDS))
        listed = await self.catalog.find(market.symbol)
        if listed is not None:
            if listed != market:
                msg = f"market {market.symbol} is listed already, with other rules"
                raise ApiError(409, "market_exists", msg)
            return JSONResponse(market_json(listed))
        conflict = asset_conflicts(market, self.assets)
        if conflict is not None:
            raise ApiError(409, "asset_scale_conflict", conflict)
        details = await self.execute(listing_command(market, UUID(principal.account_id)))
        if details is None:
            return _pending(market_json(market))
        self.catalog.learn(market)
        status = 201 if details["result"] == "listed" else 200
        return JSONResponse(market_json(market), status_code=status)

    async def withdraw(self, request: Request) -> Response:
        principal, raw = await self.caller(request, "withdraw")
        body = Body(parse_object(raw), ("asset", "amount", "withdrawal_id"))
        asset, amount = await self.asset_amount(body)
        withdrawal_id = body.text("withdrawal_id", required=False) or uuid4().hex
        command = CommandClient.stamp(
            messages.WITHDRAW,
            UUID(principal.account_id),
            {"asset": asset.code, "amount": amount, "withdrawal_id": withdrawal_id},
        )
        withdrawal = {"withdrawal_id": withdrawal_id, "asset": asset.code, "amount": amount}
        details = await self.execute(command)
        if details is None:
            return _pending(withdrawal)
        status = str(details["result"])
        return JSONResponse(
            {**withdrawal, "status": status}, status_code=201 if status == "debited" else 200
        )

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(write_document())

    def routes(self) -> list[Route]:
        return [
            Route("/v1/users", self.register, methods=["POST"]),
            Route("/v1/sessions", self.login, methods=["POST"]),
            Route("/v1/sessions", self.logout, methods=["DELETE"]),
            Route("/v1/api-keys", self.create_api_key, methods=["POST"]),
            Route("/v1/api-keys/{key_id}", self.revoke_api_key, methods=["DELETE"]),
            Route("/v1/orders", self.place_order, methods=["POST"]),
            Route("/v1/orders", self.cancel_all, methods=["DELETE"]),
            Route("/v1/orders/{order_id}", self.cancel_order, methods=["DELETE"]),
            Route("/v1/orders/{order_id}", self.amend_order, methods=["PATCH"]),
            Route("/v1/admin/deposits", self.deposit, methods=["POST"]),
            Route("/v1/admin/markets", self.list_market, methods=["POST"]),
            Route("/v1/withdrawals", self.withdraw, methods=["POST"]),
        ]


@dataclass(frozen=True, slots=True)
class _Started:
    """What exists only while the app runs."""

    engine: Engine
    redis: aioredis.Redis
    client: CommandClient
    authenticator: Authenticator
    limiter: RateLimiter
    read_your_writes: ReadYourWrites
    master_key: bytes


def registration(email: str, password_hash: str, role: Role) -> messages.Command:
    """The command that registers a user (the gateway's and ``bitex operator add``'s)."""
    user_id = user_id_for(email)
    return CommandClient.stamp(
        messages.REGISTER_USER,
        user_account_id(user_id),
        {
            "user_id": str(user_id),
            "email": normal_email(email),
            "password_hash": password_hash,
            "role": role.value,
        },
    )


def _address(request: Request) -> str:
    """The client's address, as ``request.client.host`` says it (without making the
    ``Address`` it is read from)."""
    client = request.scope.get("client")
    return "unknown" if client is None else str(client[0])


def _email(body: Body) -> str:
    try:
        return normal_email(body.required_text("email", 254))
    except DomainError as error:
        raise refusal(error) from None


def _password(body: Body) -> str:
    password = body.required_text("password", MAX_PASSWORD)
    if len(password) < MIN_PASSWORD:
        msg = f"a password needs at least {MIN_PASSWORD} characters"
        raise bad_request("weak_password", msg)
    return password


@dataclass(frozen=True, slots=True)
class _UserRow:
    user_id: str
    email: str
    password_hash: str
    role: str
    account_id: str


def _user_row(engine: Engine, email: str) -> _UserRow | None:
    query = select(
        users.c.user_id, users.c.email, users.c.password_hash, users.c.role, users.c.account_id
    ).where(users.c.email == email)
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return None if row is None else _UserRow(*row)


def _client_order_id(body: Body) -> str | None:
    value = body.text("client_order_id", required=False, max_length=64)
    if value is not None and not set(value) <= CLIENT_ORDER_ID_CHARS:
        msg = "client_order_id takes letters, digits and - _ . : only"
        raise bad_request("invalid_value", msg)
    return value


def _order_id(raw: str) -> UUID:
    try:
        order_id = UUID(raw)
    except ValueError:
        raise ApiError(404, "order_not_found", f"no order {raw!r}") from None
    if str(order_id) != raw.lower():
        raise ApiError(404, "order_not_found", f"no order {raw!r}")
    return order_id


def _deposit_account(body: Body) -> UUID:
    account, email = body.text("account_id", required=False), body.text("email", required=False)
    if (account is None) == (email is None):
        raise bad_request("missing_field", "name the account: account_id or email (one of them)")
    if email is not None:
        try:
            return user_account_id(user_id_for(email))
        except DomainError as error:
            raise refusal(error) from None
    try:
        return UUID(str(account))
    except ValueError:
        raise bad_request("invalid_value", f"account_id is not an id: {account!r}") from None


def _market(body: Body) -> Market:
    """The market a listing's body defines, checked by the domain's own rules."""
    fields: dict[str, object] = {
        "base": body.required_text("base", 12),
        "base_scale": body.integer("base_scale", 0, 18),
        "quote": body.required_text("quote", 12),
        "quote_scale": body.integer("quote_scale", 0, 18),
    }
    for name in DECIMAL_FIELDS:
        fields[name] = body.decimal(name, required=True, positive=False)
    try:
        return market_from_fields(fields)
    except ValueError as error:
        raise bad_request("invalid_market", str(error)) from None


def _text(value: Any) -> str | None:
    return None if value is None else format(value, "f")


def _pending(body: dict[str, Any]) -> Response:
    return JSONResponse({**body, "status": "pending"}, status_code=202)


def create_app(
    settings: Settings | None = None,
    topics: TopicMap | None = None,
    keys: RedisKeys | None = None,
    markets: dict[str, Market] | None = None,
    *,
    master_key: bytes | None = None,
) -> Starlette:
    """The command gateway's ASGI app (defaults from the environment, like the query's)."""
    setup_tracing("bitex-commands")
    gateway = command_gateway(settings, topics, keys, markets, master_key=master_key)
    app = Starlette(
        routes=[
            *gateway.routes(),
            Route("/openapi.json", gateway.openapi),
            *health_routes(gateway.readiness),
            metrics_route(),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=gateway.lifespan,
        middleware=[
            Middleware(RequestMetrics),
            Middleware(TraceRequests),
            Middleware(BodyLimit, max_bytes=MAX_BODY_BYTES),
        ],
    )
    app.state.gateway = gateway
    return app


def command_gateway(
    settings: Settings | None = None,
    topics: TopicMap | None = None,
    keys: RedisKeys | None = None,
    markets: dict[str, Market] | None = None,
    *,
    master_key: bytes | None = None,
) -> CommandGateway:
    topic_map = topics or TopicMap.from_env()
    return CommandGateway(
        settings or Settings.from_env(),
        topic_map,
        keys or RedisKeys.for_prefix(topic_map.prefix),
        {} if markets is None else markets,
        master_key,
    )
