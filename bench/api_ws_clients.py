"""WebSocket subscribers for ``bench_api``, in a process of their own.

``python -m bench.api_ws_clients URL CLIENTS CHANNEL`` connects CLIENTS
clients to URL (add ``?batch=true`` for batch mode), subscribes each to
CHANNEL, prints ``READY`` and then counts every message delivered. It reads
commands on stdin, one a line:

- ``MARK``: print ``MARK <messages so far> <monotonic seconds> <closed clients>
  <p50 ms> <p99 ms> <samples>``. The percentiles are the delivery latency (from
  the ``sent`` time the publisher put in each message, wall clock, to its
  arrival) of the messages the first client took since the previous MARK;
- ``QUIT``: close everything and exit.

A batch-mode frame is a JSON array of messages; every message is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

MARKER = b'{"channel":'


class Counter:
    def __init__(self) -> None:
        self.messages = 0
        self.closed = 0
        self.latencies: list[float] = []


async def subscriber(
    url: str, channel: str, counter: Counter, ready: asyncio.Queue[ClientConnection], sampled: bool
) -> None:
    async with connect(url, compression=None, max_size=None, max_queue=64) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "channels": [channel]}).decode())
        while True:
            reply = orjson.loads(await ws.recv())
            reply = reply[0] if isinstance(reply, list) else reply
            if reply.get("op") == "subscribed":
                break
            if "error" in reply:
                raise RuntimeError(f"subscribe refused: {reply}")
        await ready.put(ws)
        try:
            async for frame in ws:
                data = frame.encode() if isinstance(frame, str) else frame
                counter.messages += data.count(MARKER)
                if sampled:
                    now = time.time()
                    found = orjson.loads(data)
                    for message in found if isinstance(found, list) else [found]:
                        sent = message.get("data", {}).get("sent")
                        if isinstance(sent, float):
                            counter.latencies.append(now - sent)
        except ConnectionClosed:
            pass
        counter.closed += 1


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main(url: str, clients: int, channel: str) -> None:
    counter = Counter()
    ready: asyncio.Queue[ClientConnection] = asyncio.Queue()
    tasks = []
    for i in range(clients):
        tasks.append(asyncio.create_task(subscriber(url, channel, counter, ready, i == 0)))
        if i % 20 == 19:
            await asyncio.sleep(0.01)  # do not flood the listen backlog
    for _ in range(clients):
        getter = asyncio.create_task(ready.get())
        done, _ = await asyncio.wait(
            {getter, *tasks}, timeout=30, return_when=asyncio.FIRST_COMPLETED
        )
        if getter not in done:
            getter.cancel()
            for task in done:
                task.result()  # a subscriber failed: raise its error
            raise TimeoutError("the subscribers did not all subscribe in 30 s")
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).strip():
        if line == b"MARK":
            samples, counter.latencies = counter.latencies, []
            p50 = percentile(samples, 0.50) * 1000
            p99 = percentile(samples, 0.99) * 1000
            print(
                f"MARK {counter.messages} {time.monotonic():.6f} {counter.closed} "
                f"{p50:.3f} {p99:.3f} {len(samples)}",
                flush=True,
            )
        elif line == b"QUIT":
            break
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
            await task


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
