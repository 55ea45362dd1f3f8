"""``/healthz`` and ``/readyz``: a role is ready only when every dependency answers."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette

from infra import health
from infra.health import Check, health_routes


async def _answers(checks: dict[str, Check]) -> tuple[httpx.Response, httpx.Response]:
    app = Starlette(routes=health_routes(lambda: checks))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://role") as client:
        return await client.get("/healthz"), await client.get("/readyz")


async def _fine() -> None:
    return None


async def _refused() -> None:
    msg = "connection refused"
    raise ConnectionRefusedError(msg)


async def _stuck() -> None:
    await asyncio.sleep(60)


async def test_ready_when_every_dependency_answers() -> None:
    alive, ready = await _answers({"mysql": _fine, "redis": _fine})
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"mysql": "ok", "redis": "ok"}}


async def test_not_ready_names_what_fails_or_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "READY_TIMEOUT_SECONDS", 0.05)
    alive, ready = await _answers({"mysql": _fine, "redis": _refused, "kafka": _stuck})
    assert alive.status_code == 200, "alive even when a dependency is not"
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["mysql"] == "ok"
    assert checks["redis"] == "ConnectionRefusedError: connection refused"
    assert checks["kafka"].startswith("TimeoutError")


async def test_not_ready_before_starting() -> None:
    _, ready = await _answers({})
    assert (ready.status_code, ready.json()["status"]) == (503, "not_ready")
