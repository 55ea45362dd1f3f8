"""``WS /v1/ws`` on a real uvicorn server, with the ``websockets`` client and real Redis.

Messages are published on the Redis channels as the projections publish them;
the gateway relays them from its one pub/sub connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import uvicorn
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import queries.ws
from infra.auth import api_key_secret, sha256_hex, sign
from infra.read_models import api_keys, users
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from queries.app import create_app
from queries.feed import command, parse
from tests.integration.conftest import seed_markets

pytestmark = pytest.mark.integration

MASTER = bytes(range(32, 64))
T0 = datetime(2026, 3, 1, 12, 0, 0)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
async def server(read_db: Settings, keys: RedisKeys) -> AsyncIterator[tuple[str, Starlette]]:
    """The gateway on a free loopback port: (its WebSocket URL, the app)."""
    seed_markets(read_db)  # as the projection writes the demo markets' listings
    app = create_app(read_db, keys, master_key=MASTER)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10):
        while not server.started:
            assert not serving.done(), serving.exception()
            await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{port}/v1/ws", app
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        sock.close()


async def receive(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def request(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(orjson.dumps(message).decode())
    return await receive(ws)


async def publish(redis: aioredis.Redis, keys: RedisKeys, stream: str, data: Any) -> None:
    await redis.publish(keys.channel(stream), orjson.dumps(data))


def make_user(db: Engine, permissions: str = "read") -> tuple[str, str, str]:
    """A user with an API key: (user id, account id, key id)."""
    user_id, account_id, key_id = str(uuid.uuid4()), str(uuid.uuid4()), f"k-{uuid.uuid4().hex}"
    with db.begin() as connection:
        connection.execute(
            insert(users).values(
                user_id=user_id,
                email=f"{user_id}@example.com",
                password_hash="x",
                role="user",
                account_id=account_id,
                created_at=T0,
            )
        )
        connection.execute(
            insert(api_keys).values(
                key_id=key_id, user_id=user_id, permissions=permissions, label="", created_at=T0
            )
        )
    return user_id, account_id, key_id


async def make_session(redis: aioredis.Redis, keys: RedisKeys, user_id: str, account: str) -> str:
    token = f"tok-{uuid.uuid4().hex}"
    session = {"user_id": user_id, "account_id": account, "role": "user", "email": "x@y"}
    await redis.set(keys.session(sha256_hex(token)), orjson.dumps(session), ex=60)
    return token


def key_auth(key_id: str) -> dict[str, Any]:
    """The auth message of an API key: it signs ts + "GET/v1/ws"."""
    now = time.time_ns() // 1_000_000
    secret = api_key_secret(MASTER, key_id)
    return {"op": "auth", "key": key_id, "ts": now, "sign": sign(secret, now, "GET", "/v1/ws")}


# -- the RESP reader ---------------------------------------------------------------------------


def test_resp_replies_are_parsed_whole_or_left_for_the_next_read() -> None:
    wire = (
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nch:a\r\n:1\r\n"
        b'*3\r\n$7\r\nmessage\r\n$4\r\nch:a\r\n$7\r\n{"a":1}\r\n'
        b"+PONG\r\n"
        b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
    )
    replies: list[Any] = []
    assert parse(wire, replies) == len(wire)
    assert replies == [
        [b"subscribe", b"ch:a", 1],
        [b"message", b"ch:a", b'{"a":1}'],
        b"PONG",
        [b"pong", b""],
    ]
    for cut in range(1, len(wire)):
        replies = []
        used = parse(wire[:cut], replies)
        rest: list[Any] = []
        assert parse(wire[used:], rest) == len(wire) - used
        assert replies + rest == [
            [b"subscribe", b"ch:a", 1],
            [b"message", b"ch:a", b'{"a":1}'],
            b"PONG",
            [b"pong", b""],
        ]
    assert command("SUBSCRIBE", "ch:é") == b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nch:\xc3\xa9\r\n"


# -- public channels ------------------------------------------------------------------------------


async def test_book_snapshot_first_then_the_diffs_after_it(
    server: tuple[str, Starlette], redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    url, _ = server
    snapshot = {
        "symbol": "BTC-USDT",
        "sequence": 7,
        "bids": [["50000.00", "0.5000"]],
        "asks": [["50001.00", "0.2500"]],
    }
    await redis_client.set(keys.book_snapshot("BTC-USDT"), orjson.dumps(snapshot))
    async with connect(url) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "channels": ["book:BTC-USDT"]}).decode())
        assert await receive(ws) == {
            "channel": "book:BTC-USDT",
            "type": "snapshot",
            "data": snapshot,
        }
        assert await receive(ws) == {
            "op": "subscribed",
            "channels": ["book:BTC-USDT"],
            "subscriptions": ["book:BTC-USDT"],
        }
        diffs = [
            {
                "type": "book",
                "symbol": "BTC-USDT",
                "sequence": 8,
                "bids": [["50000.00", "0"]],
                "asks": [],
            },
            {
                "type": "book",
                "symbol": "BTC-USDT",
                "sequence": 9,
                "bids": [["49999.00", "1.0000"]],
                "asks": [["50001.00", "0.1000"]],
            },
        ]
        await publish(redis_client, keys, "book:ETH-USDT", {"type": "book", "sequence": 1})
        for diff in diffs:
            await publish(redis_client, keys, "book:BTC-USDT", diff)
        for diff in diffs:
            assert await receive(ws) == {"channel": "book:BTC-USDT", "data": diff}

        # An empty market's book starts empty at sequence 0.
        await ws.send(orjson.dumps({"op": "subscribe", "channels": ["book:ETH-BTC"]}).decode())
        assert await receive(ws) == {
            "channel": "book:ETH-BTC",
            "type": "snapshot",
            "data": {"symbol": "ETH-BTC", "sequence": 0, "bids": [], "asks": []},
        }


async def test_a_book_subscribed_while_it_changes_has_no_gap(
    server: tuple[str, Starlette], redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    """The projection sets the snapshot, then publishes the diff (as the Redis
    projection does); a client subscribing meanwhile gets a snapshot and then
    exactly the diffs after it, whichever way the race goes."""
    url, _ = server
    stop = asyncio.Event()

    async def projection() -> None:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            level = [[f"{50000 + sequence}.00", "1.0000"]]
            snapshot = {"symbol": "ETH-USDT", "sequence": sequence, "bids": level, "asks": []}
            diff = {"type": "book", "symbol": "ETH-USDT", "sequence": sequence, "bids": level}
            await redis_client.set(keys.book_snapshot("ETH-USDT"), orjson.dumps(snapshot))
            if sequence % 2:
                await asyncio.sleep(0.001)
            await redis_client.publish(keys.channel("book:ETH-USDT"), orjson.dumps(diff))
            await asyncio.sleep(0.0005 * (sequence % 3))

    writer = asyncio.create_task(projection())
    try:
        for _ in range(10):
            # Unbounded client queue: it stops reading while diffs still flow, and must
            # still see the server's close frame behind them.
            async with connect(url, max_queue=None) as ws:
                subscribe = {"op": "subscribe", "channels": ["book:ETH-USDT"]}
                await ws.send(orjson.dumps(subscribe).decode())
                first = await receive(ws)
                assert first["type"] == "snapshot"
                expected = first["data"]["sequence"] + 1
                seen = 0
                while seen < 30:
                    message = await receive(ws)
                    if message.get("op") == "subscribed":
                        continue
                    assert message["data"]["sequence"] == expected
                    expected += 1
                    seen += 1
    finally:
        stop.set()
        await writer


async def test_trades_and_tickers_are_relayed_until_unsubscribed(
    server: tuple[str, Starlette], redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    url, _ = server
    async with connect(url) as ws:
        ack = await request(
            ws, {"op": "subscribe", "channels": ["trades:ETH-BTC", "ticker:ETH-BTC"]}
        )
        assert ack["subscriptions"] == ["ticker:ETH-BTC", "trades:ETH-BTC"]
        trade = {"trade_id": "ETH-BTC-1", "price": "0.05000", "quantity": "1.000", "seq": 1}
        await publish(redis_client, keys, "trades:ETH-BTC", trade)
        assert await receive(ws) == {"channel": "trades:ETH-BTC", "data": trade}
        ticker = {"symbol": "ETH-BTC", "last": "0.05000"}
        await publish(redis_client, keys, "ticker:ETH-BTC", ticker)
        assert await receive(ws) == {"channel": "ticker:ETH-BTC", "data": ticker}

        assert await request(ws, {"op": "unsubscribe", "channels": ["trades:ETH-BTC"]}) == {
            "op": "unsubscribed",
            "channels": ["trades:ETH-BTC"],
            "subscriptions": ["ticker:ETH-BTC"],
        }
        await publish(redis_client, keys, "trades:ETH-BTC", trade)
        await publish(redis_client, keys, "ticker:ETH-BTC", {"n": 2})
        assert await receive(ws) == {"channel": "ticker:ETH-BTC", "data": {"n": 2}}
        assert await request(ws, {"op": "ping"}) == {"op": "pong"}


async def test_bad_requests_get_error_messages_and_change_nothing(
    server: tuple[str, Starlette],
) -> None:
    url, _ = server
    async with connect(url) as ws:
        cases: list[tuple[Any, str]] = [
            ({"op": "subscribe", "channels": ["candles:BTC-USDT"]}, "unknown_channel"),
            (
                {"op": "subscribe", "channels": ["ticker:BTC-USDT", "book:DOGE-USDT"]},
                "unknown_market",
            ),
            ({"op": "subscribe", "channels": ["ticker:BTC-USDT", "orders"]}, "unauthorized"),
            ({"op": "subscribe", "channels": []}, "bad_message"),
            ({"op": "subscribe", "channels": "ticker:BTC-USDT"}, "bad_message"),
            ({"op": "subscribe"}, "bad_message"),
            ({"op": "dance"}, "bad_op"),
            ({"channels": ["ticker:BTC-USDT"]}, "bad_message"),
            (["not", "an", "object"], "bad_message"),
            ({"op": "auth", "token": "nobody"}, "unauthorized"),
            ({"op": "auth", "key": "k-1"}, "bad_message"),
            ({"op": "auth", "key": "k-1", "ts": 1, "sign": "00"}, "stale_timestamp"),
        ]
        for message, code in cases:
            answer = await request(ws, message)
            assert answer["error"]["code"] == code, (message, answer)
            assert answer["error"]["message"]
        await ws.send("{not json")
        assert (await receive(ws))["error"]["code"] == "bad_message"
        await ws.send(b"\xff\x00")
        assert (await receive(ws))["error"]["code"] == "bad_message"
        await ws.send("x" * 20_000)
        assert (await receive(ws))["error"]["code"] == "bad_message"
        # Nothing was subscribed by the refused requests.
        assert await request(ws, {"op": "unsubscribe", "channels": ["ticker:BTC-USDT"]}) == {
            "op": "unsubscribed",
            "channels": ["ticker:BTC-USDT"],
            "subscriptions": [],
        }


# -- private channels ------------------------------------------------------------------------------


async def test_private_channels_need_auth_and_carry_only_the_callers_account(
    server: tuple[str, Starlette], db: Engine, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    url, _ = server
    alice_user, alice, _ = make_user(db)
    _, bob, bob_key = make_user(db)
    _, _, no_read_key = make_user(db, "trade")
    alice_token = await make_session(redis_client, keys, alice_user, alice)

    async with connect(url) as alice_ws, connect(url) as bob_ws:
        refused = await request(alice_ws, {"op": "subscribe", "channels": ["orders"]})
        assert refused["error"]["code"] == "unauthorized"

        assert await request(alice_ws, {"op": "auth", "token": alice_token}) == {
            "op": "authenticated",
            "user_id": alice_user,
            "account_id": alice,
        }
        ack = await request(alice_ws, {"op": "subscribe", "channels": ["orders", "balances"]})
        assert ack["subscriptions"] == ["balances", "orders"]

        no_read = await request(bob_ws, key_auth(no_read_key))
        assert no_read["error"]["code"] == "forbidden"
        bad = key_auth(bob_key)
        bad["sign"] = "0" * 64
        assert (await request(bob_ws, bad))["error"]["code"] == "bad_signature"
        good = key_auth(bob_key)
        assert (await request(bob_ws, good))["account_id"] == bob
        assert (await request(bob_ws, good))["error"]["code"] == "replayed_signature"
        assert (await request(bob_ws, {"op": "subscribe", "channels": ["orders"]}))["op"] == (
            "subscribed"
        )

        # Another account's auth on the same socket is refused.
        assert (await request(alice_ws, key_auth(bob_key)))["error"]["code"] == (
            "already_authenticated"
        )

        await publish(redis_client, keys, f"orders:{bob}", {"order_id": "bob-1"})
        await publish(redis_client, keys, f"orders:{alice}", {"order_id": "alice-1"})
        await publish(redis_client, keys, f"balances:{alice}", {"asset": "BTC"})
        assert await receive(alice_ws) == {"channel": "orders", "data": {"order_id": "alice-1"}}
        assert await receive(alice_ws) == {"channel": "balances", "data": {"asset": "BTC"}}
        assert await receive(bob_ws) == {"channel": "orders", "data": {"order_id": "bob-1"}}
        with pytest.raises(TimeoutError):
            await receive(bob_ws, timeout=0.3)


# -- the feed ---------------------------------------------------------------------------------


async def test_many_clients_share_one_redis_connection(
    server: tuple[str, Starlette], redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    url, app = server
    feed = app.state.gateway.live.feed
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(connect(url)) for _ in range(20)]
        for ws in sockets:
            await request(ws, {"op": "subscribe", "channels": ["trades:BTC-USDT"]})
        assert feed.channels == 1
        clients = await redis_client.client_list()
        assert (
            sum(c["name"] == feed.client_name and int(c["id"]) == feed.client_id for c in clients)
            == 1
        )
        for n in range(50):
            await publish(redis_client, keys, "trades:BTC-USDT", {"seq": n})
        for ws in sockets:
            assert [(await receive(ws))["data"]["seq"] for _ in range(50)] == list(range(50))
    await asyncio.sleep(0.1)
    assert feed.channels == 0  # the last client left: unsubscribed from Redis


async def test_losing_the_feed_closes_clients_so_they_resync(
    server: tuple[str, Starlette], redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    url, app = server
    feed = app.state.gateway.live.feed
    async with connect(url) as ws:
        await request(ws, {"op": "subscribe", "channels": ["book:BTC-USDT"]})  # the snapshot
        await receive(ws)  # the ack
        await redis_client.execute_command("CLIENT", "KILL", "ID", feed.client_id)
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012

    # The feed reconnects; new clients are served again.
    async with asyncio.timeout(10):
        while True:
            async with connect(url) as ws:
                answer = await request(ws, {"op": "subscribe", "channels": ["trades:BTC-USDT"]})
                if answer.get("op") == "subscribed":
                    await publish(redis_client, keys, "trades:BTC-USDT", {"seq": 1})
                    assert await receive(ws) == {"channel": "trades:BTC-USDT", "data": {"seq": 1}}
                    break
                assert answer["error"]["code"] == "unavailable"
            await asyncio.sleep(0.2)


async def test_batch_mode_frames_are_arrays_of_messages_in_order(
    server: tuple[str, Starlette], redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    url, _ = server
    async with connect(url + "?batch=true") as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "channels": ["trades:ETH-USDT"]}).decode())
        assert await receive(ws) == [
            {
                "op": "subscribed",
                "channels": ["trades:ETH-USDT"],
                "subscriptions": ["trades:ETH-USDT"],
            }
        ]
        async with redis_client.pipeline(transaction=False) as pipe:
            for n in range(2000):
                pipe.publish(keys.channel("trades:ETH-USDT"), orjson.dumps({"seq": n}))
            await pipe.execute()
        got: list[Any] = []
        frames = 0
        while len(got) < 2000:
            frame = await receive(ws)
            assert isinstance(frame, list)
            assert 1 <= len(frame) <= 1000
            got.extend(frame)
            frames += 1
        assert got == [{"channel": "trades:ETH-USDT", "data": {"seq": n}} for n in range(2000)]
        assert frames < 2000


async def test_a_client_that_stops_reading_is_dropped_and_others_go_on(
    server: tuple[str, Starlette],
    redis_client: aioredis.Redis,
    keys: RedisKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queries.ws, "MAX_QUEUED", 50)
    url, app = server
    payload = orjson.dumps({"pad": "x" * 60_000})
    # A small receive buffer (no autotuning), so that the server soon has to queue.
    tight = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tight.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    tight.connect(("127.0.0.1", int(url.split(":")[2].split("/")[0])))
    async with (
        connect(url, sock=tight, max_queue=4, compression=None) as slow,
        connect(url, max_queue=None) as fast,
    ):
        for ws in (slow, fast):
            await request(ws, {"op": "subscribe", "channels": ["trades:BTC-USDT"]})
        # The slow one reads nothing: its socket fills up, then its queue, and it is cut off.
        async with redis_client.pipeline(transaction=False) as pipe:
            for _ in range(400):
                pipe.publish(keys.channel("trades:BTC-USDT"), payload)
            await pipe.execute()
        received = 0

        async def drain() -> None:
            nonlocal received
            while True:
                await slow.recv()
                received += 1

        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(drain(), 20)
        assert received < 400
        assert slow.close_code in (1013, 1006)  # 1006 if it could not even take the close
        # The one that keeps up is still served.
        fast_received = 0
        while fast_received < 400:
            message = await receive(fast)
            assert message["channel"] == "trades:BTC-USDT"
            fast_received += 1
    assert app.state.gateway.live.feed.channels in (0, 1)
