"""Redis, as Debian's redis-server with its append-only file under <state dir>/redis."""

from __future__ import annotations

from pathlib import Path

from infra.services import process
from infra.services.base import Service
from infra.services.probes import probe_redis


class Redis(Service):
    name = "redis"
    title = "Redis"
    env_hint = "BITEX_REDIS_URL"
    start_timeout = 60.0
    stop_timeout = 30.0

    @property
    def address(self) -> tuple[str, int]:
        return self.settings.redis_host_port

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def signature(self) -> str:
        return f"--dir {self.data}"

    def probe(self) -> str:
        host, port = self.address
        return "PING " + probe_redis(host, port)

    def missing_packages(self) -> list[str]:
        return [] if process.which("redis-server") else ["redis-server"]

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            process.which("redis-server") or "redis-server",
            "--bind",
            self.bind_host,
            "--port",
            str(self.address[1]),
            "--dir",
            str(self.data),
            "--daemonize",
            "no",
            "--appendonly",
            "yes",
            # Keep our command line (with --dir) visible in /proc: that is how `down`
            # recognises the process it started.
            "--set-proc-title",
            "no",
            "--logfile",
            "",
        ]
