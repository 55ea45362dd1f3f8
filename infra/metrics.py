"""Prometheus metrics: what the gateways count, served at ``/metrics``.

Requests are counted and timed by route template (``/v1/orders/{order_id}``,
never the concrete path, so the label set stays small) and status. Each
process keeps its own counts: in Kubernetes a gateway pod runs one process
and the autoscaler adds pods, so a scrape of a pod sees all of that pod.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "bitex_http_requests", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "bitex_http_request_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
ORDERS = Counter(
    "bitex_orders", "Orders the command gateway answered, by what became of them", ["outcome"]
)
"""``accepted`` (on the book or traded), ``rejected`` (by the write side, e.g. funds),
``pending`` (no outcome within the bound) or ``published`` (``response_type: ack``)."""


class RequestMetrics:
    """ASGI middleware counting and timing every HTTP request by route and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_SECONDS.labels(scope["method"], route).observe(time.perf_counter() - started)


async def _metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def metrics_route() -> Route:
    return Route("/metrics", _metrics)
