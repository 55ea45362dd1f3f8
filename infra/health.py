"""Fail fast, and say what to do, when Kafka, MySQL or Redis does not answer.

``bitex worker``, ``serve``, ``run`` and ``operator``, and the test suite, call
``check_services`` at startup. Every role also serves ``/healthz`` and ``/readyz``
(``health_routes``): the gateways among their routes, the Faust workers on
``infra.worker_http``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy import text
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.http import JSONResponse
from infra.services.probes import ProbeError
from infra.services.runner import services
from infra.settings import Settings


class ServicesUnavailable(RuntimeError):
    """One or more of Kafka, MySQL and Redis does not answer."""


def check_services(settings: Settings | None = None) -> None:
    """Raise ServicesUnavailable naming every service that does not answer and the fix."""
    settings = settings or Settings.from_env()
    problems = []
    for svc in services(settings):
        try:
            svc.probe()
        except ProbeError as exc:
            problems.append(f"  - {svc.title} at {svc.endpoint()} ({svc.env_hint}): {exc}")
    if problems:
        raise ServicesUnavailable(
            "BitEx needs Kafka, MySQL and Redis, and these do not answer:\n"
            + "\n".join(problems)
            + "\nStart the local ones with `make up`, or set the BITEX_ variables to point at "
            "running servers."
        )


# -- liveness and readiness over HTTP ------------------------------------------

Check = Callable[[], Awaitable[object]]
READY_TIMEOUT_SECONDS = 2.0


def mysql_check(engine: Engine) -> Check:
    def select_one() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    return lambda: asyncio.to_thread(select_one)


def health_routes(checks: Callable[[], Mapping[str, Check]]) -> list[Route]:
    """``/healthz`` (the process answers) and ``/readyz`` (its dependencies answer too).

    ``checks`` gives, when asked, each dependency's probe; a probe that raises or
    takes over READY_TIMEOUT_SECONDS makes the role not ready (503), naming it.
    """

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        found: dict[str, str] = {}
        for name, check in checks().items():
            try:
                await asyncio.wait_for(check(), READY_TIMEOUT_SECONDS)
                found[name] = "ok"
            except Exception as error:  # any failure means not ready, said plainly
                found[name] = f"{type(error).__name__}: {error}".strip()
        ready = bool(found) and all(state == "ok" for state in found.values())
        body = {"status": "ready" if ready else "not_ready", "checks": found}
        return JSONResponse(body, status_code=200 if ready else 503)

    return [Route("/healthz", healthz), Route("/readyz", readyz)]
