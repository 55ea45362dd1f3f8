"""One Redis pub/sub connection per gateway, fanned out in memory to WebSocket clients.

The feed speaks just enough RESP2 to SUBSCRIBE, UNSUBSCRIBE, PING and read
pushed messages, straight off an asyncio stream: about 2 us per message,
where a general client spends 15-20 us, so one connection keeps up with tens
of thousands of messages a second with CPU to spare for the sockets.

It subscribes to a Redis channel while at least one sink wants it. Each
message is turned into its WebSocket frame once, ``{"channel": <name>,
"data": <the published JSON>}`` (the payload is spliced in, not re-encoded),
and every read from the socket hands each sink all of its channel's frames
in one call, so a burst costs one call per sink, not one per message.

If the connection fails or stops answering, every sink is closed (their
clients must resynchronise: what was published meanwhile is gone) and the
feed reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote, urlsplit

import orjson

log = logging.getLogger(__name__)

READ_SIZE = 1 << 18
IDLE_PING_SECONDS = 15.0
"""Send a PING after this long without a byte; give up on the connection after twice it."""
SUBSCRIBE_TIMEOUT = 5.0
RECONNECT_DELAY = 0.5


class FeedUnavailable(Exception):
    """Redis did not confirm a subscription in time."""


class Sink(Protocol):
    """Where a channel's frames go (a WebSocket client, or a buffer while it syncs)."""

    def push(self, frames: list[str]) -> None:
        """Take frames in order; must not block."""

    def close(self, code: int, reason: str) -> None:
        """The feed failed: this sink will get nothing more."""


@dataclass(eq=False)
class _Route:
    prefix: str
    sinks: set[Sink] = field(default_factory=set)


Reply = list[object] | bytes | int | None


def command(*parts: str | bytes) -> bytes:
    """A RESP2 command: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class ProtocolError(Exception):
    pass


def parse(buffer: bytearray | bytes, replies: list[Reply]) -> int:
    """Append every complete reply at the start of ``buffer``; how many bytes they took.

    Arrays hold bulk strings, integers or nested arrays; simple strings come out as
    bytes; an error reply raises ProtocolError.
    """
    position = 0
    while position < len(buffer):
        parsed = _parse_one(buffer, position)
        if parsed is None:
            break
        reply, position = parsed
        replies.append(reply)
    return position


def _parse_one(buffer: bytearray | bytes, position: int) -> tuple[Reply, int] | None:
    end = buffer.find(b"\r\n", position)
    if end < 0:
        return None
    kind = buffer[position]
    if kind == 36:  # $ bulk string
        size = int(buffer[position + 1 : end])
        if size < 0:
            return None, end + 2
        start = end + 2
        if start + size + 2 > len(buffer):
            return None
        return bytes(buffer[start : start + size]), start + size + 2
    if kind == 42:  # * array
        count = int(buffer[position + 1 : end])
        items: list[object] = []
        position = end + 2
        for _ in range(max(count, 0)):
            parsed = _parse_one(buffer, position)
            if parsed is None:
                return None
            item, position = parsed
            items.append(item)
        return (items if count >= 0 else None), position
    if kind == 58:  # : integer
        return int(buffer[position + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return bytes(buffer[position + 1 : end]), end + 2
    if kind == 45:  # - error
        raise ProtocolError(bytes(buffer[position + 1 : end]).decode(errors="replace"))
    raise ProtocolError(f"unexpected reply type {chr(kind)!r}")


class Feed:
    """Subscribes to Redis channels as sinks need them, and relays their messages."""

    def __init__(self, redis_url: str, client_name: str = "bitex-queries") -> None:
        self.redis_url = redis_url
        self.client_name = client_name
        """What CLIENT LIST calls the connection."""
        self.client_id: int | None = None
        """The connection's CLIENT ID (Redis numbers every connection)."""
        self._routes: dict[bytes, _Route] = {}
        self._pending: dict[bytes, tuple[int, asyncio.Future[None]]] = {}
        """Channels with SUBSCRIBEs Redis has not confirmed yet: how many, and who waits."""
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.messages = 0
        """Messages relayed (received on a channel somebody wants)."""

    async def start(self) -> None:
        """Connect (failing loudly if Redis does not answer), then read in the background."""
        reader, writer = await self._connect()
        self._task = asyncio.create_task(self._run(reader, writer), name="redis-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._drop_everyone(1001, "the server is shutting down")

    @property
    def channels(self) -> int:
        return len(self._routes)

    async def subscribe(self, channel: str, name: str, sink: Sink) -> None:
        """Relay ``channel`` to ``sink`` as frames named ``name``, from when this returns."""
        key = channel.encode()
        route = self._routes.get(key)
        if route is None:
            prefix = orjson.dumps({"channel": name}).decode()[:-1] + ',"data":'
            route = self._routes[key] = _Route(prefix)
            if self._writer is not None:
                self._expect_confirmation(key)
                self._writer.write(command("SUBSCRIBE", key))
        route.sinks.add(sink)
        pending = self._pending.get(key)
        try:
            if not self._connected.is_set():
                raise FeedUnavailable("the Redis feed is reconnecting")
            if pending is not None:
                await asyncio.wait_for(asyncio.shield(pending[1]), SUBSCRIBE_TIMEOUT)
        except (TimeoutError, FeedUnavailable):
            self.unsubscribe(channel, sink)
            raise FeedUnavailable(f"Redis did not confirm the subscription to {name}") from None

    def unsubscribe(self, channel: str, sink: Sink) -> None:
        key = channel.encode()
        route = self._routes.get(key)
        if route is None:
            return
        route.sinks.discard(sink)
        if not route.sinks:
            del self._routes[key]
            if self._writer is not None:
                self._writer.write(command("UNSUBSCRIBE", key))

    def replace(self, channel: str, old: Sink, new: Sink) -> None:
        """Swap a sink in place (no message can fall between the two)."""
        route = self._routes.get(channel.encode())
        if route is not None and old in route.sinks:
            route.sinks.discard(old)
            route.sinks.add(new)

    # -- the connection ------------------------------------------------------------

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        url = urlsplit(self.redis_url)
        if url.scheme == "unix":
            opening = asyncio.open_unix_connection(url.path)
        else:
            context = ssl.create_default_context() if url.scheme == "rediss" else None
            opening = asyncio.open_connection(
                url.hostname or "127.0.0.1", url.port or 6379, ssl=context
            )
        reader, writer = await asyncio.wait_for(opening, SUBSCRIBE_TIMEOUT)
        try:
            if url.password is not None:
                user = [unquote(url.username)] if url.username else []
                await self._simple(reader, writer, command("AUTH", *user, unquote(url.password)))
            await self._simple(reader, writer, command("CLIENT", "SETNAME", self.client_name))
            writer.write(command("CLIENT", "ID"))
            line = await asyncio.wait_for(reader.readline(), SUBSCRIBE_TIMEOUT)
            self.client_id = int(line[1:]) if line.startswith(b":") else None
        except BaseException:
            writer.close()
            raise
        return reader, writer

    @staticmethod
    async def _simple(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> None:
        """Send a command answered by a simple string, before the connection subscribes."""
        writer.write(request)
        line = await asyncio.wait_for(reader.readline(), SUBSCRIBE_TIMEOUT)
        if not line.startswith(b"+"):
            raise ConnectionError(f"Redis refused the connection's setup: {line!r}")

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            self._writer = writer
            self._connected.set()
            try:
                await self._read(reader, writer)
            except (OSError, ConnectionError, ProtocolError, ValueError) as error:
                log.warning("the Redis feed failed (%s); reconnecting", error)
            finally:
                self._connected.clear()
                self._writer = None
                writer.close()
            self._drop_everyone(1012, "the live feed was interrupted: reconnect and resync")
            while True:
                await asyncio.sleep(RECONNECT_DELAY)
                try:
                    reader, writer = await self._connect()
                    break
                except (OSError, ConnectionError, ValueError) as error:
                    log.warning("the Redis feed cannot reconnect yet (%s)", error)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        pinged = False
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(READ_SIZE), IDLE_PING_SECONDS)
            except TimeoutError:
                if pinged:
                    raise ConnectionError("Redis did not answer a PING") from None
                writer.write(command("PING"))
                pinged = True
                continue
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            pinged = False
            if buffer:
                buffer += chunk
                data: bytearray | bytes = buffer
            else:
                data = chunk
            replies: list[Reply] = []
            used = parse(data, replies)
            if data is buffer:
                del buffer[:used]
            else:
                buffer += chunk[used:]
            self._dispatch(replies)

    def _dispatch(self, replies: Iterable[Reply]) -> None:
        batches: dict[bytes, list[str]] = {}
        for reply in replies:
            if not isinstance(reply, list) or len(reply) < 3:
                continue  # PONG (outside subscribe mode)
            kind, channel, data = reply[0], reply[1], reply[2]
            assert isinstance(channel, bytes)
            if kind == b"message":
                route = self._routes.get(channel)
                if route is not None and isinstance(data, bytes):
                    batches.setdefault(channel, []).append(
                        route.prefix + data.decode(errors="replace") + "}"
                    )
            elif kind == b"subscribe":
                self._confirmed(channel)
        for channel, frames in batches.items():
            self.messages += len(frames)
            route = self._routes.get(channel)
            if route is not None:
                for sink in list(route.sinks):
                    try:
                        sink.push(frames)
                    except Exception:
                        log.exception("a subscriber of %r failed to take its messages", channel)
                        self.unsubscribe(channel.decode(), sink)
                        sink.close(1011, "internal error")

    def _expect_confirmation(self, channel: bytes) -> None:
        pending = self._pending.get(channel)
        if pending is None:
            self._pending[channel] = (1, asyncio.get_running_loop().create_future())
        else:
            self._pending[channel] = (pending[0] + 1, pending[1])

    def _confirmed(self, channel: bytes) -> None:
        pending = self._pending.get(channel)
        if pending is None:
            return
        count, waiter = pending
        if count > 1:
            self._pending[channel] = (count - 1, waiter)
            return
        del self._pending[channel]
        if not waiter.done():
            waiter.set_result(None)

    def _drop_everyone(self, code: int, reason: str) -> None:
        routes, self._routes = self._routes, {}
        pending, self._pending = self._pending, {}
        for _, waiter in pending.values():
            if not waiter.done():
                waiter.set_exception(FeedUnavailable(reason))
                waiter.exception()  # retrieved: nobody may be waiting any more
        sinks = {sink for route in routes.values() for sink in route.sinks}
        for sink in sinks:
            sink.close(code, reason)
