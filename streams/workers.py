"""BitEx's roles as processes (``bitex worker ROLE``, ``bitex serve``) on one topic prefix.

Used by ``bitex run``, the integration tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from domain.markets import Market, demo_markets
from infra.command_client import CommandClient
from infra.event_records import Headers
from infra.kafka_admin import delete_topics, ensure_topics
from infra.kafka_io import end_offsets, read_topic
from infra.market_listing import list_markets
from infra.settings import REPO_ROOT, Settings
from infra.topics import TopicMap
from infra.worker_http import LOCAL_PORTS, metrics_port

WORKER_ROLES = ("accounts", "matching")
"""The write-side processors."""
READ_ROLES = ("projections", "gateway")
"""The projections worker and the HTTP gateway, which ``bitex run`` starts too."""

_ARGS = {
    "accounts": ["worker", "accounts"],
    "matching": ["worker", "matching"],
    "projections": ["worker", "projections"],
    "gateway": ["serve"],
}
_READY = {"gateway": "Application startup complete"}
"""What a role's log says once it serves (Faust workers: ``[^Worker]: Ready``)."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class WriteSide:
    """Role processes (the processors, and the projections and gateway if asked) on prefixed
    topics; each one's output goes to ``<log_dir>/worker-<role>.log``.

    Once both processors first answer, ``markets`` (the demo markets unless told)
    are listed through the command path, as an operator lists them: nothing else
    tells the exchange which markets exist.
    """

    def __init__(
        self,
        settings: Settings,
        topics: TopicMap,
        log_dir: Path,
        env: dict[str, str] | None = None,
        *,
        local_metrics_ports: bool = False,
        markets: Mapping[str, Market] | None = None,
    ) -> None:
        """Each Faust role serves its probes and metrics on a free port of its own, or,
        with ``local_metrics_ports``, on its fixed local one (``infra.worker_http``)."""
        self.markets = dict(demo_markets() if markets is None else markets)
        self._listed = False
        self.settings = settings
        self.env = env or {}
        self.topics = topics
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = {}
        self.local_metrics_ports = local_metrics_ports
        self.metrics_ports: dict[str, int] = {}

    async def create_topics(self) -> None:
        await ensure_topics(self.topics.specs(), self.settings)

    async def delete_topics(self) -> None:
        """Delete the prefix's topics, and the (empty) table directories its Faust apps made."""
        await delete_topics([spec.name for spec in self.topics.specs()], self.settings)
        if self.topics.prefix:
            for directory in (self.settings.state_dir / "faust").glob(f"{self.topics.prefix}*"):
                shutil.rmtree(directory, ignore_errors=True)

    def log_path(self, role: str) -> Path:
        return self.log_dir / f"worker-{role}.log"

    def start(self, role: str) -> None:
        env = {
            **os.environ,
            **self.env,
            "BITEX_TOPIC_PREFIX": self.topics.prefix,
            "PYTHONUNBUFFERED": "1",
        }
        if role in LOCAL_PORTS and "BITEX_METRICS_PORT" not in self.env:
            if role not in self.metrics_ports:
                local = metrics_port(role) if self.local_metrics_ports else None
                self.metrics_ports[role] = local or free_port()
            env["BITEX_METRICS_PORT"] = str(self.metrics_ports[role])
        log = self.log_path(role).open("ab")
        self.processes[role] = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", *_ARGS[role]],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.starts[role] = self.starts.get(role, 0) + 1

    def base_url(self, role: str) -> str:
        """Where a role answers ``/healthz``, ``/readyz`` and ``/metrics``."""
        if role == "gateway":
            port = int(self.env.get("BITEX_HTTP_PORT", self.settings.http_port))
        else:
            port = int(self.env.get("BITEX_METRICS_PORT", self.metrics_ports[role]))
        return f"http://127.0.0.1:{port}"

    def exited(self) -> list[str]:
        """Roles whose process has ended."""
        return [role for role, process in self.processes.items() if process.poll() is not None]

    def kill9(self, role: str) -> None:
        process = self.processes[role]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    async def wait_ready(self, role: str, timeout: float = 60) -> None:
        """Until the worker has joined its group (its log says so) for the latest start;
        the first time both processors are, the markets are listed."""
        await self._wait_log(role, timeout)
        if self._listed or not all(r in self.processes for r in WORKER_ROLES):
            return
        for other in WORKER_ROLES:
            await self._wait_log(other, timeout)
        async with CommandClient(self.settings, self.topics) as client:
            await list_markets(client, self.markets.values(), timeout)
        self._listed = True

    async def _wait_log(self, role: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            marker = _READY.get(role, "[^Worker]: Ready")
            ready = self.log_path(role).read_text(errors="replace").count(marker)
            if ready >= self.starts[role]:
                return
            if self.processes[role].poll() is not None:
                raise AssertionError(f"{role} worker exited; see {self.log_path(role)}")
            await asyncio.sleep(0.2)
        raise AssertionError(f"{role} worker not ready after {timeout} s")

    async def wait_idle(self, timeout: float = 120) -> None:
        """Until both groups have committed everything in their inboxes, twice in a row."""
        deadline = time.monotonic() + timeout
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            settled_checks = 0
            while settled_checks < 2:
                if time.monotonic() > deadline:
                    raise AssertionError(f"write side still busy after {timeout} s")
                await asyncio.sleep(1.5)
                settled_checks = settled_checks + 1 if await self._caught_up(admin) else 0
        finally:
            await admin.close()

    async def _caught_up(self, admin: AIOKafkaAdminClient) -> bool:
        ends = await end_offsets(
            self.settings, [self.topics.account_commands, self.topics.matching_commands]
        )
        for role, inbox in (
            ("accounts", self.topics.account_commands),
            ("matching", self.topics.matching_commands),
        ):
            committed = await admin.list_consumer_group_offsets(f"{self.topics.prefix}bitex-{role}")
            for tp, end in ends.items():
                if tp.topic != inbox:
                    continue
                meta = committed.get(tp)
                if (meta.offset if meta is not None else 0) < end:
                    return False
        return True

    async def read_partitions(
        self, topic: str
    ) -> dict[tuple[str, int], list[tuple[bytes, Headers]]]:
        """Every record of a topic, by (topic, partition)."""
        out: dict[tuple[str, int], list[tuple[bytes, Headers]]] = {}
        for partition, value, headers in await read_topic(self.settings, topic):
            out.setdefault((topic, partition), []).append((value, headers))
        return out

    async def read(self, topic: str) -> list[tuple[bytes, Headers]]:
        """Every record of a topic, partition by partition."""
        return [(v, h) for _, v, h in await read_topic(self.settings, topic)]
