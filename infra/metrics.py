"""Prometheus metrics: what every role counts, served at ``/metrics``.

The gateways serve it among their routes; the processors and the projections
on their own small server (``infra.worker_http``).

Requests are counted and timed by route template (``/v1/orders/{order_id}``,
never the concrete path, so the label set stays small) and status. Each
process keeps its own counts: in Kubernetes a gateway pod runs one process
and the autoscaler adds pods, so a scrape of a pod sees all of that pod.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
# A ``_created`` series per metric says nothing Prometheus needs.
disable_created_metrics()  # type: ignore[no-untyped-call]

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

# -- the processors --------------------------------------------------------------

RECORDS_PROCESSED = Counter("bitex_records_processed", "Inbox records a processor took", ["role"])
RECORDS_WRITTEN = Counter(
    "bitex_records_written",
    "Records a processor wrote (events, forwards, outcomes)",
    ["role", "topic"],
)
PROCESSING_LATENCY = Histogram(
    "bitex_processing_latency_seconds",
    "From an inbox record's Kafka timestamp until everything it caused is durable "
    "(for the matching role: the matching latency)",
    ["role"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
BATCH_SECONDS = Histogram(
    "bitex_batch_seconds",
    "Time to process one batch and make its outputs durable",
    ["role"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CONSUMER_LAG = Gauge(
    "bitex_consumer_lag",
    "Records in an assigned partition not yet processed, as of the scrape",
    ["role", "topic", "partition"],
)

# -- the projections -------------------------------------------------------------

EVENTS_PROJECTED = Counter(
    "bitex_events_projected", "Events the projections worker applied, by topic", ["topic"]
)
PROJECTION_LAG = Gauge(
    "bitex_projection_lag",
    "Events a read model has still to apply in a partition, as of the scrape",
    ["projection", "topic", "partition"],
)


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
            counted, timed = _request_series(scope["method"], route, status)
            counted.inc()
            timed.observe(time.perf_counter() - started)


@functools.cache
def _request_series(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    """The series a request is counted and timed in (looked up once: ``labels`` is
    costly per request, and the label sets are few: route templates, not paths)."""
    return HTTP_REQUESTS.labels(method, route, str(status)), HTTP_SECONDS.labels(method, route)


@functools.cache
def orders_counted(outcome: str) -> Counter:
    """The ``ORDERS`` series of an outcome (looked up once, as ``_request_series``)."""
    return ORDERS.labels(outcome)


Refresh = Callable[[], Awaitable[None]]
"""Brings gauges measured on demand (lags) up to date before a scrape is answered."""


def metrics_route(refresh: Refresh | None = None) -> Route:
    async def metrics(request: Request) -> Response:
        if refresh is not None:
            try:
                await refresh()
            except Exception:  # the other metrics are still worth a scrape
                log.warning("could not measure the lag for this scrape", exc_info=True)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics)
