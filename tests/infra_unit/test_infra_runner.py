"""The service runner's safety rules, without the real services."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.health import ServicesUnavailable, check_services
from infra.services import process
from infra.services.mysql import provisioning_sql
from infra.services.probes import ProbeError, probe_kafka, probe_mysql, probe_redis
from infra.settings import Settings


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def chatty_port() -> Iterator[int]:
    """A local port whose server answers every connection with garbage."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"x" * 64)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.mark.parametrize("probe", [probe_kafka, probe_mysql, probe_redis])
def test_probes_fail_on_a_closed_port(probe: object, closed_port: int) -> None:
    with pytest.raises(ProbeError, match="nothing answers"):
        probe("127.0.0.1", closed_port)  # type: ignore[operator]


@pytest.mark.parametrize("probe", [probe_kafka, probe_mysql, probe_redis])
def test_probes_reject_another_protocol(probe: object, chatty_port: int) -> None:
    with pytest.raises(ProbeError):
        probe("127.0.0.1", chatty_port)  # type: ignore[operator]


def test_health_check_names_the_service_and_the_fix(closed_port: int, tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "BITEX_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port}",
            "BITEX_MYSQL_PORT": str(closed_port),
            "BITEX_REDIS_URL": f"redis://127.0.0.1:{closed_port}/0",
            "BITEX_STATE_DIR": str(tmp_path),
        }
    )
    with pytest.raises(ServicesUnavailable) as info:
        check_services(settings)
    message = str(info.value)
    assert f"Kafka at 127.0.0.1:{closed_port} (BITEX_KAFKA_BOOTSTRAP)" in message
    assert f"MySQL at 127.0.0.1:{closed_port}" in message
    assert f"Redis at 127.0.0.1:{closed_port} (BITEX_REDIS_URL)" in message
    assert "make up" in message


def test_stop_only_signals_a_process_that_is_still_ours() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "bitex-test-marker"],
        start_new_session=True,
    )
    try:
        # Its command line does not carry the signature: it is left alone.
        assert process.stop(child.pid, "some-other-state-dir", timeout=5) is False
        assert child.poll() is None
        # With the right signature it is stopped (SIGTERM).
        assert process.stop(child.pid, "bitex-test-marker", timeout=5) is True
        assert child.wait(timeout=5) != 0
    finally:
        child.kill()
        child.wait()


def test_a_stale_pidfile_is_ignored_and_removed(tmp_path: Path) -> None:
    pidfile = tmp_path / "svc.pid"
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        gone.wait()
    pidfile.write_text(f"{gone.pid}\n")
    assert process.read_pidfile(pidfile, "anything") is None
    assert not pidfile.exists()

    pidfile.write_text("1\n")  # alive, but not ours
    assert process.read_pidfile(pidfile, str(tmp_path)) is None
    assert not pidfile.exists()


def test_provisioning_sql_quotes_names_and_passwords() -> None:
    sql = provisioning_sql("bit`ex", "us'er", "pa'ss\\word")
    assert "CREATE DATABASE IF NOT EXISTS `bit``ex`" in sql
    assert "IDENTIFIED BY 'pa\\'ss\\\\word'" in sql
    assert "'us\\'er'@'127.0.0.1'" in sql
    assert sql.count("CREATE USER IF NOT EXISTS") == 3  # 127.0.0.1, localhost and %
