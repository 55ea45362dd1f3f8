"""Fixtures for tests against the real Kafka, MySQL and Redis that `make up` starts."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import uvicorn
from sqlalchemy.engine import Engine

from domain.markets import Market, demo_markets
from infra.api import create_api
from infra.health import ServicesUnavailable, check_services
from infra.kafka_admin import delete_topics
from infra.market_listing import seed_catalog
from infra.migrate import create_database, drop_database
from infra.mysql import create_engine
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from infra.topics import TopicMap
from streams.workers import WORKER_ROLES, WriteSide

RUN_ID = uuid.uuid4().hex[:10]


def seed_markets(settings: Settings, markets: dict[str, Market] | None = None) -> None:
    """The catalog rows for these markets (the demo markets by default), for tests that
    write the read model by hand."""
    engine = create_engine(settings)
    try:
        seed_catalog(engine, (demo_markets() if markets is None else markets).values())
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session", autouse=True)
def _services_answer(settings: Settings) -> None:
    try:
        check_services(settings)
    except ServicesUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def unique() -> Callable[[str], str]:
    """unique("orders") -> "it-orders-<run id>-<n>": names that never collide across runs."""
    counter = itertools.count()
    return lambda prefix: f"it-{prefix}-{RUN_ID}-{next(counter)}"


@pytest.fixture
async def topics(settings: Settings) -> AsyncIterator[list[str]]:
    """Append topic names to this list; they are deleted after the test."""
    names: list[str] = []
    yield names
    await delete_topics(names, settings)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
async def redis_client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = create_redis(settings)
    yield client
    await client.aclose()


def _scratch_database(settings: Settings) -> Iterator[Settings]:
    database = f"{settings.mysql_database}_it_{uuid.uuid4().hex[:10]}"
    yield create_database(settings, database)
    drop_database(settings, database)


@pytest.fixture
def read_db(settings: Settings) -> Iterator[Settings]:
    """Settings pointing at a fresh, migrated scratch database, dropped after the test."""
    yield from _scratch_database(settings)


@pytest.fixture(scope="module")
def scratch_db() -> Iterator[Settings]:
    """The same for a whole module (one exchange serving every test of it)."""
    yield from _scratch_database(Settings.from_env())


@asynccontextmanager
async def live_exchange(
    scratch_db: Settings, topics: TopicMap, logs: Path, operator: tuple[str, str]
) -> AsyncIterator[tuple[WriteSide, str]]:
    """The processors and the projections as processes on ``topics`` (the demo markets
    listed on the way), both gateways served in this process on a loopback port, and an
    operator (email, password) added by the CLI: (the write side, the base URL)."""
    side = WriteSide(
        scratch_db, topics, logs, env={"BITEX_MYSQL_DATABASE": scratch_db.mysql_database}
    )
    await side.create_topics()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_api(scratch_db, topics)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serving: asyncio.Task[None] | None = None
    try:
        for role in (*WORKER_ROLES, "projections"):
            side.start(role)
        for role in (*WORKER_ROLES, "projections"):
            await side.wait_ready(role)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        async with asyncio.timeout(20):
            while not server.started:
                assert not serving.done(), serving.exception()
                await asyncio.sleep(0.02)
        email, password = operator
        added = await bitex_cli(
            topics, "operator", "add", "--email", email, "--password", password,
            settings=scratch_db,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        yield side, url
    finally:
        server.should_exit = True
        if serving is not None:
            await asyncio.wait_for(serving, 15)
        sock.close()
        side.stop()
        await side.delete_topics()


async def bitex_cli(
    topics: TopicMap, *args: str, settings: Settings | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``bitex`` CLI on a test's topics (and its database, if given), as an
    operator would."""
    env = {**os.environ, "BITEX_TOPIC_PREFIX": topics.prefix}
    if settings is not None:
        env["BITEX_MYSQL_DATABASE"] = settings.mysql_database
    command = [sys.executable, "-m", "infra.cli", *args]
    return await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
async def keys(
    unique: Callable[[str], str], redis_client: aioredis.Redis
) -> AsyncIterator[RedisKeys]:
    """A Redis namespace of the test's own, emptied after it."""
    keys = RedisKeys.for_prefix(unique("keys") + ":")
    yield keys
    found = [key async for key in redis_client.scan_iter(match=keys.namespace + "*")]
    if found:
        await redis_client.delete(*found)


@pytest.fixture
def db(read_db: Settings) -> Iterator[Engine]:
    """An engine on the test's scratch read-model database."""
    engine = create_engine(read_db)
    yield engine
    engine.dispose()
