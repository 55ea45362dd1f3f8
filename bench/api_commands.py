"""The command gateway's part of ``make bench-api``: orders published, outcome latency, logins.

Three measurements, each against ``bitex serve`` (both gateways on one base URL)
as a separate process on this machine, the load generator on the same cores:

1. **Orders published** (``response_type: ack``): wrk POSTs limit orders with
   bearer sessions of 200 users as fast as the gateway answers 202, which it
   does once Kafka has acknowledged the command (acks=all). The processors are
   not running for this one, so the figure is the gateway's own (auth, rate
   limits, validation, publish), not shared with the write side.
2. **Outcome latency**: the whole exchange runs (processors, projections,
   gateway) and wrk sends orders paced at a rate (1,000/s by default, and
   100/s): PACED_CONNECTIONS connections, each pausing between requests
   (``bench/api_orders.lua``). Each order is timed from send until its 201,
   once with ``response_type: result`` (the outcome as it comes) and once with
   ``full`` (the default: the outcome once both read models reflect it). wrk's
   own rate shows whether the pace was kept.
3. **Logins/s**: wrk POSTs correct credentials to ``/v1/sessions``; each
   costs one argon2id verification (19 MiB, 2 passes: ``infra.auth``).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.cpu_meter import cpu_seconds, describe, per_unit_ms
from domain.aggregates import account_id_for
from domain.markets import demo_markets
from domain.users import user_account_id
from infra.auth import open_session
from infra.market_listing import seed_catalog
from infra.migrate import create_database, drop_database
from infra.mysql import create_engine
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from infra.topics import TopicMap
from streams.workers import WORKER_ROLES, WriteSide, free_port

HERE = Path(__file__).resolve().parent
USERS = 200
RATE = int(os.environ.get("BENCH_API_ORDER_RATE", "1000"))
LOW_RATE = 100
"""A second, gentler pace, to show where the latency holds."""
LATENCY_SECONDS = float(os.environ.get("BENCH_API_LATENCY_SECONDS", "5"))
PACED_CONNECTIONS = 50
GATEWAY_WORKERS = (1, 2)
"""Gateway processes for the published figure (the better one counts)."""
GATEWAY_ENV = {
    "BITEX_API_KEY_MASTER": "00" * 32,
    "BITEX_RATE_IP": "1000000",
    "BITEX_RATE_KEY": "1000000",
    "BITEX_RATE_AUTH": "1000000",
}
PASSWORD = "bench password"
CORES = os.cpu_count() or 1

Measured = list[tuple[str, float, str]]
Wrk = Callable[[str, float, list[str], int], Awaitable[Any]]
"""``bench_api.wrk``: one wrk run of a script; its result has rate, p50_ms and p99_ms."""


@asynccontextmanager
async def exchange(
    settings: Settings, roles: tuple[str, ...], workers: int
) -> AsyncIterator[tuple[str, TopicMap, Settings]]:
    """The given roles (plus the gateway) on fresh topics and a scratch database."""
    topics = TopicMap(prefix=f"bench-cmd-{uuid.uuid4().hex[:8]}-")
    database = f"{settings.mysql_database}_bench_{uuid.uuid4().hex[:8]}"
    scratch = create_database(settings, database)
    port = free_port()
    env = {
        **GATEWAY_ENV,
        "BITEX_MYSQL_DATABASE": database,
        "BITEX_HTTP_PORT": str(port),
        "BITEX_HTTP_WORKERS": str(workers),
    }
    logs = Path(tempfile.mkdtemp(prefix="bench-cmd-"))
    side = WriteSide(scratch, topics, logs, env=env)
    await side.create_topics()
    try:
        for role in (*roles, "gateway"):
            side.start(role)
        for role in (*roles, "gateway"):
            await side.wait_ready(role)
        await asyncio.sleep(1.0 if workers > 1 else 0.2)
        yield f"http://127.0.0.1:{port}", topics, scratch
    finally:
        side.stop()
        await side.delete_topics()
        drop_database(settings, database)
        redis = create_redis(settings)
        keys = RedisKeys.for_prefix(topics.prefix)
        stale = [key async for key in redis.scan_iter(match=f"{keys.namespace}*")]
        if stale:
            await redis.delete(*stale)
        await redis.aclose()


async def sessions(settings: Settings, topics: TopicMap, count: int) -> list[str]:
    """Bearer tokens for ``count`` users, straight into Redis (no processors needed)."""
    redis = create_redis(settings)
    keys = RedisKeys.for_prefix(topics.prefix)
    tokens = []
    try:
        for n in range(count):
            user_id = uuid.uuid4()
            session = await open_session(
                redis,
                keys,
                user_id=str(user_id),
                account_id=str(account_id_for(str(user_id))),
                role="user",
                email=f"bench-{n}@example.com",
                seconds=600,
            )
            tokens.append(session.token)
    finally:
        await redis.aclose()
    return tokens


async def registered(url: str, count: int) -> list[tuple[str, str]]:
    """``count`` users registered, funded by an operator and logged in: (email, token)."""
    emails = [f"bench-{uuid.uuid4().hex[:10]}@example.com" for _ in range(count)]
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        semaphore = asyncio.Semaphore(8)

        async def register(email: str) -> str:
            async with semaphore:
                body = {"email": email, "password": PASSWORD}
                answer = await http.post("/v1/users", json=body)
                assert answer.status_code == 201, answer.text
                login = await http.post("/v1/sessions", json=body)
                assert login.status_code == 201, login.text
                return str(login.json()["token"])

        tokens = await asyncio.gather(*(register(email) for email in emails))
    return list(zip(emails, tokens, strict=True))


async def fund(url: str, settings: Settings, topics: TopicMap, emails: list[str]) -> None:
    """Deposits from an operator (a session made directly: operators are made by the CLI)."""
    redis = create_redis(settings)
    keys = RedisKeys.for_prefix(topics.prefix)
    operator_id = uuid.uuid4()
    session = await open_session(
        redis,
        keys,
        user_id=str(operator_id),
        account_id=str(user_account_id(operator_id)),
        role="operator",
        email="bench-operator@example.com",
        seconds=600,
    )
    await redis.aclose()
    headers = {"Authorization": f"Bearer {session.token}"}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as http:
        for email in emails:
            body = {"email": email, "asset": "USDT", "amount": "1000000", "tx_id": email}
            answer = await http.post("/v1/admin/deposits", json=body)
            assert answer.status_code == 201, answer.text


async def wrk_ok(
    wrk: Wrk, url: str, seconds: float, script: list[str], connections: int = 50
) -> Any:
    """A wrk run in which every answer was a success (else the figure would be of errors)."""
    result = await wrk(url, seconds, script, connections)
    if result.errors:
        raise RuntimeError(f"wrk saw failures: {result.errors}")
    return result


async def measure_commands(settings: Settings, wrk: Wrk, seconds: float) -> Measured:
    """Every command-side figure, as (name, value, unit); ``wrk`` is bench_api's runner."""
    out: Measured = []
    script = str(HERE / "api_orders.lua")
    with tempfile.TemporaryDirectory() as scratch:
        tokens_file = Path(scratch) / "tokens.txt"

        best = 0.0
        for workers in GATEWAY_WORKERS:
            async with exchange(settings, (), workers) as (url, topics, scratch_settings):
                engine = create_engine(scratch_settings)
                seed_catalog(engine, demo_markets().values())  # no write side to list them
                engine.dispose()
                tokens = await sessions(settings, topics, USERS)
                tokens_file.write_text("\n".join(tokens) + "\n")
                before = cpu_seconds()
                published = await wrk_ok(wrk, url, seconds, [script, str(tokens_file), "ack"])
                cpu = per_unit_ms(before, cpu_seconds(), published.requests)
            print(
                f"orders published (ack, gateway alone, {workers} worker(s)): "
                f"{published.rate:,.0f}/s, p50 {published.p50_ms:.1f} ms, "
                f"p99 {published.p99_ms:.1f} ms\n  {describe(cpu, CORES)}",
                flush=True,
            )
            best = max(best, published.rate)
        out.append(("orders_published", best, "orders/s"))

        async with exchange(settings, (*WORKER_ROLES, "projections"), workers=1) as (
            url,
            topics,
            scratch_settings,
        ):
            users = await registered(url, 50)
            await fund(url, scratch_settings, topics, [email for email, _ in users])
            tokens_file.write_text("".join(f"{token}\n" for _, token in users))
            warm_up = [script, str(tokens_file), "full", str(PACED_CONNECTIONS * 1000 // 50)]
            await wrk_ok(wrk, url, 2, warm_up, PACED_CONNECTIONS)
            for mode in ("result", "full"):
                for rate in sorted({LOW_RATE, RATE}):
                    pause = str(PACED_CONNECTIONS * 1000 // rate)
                    paced = [script, str(tokens_file), mode, pause]
                    before = cpu_seconds()
                    run = await wrk_ok(wrk, url, LATENCY_SECONDS, paced, PACED_CONNECTIONS)
                    cpu = per_unit_ms(before, cpu_seconds(), run.requests)
                    print(
                        f"orders answered with {mode!r}, paced at {rate}/s: {run.rate:,.0f}/s "
                        f"done, p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms\n"
                        f"  {describe(cpu, CORES)}",
                        flush=True,
                    )
                    if rate == RATE:
                        out.append((f"order_{mode}_rate", run.rate, "orders/s"))
                        out.append((f"order_{mode}_p99", run.p99_ms, "ms"))
            logins_file = Path(scratch) / "logins.txt"
            logins_file.write_text("".join(f"{email} {PASSWORD}\n" for email, _ in users))
            logins = await wrk_ok(wrk, url, seconds, [script, str(logins_file), "login"], 4)
        print(
            f"logins (argon2id verify each): {logins.rate:,.1f}/s, "
            f"p50 {logins.p50_ms:.0f} ms, p99 {logins.p99_ms:.0f} ms",
            flush=True,
        )
        out.append(("logins", logins.rate, "logins/s"))
    return out
