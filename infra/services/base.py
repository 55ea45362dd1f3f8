"""What every local service (Kafka, MySQL, Redis) tells the runner about itself."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from infra.services import process
from infra.settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Service:
    name = "service"  # directory under the state dir, pidfile and log names
    title = "Service"  # for humans
    env_hint = "BITEX_..."  # the variable that points BitEx elsewhere
    start_timeout = 60.0
    stop_timeout = 30.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home: Path = settings.state_dir / self.name
        self.pidfile = self.home / f"{self.name}.pid"
        self.logfile = self.home / f"{self.name}.log"

    # -- to override ----------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        raise NotImplementedError

    def endpoint(self) -> str:
        host, port = self.address
        return f"{host}:{port}"

    def probe(self) -> str:
        """A one-line description of the answering server; raises ProbeError."""
        raise NotImplementedError

    def missing_packages(self) -> list[str]:
        """Debian packages needed to start this service here that are not installed."""
        return []

    def prepare(self) -> None:
        """Everything before the first start: downloads, data directory initialisation."""

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def signature(self) -> str:
        """A string in our process's command line that names our own state directory."""
        raise NotImplementedError

    def after_start(self) -> None:
        """Provisioning once the server answers (e.g. database and user)."""

    def check_external(self) -> None:
        """Checks on a server BitEx did not start (e.g. that our credentials work)."""

    # -- shared -----------------------------------------------------------------------------

    @property
    def bind_host(self) -> str:
        host = self.address[0]
        return "127.0.0.1" if host == "localhost" else host

    def running_pid(self) -> int | None:
        return process.read_pidfile(self.pidfile, self.signature)

    def start(self) -> int:
        self.home.mkdir(parents=True, exist_ok=True)
        return process.start_detached(
            self.command(), cwd=self.home, logfile=self.logfile, pidfile=self.pidfile
        )

    def wait_ready(self, pid: int) -> None:
        process.wait_ready(
            self.probe,
            title=self.title,
            pid=pid,
            logfile=self.logfile,
            timeout=self.start_timeout,
        )
