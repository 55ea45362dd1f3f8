"""``WS /v1/ws``: live books, trades, tickers, and the caller's own orders and balances.

Every message is one JSON object per text frame; a client that connects to
``/v1/ws?batch=true`` gets instead a JSON array of one or more messages per
frame (everything queued for it, up to MAX_BATCH), which is what lets one
gateway serve many subscribers at tens of thousands of messages a second.

Client to server::

    {"op": "subscribe", "channels": ["book:BTC-USDT", "trades:BTC-USDT", "ticker:BTC-USDT"]}
    {"op": "unsubscribe", "channels": ["trades:BTC-USDT"]}
    {"op": "auth", "token": "<bearer token>"}
    {"op": "auth", "key": "<key id>", "ts": <ms>, "sign": "<hex HMAC of ts + 'GET/v1/ws'>"}
    {"op": "ping"}

Server to client::

    {"op": "subscribed", "channels": [...], "subscriptions": [...]}   live from here on
    {"op": "unsubscribed", "channels": [...], "subscriptions": [...]}
    {"op": "authenticated", "user_id": "...", "account_id": "..."}
    {"op": "pong"}
    {"channel": "book:BTC-USDT", "type": "snapshot", "data": {"symbol", "sequence", "bids", "asks"}}
    {"channel": "book:BTC-USDT", "data": {"type": "book", "symbol", "sequence", "bids", "asks"}}
    {"channel": "trades:BTC-USDT" | "ticker:BTC-USDT" | "orders" | "balances", "data": {...}}
    {"error": {"code": "...", "message": "..."}}

``orders`` and ``balances`` need an ``auth`` first (an API key needs the
``read`` permission) and carry only the caller's own account. A subscribe
naming any unknown channel (``unknown_channel``), unknown market
(``unknown_market``) or, unauthenticated, a private channel (``unauthorized``)
is refused whole.

Keeping an order book in sync
-----------------------------

Book levels are ``[price, quantity]`` strings, best first; a diff's levels
replace the quantity at their price, and quantity ``"0"`` removes the level.
Every diff has a ``sequence``, one more than the book's previous change; a
snapshot's ``sequence`` is the last change it includes.

1. Subscribe to ``book:<symbol>``. The server sends the snapshot first, then
   every diff after it in order (diffs at or below the snapshot's sequence are
   already dropped for you).
2. Drop any diff whose ``sequence`` is at or below your book's sequence.
3. Apply a diff whose ``sequence`` is exactly one more, and take its sequence.
4. A diff further ahead means you missed one: resynchronise (unsubscribe and
   subscribe again for a fresh snapshot; or buffer the diffs, fetch
   ``GET /v1/markets/<symbol>/book``, drop buffered diffs at or below its
   ``sequence`` and go on from step 3).
5. If the socket closes (code 1012: the server lost its live feed; 1013: you
   fell more than MAX_QUEUED messages behind; 1001: the server stops),
   reconnect and start over.

The same procedure works from the REST snapshot alone: open the socket and
subscribe first, buffer the diffs, then fetch the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from domain.markets import Market
from infra.auth import Authenticator, AuthError, Principal
from infra.redis_keys import RedisKeys
from queries.feed import Feed, FeedUnavailable, Sink

log = logging.getLogger(__name__)

PUBLIC_KINDS = ("book", "trades", "ticker")
PRIVATE_CHANNELS = ("orders", "balances")
MAX_SUBSCRIPTIONS = 100
MAX_MESSAGE_BYTES = 16 * 1024
MAX_QUEUED = 20_000
"""Frames a client may fall behind by before it is disconnected (code 1013)."""
MAX_BATCH = 1000
"""Messages a frame carries at most in batch mode."""
CLOSING_GRACE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Live:
    """What the WebSocket endpoint needs from the gateway."""

    feed: Feed
    redis: aioredis.Redis
    keys: RedisKeys
    markets: dict[str, Market]
    authenticator: Authenticator
    find_market: Callable[[str], Awaitable[Market | None]] | None = None
    """Looks a market up that ``markets`` lacks (one listed since the gateway started)."""


class WsError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def frame(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def error_frame(code: str, message: str) -> str:
    return frame({"error": {"code": code, "message": message}})


def empty_book(symbol: str) -> dict[str, Any]:
    return {"symbol": symbol, "sequence": 0, "bids": [], "asks": []}


class BookSync:
    """A book subscription until it is in step with its snapshot.

    While the snapshot is read it holds the channel's diffs. Once the snapshot
    is queued, it passes on only the diffs after it, and at the first such diff
    hands the channel to the client itself: every later diff is later still, so
    the hot path never parses a frame.
    """

    def __init__(self, client: Client, channel: str, name: str) -> None:
        self.client = client
        self.channel = channel
        self.name = name
        self.held: list[str] = []
        self.after: int | None = None

    def push(self, frames: list[str]) -> None:
        if self.after is None:
            self.held.extend(frames)
        else:
            self._pass_on(frames, self.after)

    def snapshot_sent(self, sequence: int) -> None:
        self.after = sequence
        held, self.held = self.held, []
        self._pass_on(held, sequence)

    def _pass_on(self, frames: list[str], after: int) -> None:
        for i, relayed in enumerate(frames):
            sequence = _diff_sequence(relayed)
            if sequence is None or sequence > after:
                self.client.push(frames[i:])
                self.client.take_over(self.name, self.channel, self)
                return

    def close(self, code: int, reason: str) -> None:
        self.client.close(code, reason)


def _diff_sequence(relayed: str) -> int | None:
    try:
        sequence = orjson.loads(relayed)["data"]["sequence"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return sequence if isinstance(sequence, int) else None


class Client:
    """One WebSocket connection: its caller, its subscriptions and its outgoing queue.

    Everything it sends goes through one queue and one sender task, in order.
    The feed pushes frames without waiting; a client that falls more than
    MAX_QUEUED frames behind is told so and disconnected.
    """

    def __init__(self, websocket: WebSocket, live: Live, batch: bool = False) -> None:
        self.websocket = websocket
        self.live = live
        self.batch = batch
        """Every frame is a JSON array of messages (``?batch=true``)."""
        self.queue: deque[str] = deque()
        self.wake = asyncio.Event()
        self.principal: Principal | None = None
        self.streams: dict[str, tuple[str, Sink]] = {}
        """Channel name -> (Redis channel, the sink the feed relays it to)."""
        self.close_code: int | None = None
        self.close_reason = ""
        self.sending: asyncio.Task[None] | None = None

    # -- Sink -------------------------------------------------------------------

    def push(self, frames: list[str]) -> None:
        if self.close_code is not None:
            return
        self.queue.extend(frames)
        if len(self.queue) > MAX_QUEUED:
            # Too far behind: drop its backlog, say why if it can still hear, and
            # stop its sender even if it is stuck on a socket nobody reads.
            self.queue.clear()
            reason = f"more than {MAX_QUEUED} messages behind"
            self.queue.append(error_frame("slow_consumer", reason))
            self.close_code, self.close_reason = 1013, reason
            if self.sending is not None:
                self.sending.cancel()
        self.wake.set()

    def close(self, code: int, reason: str) -> None:
        """End the connection: what is queued may still go out for a moment."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            asyncio.get_running_loop().call_later(CLOSING_GRACE_SECONDS, self._give_up)
        self.wake.set()

    def _give_up(self) -> None:
        if self.sending is not None:
            self.sending.cancel()

    def send(self, message: dict[str, Any]) -> None:
        self.push([frame(message)])

    def send_error(self, code: str, message: str) -> None:
        self.push([error_frame(code, message)])

    # -- the two loops ------------------------------------------------------------

    async def send_loop(self) -> None:
        queue = self.queue
        while self.close_code is None:
            await self.wake.wait()
            self.wake.clear()
            while queue and self.close_code is None:
                await self._send_next()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSING_GRACE_SECONDS):
                while queue:
                    await self._send_next()

    async def _send_next(self) -> None:
        """One frame: the next message, or in batch mode every queued one (up to MAX_BATCH)."""
        queue = self.queue
        if not self.batch:
            await self.websocket.send_text(queue.popleft())
            return
        count = min(len(queue), MAX_BATCH)
        if count == 1:
            await self.websocket.send_text("[" + queue.popleft() + "]")
        else:
            await self.websocket.send_text(
                "[" + ",".join([queue.popleft() for _ in range(count)]) + "]"
            )

    async def receive_loop(self) -> None:
        while self.close_code is None:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            try:
                await self.handle(raw)
            except WsError as error:
                self.send_error(error.code, error.message)

    def take_over(self, name: str, channel: str, sync: BookSync) -> None:
        """Take a book's frames straight from the feed, from its sync's hands."""
        if self.streams.get(name) == (channel, sync):
            self.live.feed.replace(channel, sync, self)
            self.streams[name] = (channel, self)

    def detach(self) -> None:
        for channel, sink in self.streams.values():
            self.live.feed.unsubscribe(channel, sink)
        self.streams.clear()

    # -- requests -------------------------------------------------------------------

    async def handle(self, raw: str | bytes) -> None:
        if len(raw) > MAX_MESSAGE_BYTES:
            raise WsError("bad_message", f"messages are limited to {MAX_MESSAGE_BYTES} bytes")
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise WsError("bad_message", "a message must be a JSON object") from None
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            raise WsError("bad_message", 'a message must be a JSON object with an "op"')
        op = request["op"]
        if op == "subscribe":
            await self.subscribe(self._channels(request))
        elif op == "unsubscribe":
            self.unsubscribe(self._channels(request))
        elif op == "auth":
            await self.authenticate(request)
        elif op == "ping":
            self.send({"op": "pong"})
        else:
            raise WsError("bad_op", f"unknown op {op!r}: subscribe, unsubscribe, auth or ping")

    @staticmethod
    def _channels(request: dict[str, Any]) -> list[str]:
        channels = request.get("channels")
        if (
            not isinstance(channels, list)
            or not channels
            or not all(isinstance(name, str) for name in channels)
        ):
            raise WsError("bad_message", '"channels" must be a non-empty list of strings')
        return list(dict.fromkeys(channels))

    def _resolve(self, name: str) -> str:
        """The Redis channel behind a channel name, or WsError."""
        keys = self.live.keys
        if name in PRIVATE_CHANNELS:
            if self.principal is None:
                raise WsError("unauthorized", f"{name} needs an auth message first")
            return keys.channel(f"{name}:{self.principal.account_id}")
        kind, _, symbol = name.partition(":")
        if kind not in PUBLIC_KINDS:
            raise WsError(
                "unknown_channel",
                f"unknown channel {name!r}: book:, trades:, ticker:<symbol>, orders, balances",
            )
        if symbol not in self.live.markets:
            raise WsError("unknown_market", f"unknown market {symbol!r}")
        return keys.channel(name)

    async def subscribe(self, names: list[str]) -> None:
        find = self.live.find_market
        for name in names:
            symbol = name.partition(":")[2]
            if symbol and symbol not in self.live.markets and find is not None:
                await find(symbol)
        wanted = {name: self._resolve(name) for name in names}
        fresh = [name for name in wanted if name not in self.streams]
        if len(self.streams) + len(fresh) > MAX_SUBSCRIPTIONS:
            raise WsError("too_many_channels", f"at most {MAX_SUBSCRIPTIONS} channels")
        for name in fresh:
            try:
                if name.startswith("book:"):
                    await self._subscribe_book(name, wanted[name])
                else:
                    self.streams[name] = (wanted[name], self)
                    await self.live.feed.subscribe(wanted[name], name, self)
            except FeedUnavailable as error:
                self.streams.pop(name, None)
                raise WsError("unavailable", str(error)) from None
            if self.close_code is not None:
                return
        self.send({"op": "subscribed", "channels": names, "subscriptions": sorted(self.streams)})

    async def _subscribe_book(self, name: str, channel: str) -> None:
        """The snapshot first, then exactly the diffs after it, with none lost between.

        The diffs are held from before the snapshot is read (the feed has
        confirmed the subscription), so none published after the snapshot can
        be missed; those the snapshot already includes are dropped.
        """
        symbol = name.partition(":")[2]
        sync = BookSync(self, channel, name)
        self.streams[name] = (channel, sync)
        await self.live.feed.subscribe(channel, name, sync)
        try:
            raw = await self.live.redis.get(self.live.keys.book_snapshot(symbol))
            snapshot = empty_book(symbol) if raw is None else orjson.loads(raw)
            sequence = snapshot["sequence"]
            if type(sequence) is not int:
                raise TypeError(f"the {symbol} snapshot's sequence is {sequence!r}")
        except Exception:
            self.live.feed.unsubscribe(channel, sync)
            self.streams.pop(name, None)
            log.exception("cannot read the %s snapshot", symbol)
            raise WsError("unavailable", f"the {symbol} book cannot be read now") from None
        if self.close_code is not None:
            return
        self.send({"channel": name, "type": "snapshot", "data": snapshot})
        sync.snapshot_sent(sequence)

    def unsubscribe(self, names: list[str]) -> None:
        for name in names:
            found = self.streams.pop(name, None)
            if found is not None:
                self.live.feed.unsubscribe(*found)
        self.send({"op": "unsubscribed", "channels": names, "subscriptions": sorted(self.streams)})

    async def authenticate(self, request: dict[str, Any]) -> None:
        authenticator = self.live.authenticator
        try:
            token = request.get("token")
            if isinstance(token, str) and token:
                principal = await authenticator.authenticate_token(token)
            else:
                key, ts, sign = request.get("key"), request.get("ts"), request.get("sign")
                if not (
                    isinstance(key, str) and isinstance(ts, int | str) and isinstance(sign, str)
                ):
                    raise WsError("bad_message", 'auth needs "token", or "key", "ts" and "sign"')
                headers = {"BX-KEY": key, "BX-TS": str(ts), "BX-SIGN": sign}
                principal = await authenticator.authenticate("GET", "/v1/ws", b"", headers)
            principal.require("read")
        except AuthError as error:
            raise WsError(error.code, error.message) from None
        if self.principal is not None and self.principal.account_id != principal.account_id:
            raise WsError("already_authenticated", "this connection belongs to another account")
        self.principal = principal
        self.send(
            {
                "op": "authenticated",
                "user_id": principal.user_id,
                "account_id": principal.account_id,
            }
        )


async def serve(websocket: WebSocket, live: Live) -> None:
    """Run one WebSocket connection until either side ends it."""
    await websocket.accept()
    batch = websocket.query_params.get("batch", "").lower() in ("1", "true")
    client = Client(websocket, live, batch)
    receiving = asyncio.create_task(client.receive_loop())
    sending = client.sending = asyncio.create_task(client.send_loop())
    try:
        await asyncio.wait({receiving, sending}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        client.detach()
        for task in (receiving, sending):
            task.cancel()
        for task in (receiving, sending):
            try:
                await task
            except (asyncio.CancelledError, WebSocketDisconnect, WebSocketDisconnected):
                pass  # the client left, or the other loop ended the connection
            except Exception:
                log.exception("a WebSocket connection failed")
    if client.close_code is not None:
        # A client that does not read cannot take the close frame either: give up on it.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSING_GRACE_SECONDS):
                await websocket.close(client.close_code, client.close_reason)
