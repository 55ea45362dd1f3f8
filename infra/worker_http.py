"""``/healthz``, ``/readyz`` and ``/metrics`` for the Faust workers.

The processors and the projections serve no API, but Kubernetes probes them
and Prometheus scrapes them like the gateways. The same routes run here on a
small uvicorn server inside the worker's own event loop, on
``BITEX_HTTP_HOST`` and ``BITEX_METRICS_PORT``. Faust keeps the signals: this server never installs
handlers of its own, and stops when the worker does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping

import faust
import uvicorn
from starlette.applications import Starlette

from infra.health import Check, health_routes
from infra.metrics import Refresh, metrics_route

log = logging.getLogger(__name__)

LOCAL_PORTS = {"accounts": 9101, "matching": 9102, "projections": 9103}
"""Each role's port when ``BITEX_METRICS_PORT`` is unset, so one machine runs them all.
(In a container every role uses 9100, the port the manifests name.)"""


class PortInUse(RuntimeError):
    pass


def metrics_port(role: str, instance: int = 0) -> int | None:
    """The port a role serves on; ``None`` when ``BITEX_METRICS_PORT=0`` turns it off.

    Without the variable, instance *n* of a role takes the role's local port plus
    10 times *n*, so a few local instances do not collide.
    """
    configured = os.environ.get("BITEX_METRICS_PORT")
    if configured is None:
        return LOCAL_PORTS[role] + 10 * instance
    return int(configured) or None


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        msg = (
            f"cannot serve /metrics and the probes on {host}:{port} ({error.strerror}); "
            "set BITEX_METRICS_PORT to a free port, or 0 to serve none"
        )
        raise PortInUse(msg) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _InLoopServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to its host (Faust)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WorkerHttp:
    """The probe and metrics server of one worker: bind at start, serve until stopped."""

    def __init__(
        self,
        host: str,
        port: int,
        checks: Callable[[], Mapping[str, Check]],
        refresh: Refresh | None = None,
    ) -> None:
        """Binds now, so a port in use stops the worker before it joins its group."""
        app = Starlette(routes=[*health_routes(checks), metrics_route(refresh)])
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self.server = _InLoopServer(config)
        self.socket = _bind(host, port)
        self.port = port

    async def serve(self) -> None:
        log.info("serving /healthz, /readyz and /metrics", extra={"port": self.port})
        await self.server.serve(sockets=[self.socket])

    def stop(self) -> None:
        self.server.should_exit = True


def serve_alongside(app: faust.App, http: WorkerHttp) -> None:
    """Run ``http`` for as long as the Faust app runs."""

    async def observability() -> None:
        try:
            await http.serve()
        finally:
            http.stop()

    app.task(observability)
