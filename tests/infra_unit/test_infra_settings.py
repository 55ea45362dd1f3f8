"""Settings come from BITEX_ variables with the defaults design.md promises."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from infra.cli import main
from infra.settings import REPO_ROOT, Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert (s.mysql_host, s.mysql_port, s.mysql_user, s.mysql_database) == (
        "127.0.0.1",
        3306,
        "bitex",
        "bitex",
    )
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.http_url == "http://127.0.0.1:8000"
    assert s.state_dir == REPO_ROOT / ".bitex"
    assert s.kafka_host_port == ("127.0.0.1", 9092)
    assert s.redis_host_port == ("127.0.0.1", 6379)


def test_environment_overrides(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "BITEX_KAFKA_BOOTSTRAP": "kafka-1:19092,kafka-2:19092",
            "BITEX_MYSQL_HOST": "db.internal",
            "BITEX_MYSQL_PORT": "3307",
            "BITEX_MYSQL_USER": "ex",
            "BITEX_MYSQL_PASSWORD": "p@ss:w/rd%",
            "BITEX_MYSQL_DATABASE": "exchange",
            "BITEX_REDIS_URL": "redis://cache:6380/2",
            "BITEX_HTTP_PORT": "9000",
            "BITEX_STATE_DIR": str(tmp_path),
        }
    )
    assert s.kafka_host_port == ("kafka-1", 19092)
    assert s.redis_host_port == ("cache", 6380)
    assert s.http_url == "http://127.0.0.1:9000"
    assert s.state_dir == tmp_path
    url = make_url(s.mysql_url)
    assert (url.drivername, url.host, url.port) == ("mysql+pymysql", "db.internal", 3307)
    assert (url.username, url.password, url.database) == ("ex", "p@ss:w/rd%", "exchange")
    assert "p@ss" not in s.mysql_url_safe


def test_relative_state_dir_is_under_the_repo() -> None:
    assert Settings.from_env({"BITEX_STATE_DIR": "var/x"}).state_dir == REPO_ROOT / "var/x"


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().mysql_port = 1  # type: ignore[misc]


def test_endpoints_command_hides_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["endpoints"]) == 0
    out = capsys.readouterr().out
    assert "Kafka" in out
    assert "http://" in out
    assert ":***@" in out
