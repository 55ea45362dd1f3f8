"""Where BitEx finds Kafka, MySQL, Redis and its own HTTP API.

Every value comes from a ``BITEX_`` environment variable with a local default, so
the same code runs against the services ``make up`` starts or against external ones.
Stdlib only: the local service runner imports this before any dependency is installed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_cache_dir(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "bitex"


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    """Split ``host:port`` (or ``[v6]:port``); the port is optional."""
    parts = urlsplit("//" + address.strip())
    host = parts.hostname or "127.0.0.1"
    return host, parts.port or default_port


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    mysql_host: str = "127.0.0.1"
    mysql_port: int = 3306
    mysql_user: str = "bitex"
    mysql_password: str = "bitex"
    mysql_database: str = "bitex"
    redis_url: str = "redis://127.0.0.1:6379/0"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    state_dir: Path = REPO_ROOT / ".bitex"
    cache_dir: Path = Path.home() / ".cache" / "bitex"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        d = cls()
        state_dir = Path(e.get("BITEX_STATE_DIR", str(d.state_dir)))
        if not state_dir.is_absolute():
            state_dir = REPO_ROOT / state_dir
        return cls(
            kafka_bootstrap=e.get("BITEX_KAFKA_BOOTSTRAP", d.kafka_bootstrap),
            mysql_host=e.get("BITEX_MYSQL_HOST", d.mysql_host),
            mysql_port=int(e.get("BITEX_MYSQL_PORT", d.mysql_port)),
            mysql_user=e.get("BITEX_MYSQL_USER", d.mysql_user),
            mysql_password=e.get("BITEX_MYSQL_PASSWORD", d.mysql_password),
            mysql_database=e.get("BITEX_MYSQL_DATABASE", d.mysql_database),
            redis_url=e.get("BITEX_REDIS_URL", d.redis_url),
            http_host=e.get("BITEX_HTTP_HOST", d.http_host),
            http_port=int(e.get("BITEX_HTTP_PORT", d.http_port)),
            state_dir=state_dir,
            cache_dir=Path(e.get("BITEX_CACHE_DIR", str(_default_cache_dir(e)))),
        )

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        """The first bootstrap server: the one the local runner starts or probes."""
        return _host_port(self.kafka_bootstrap.split(",")[0], 9092)

    @property
    def redis_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.redis_url)
        return parts.hostname or "127.0.0.1", parts.port or 6379

    def _mysql_url(self, password: str) -> str:
        user = quote(self.mysql_user, safe="")
        return (
            f"mysql+pymysql://{user}:{password}@{self.mysql_host}:{self.mysql_port}"
            f"/{quote(self.mysql_database, safe='')}?charset=utf8mb4"
        )

    @property
    def mysql_url(self) -> str:
        """SQLAlchemy URL (PyMySQL driver) with the credentials."""
        return self._mysql_url(quote(self.mysql_password, safe=""))

    @property
    def mysql_url_safe(self) -> str:
        """``mysql_url`` with the password masked, for printing."""
        return self._mysql_url("***")

    @property
    def http_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"
