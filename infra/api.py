"""The one base URL: the command and query gateways served together.

Writes (POST, PATCH, DELETE) are the command gateway's routes and reads (GET
and the WebSocket) the query gateway's; Starlette's router picks a route by
path and method, so the two sets simply sit side by side. ``/openapi.json``
documents both. This module is a composition root, like the CLI: the
gateways themselves never import each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from commands.app import MAX_BODY_BYTES, command_gateway
from commands.openapi import write_part
from infra.health import Check, health_routes
from infra.http import EXCEPTION_HANDLERS, BodyLimit
from infra.metrics import RequestMetrics, metrics_route
from infra.openapi import document
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from infra.topics import TopicMap
from infra.tracing import TraceRequests, setup_tracing
from queries.app import query_gateway
from queries.openapi import read_part


def create_api(settings: Settings | None = None, topics: TopicMap | None = None) -> Starlette:
    """Both gateways on one app (the factory ``bitex serve`` runs)."""
    setup_tracing("bitex-api")
    settings = settings or Settings.from_env()
    topics = topics or TopicMap.from_env()
    keys = RedisKeys.for_prefix(topics.prefix)
    writes = command_gateway(settings, topics, keys)
    reads = query_gateway(settings, keys)
    openapi_body = orjson.dumps(document(read_part(), write_part()))

    async def openapi(request: Request) -> Response:
        return Response(openapi_body, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with reads.lifespan(app), writes.lifespan(app):
            yield

    def readiness() -> dict[str, Check]:
        reads_need, writes_need = reads.readiness(), writes.readiness()
        if not reads_need or not writes_need:
            return {}
        return {**reads_need, **writes_need}

    read_routes = [r for r in reads.routes() if getattr(r, "path", "") != "/openapi.json"]
    app = Starlette(
        routes=[
            Route("/openapi.json", openapi),
            *health_routes(readiness),
            metrics_route(),
            *writes.routes(),
            *read_routes,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestMetrics),
            Middleware(TraceRequests),
            Middleware(BodyLimit, max_bytes=MAX_BODY_BYTES),
        ],
    )
    app.state.commands, app.state.queries = writes, reads
    return app
