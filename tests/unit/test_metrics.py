"""``/metrics``: requests counted and timed by route template and status."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.metrics import RequestMetrics, metrics_route


async def _thing(request: Request) -> Response:
    found = request.path_params["thing_id"] == "1"
    return JSONResponse({}, status_code=200 if found else 404)


def _count(route: str, status: str) -> float:
    labels = {"method": "GET", "route": route, "status": status}
    return REGISTRY.get_sample_value("bitex_http_requests_total", labels) or 0.0


async def test_requests_are_counted_by_route_template_and_status() -> None:
    app = Starlette(
        routes=[Route("/things/{thing_id}", _thing), metrics_route()],
        middleware=[Middleware(RequestMetrics)],
    )
    before = {status: _count("/things/{thing_id}", status) for status in ("200", "404")}
    unmatched = _count("unmatched", "404")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://role") as client:
        for path in ("/things/1", "/things/1", "/things/2", "/nowhere"):
            await client.get(path)
        exposed = await client.get("/metrics")
    assert _count("/things/{thing_id}", "200") == before["200"] + 2
    assert _count("/things/{thing_id}", "404") == before["404"] + 1
    assert _count("unmatched", "404") == unmatched + 1
    assert exposed.headers["content-type"].startswith("text/plain")
    assert (
        'bitex_http_request_seconds_bucket{le="0.001",method="GET",route="/things/{thing_id}"}'
        in exposed.text
    )
