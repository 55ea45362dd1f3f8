"""MySQL, as Debian's MariaDB server with its data under <state dir>/mysql.

The runner creates the configured database and user; for a server it did not start,
it only checks that the configured credentials work.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from infra.services import process
from infra.services.base import Service
from infra.services.probes import probe_mysql

# Hosts the bitex user may connect from: TCP loopback, the socket, and anything else
# (the server itself only listens on 127.0.0.1).
USER_HOSTS = ("127.0.0.1", "localhost", "%")


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql_name(value: str) -> str:
    return "`" + value.replace("`", "``") + "`"


def provisioning_sql(database: str, user: str, password: str) -> str:
    """Idempotent SQL creating the database and a user owning it (and `<db>_*` ones)."""
    statements = [
        f"CREATE DATABASE IF NOT EXISTS {_sql_name(database)} "
        "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ]
    # Tests and tools may create scratch databases named <database>_something.
    scratch = _sql_name(database.replace("_", "\\_") + "\\_%")
    for host in USER_HOSTS:
        account = f"{_sql_string(user)}@{_sql_string(host)}"
        statements += [
            f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {_sql_string(password)}",
            f"ALTER USER {account} IDENTIFIED BY {_sql_string(password)}",
            f"GRANT ALL PRIVILEGES ON {_sql_name(database)}.* TO {account}",
            f"GRANT ALL PRIVILEGES ON {scratch}.* TO {account}",
        ]
    return ";\n".join(statements) + ";\n"


class MySQL(Service):
    name = "mysql"
    title = "MySQL"
    env_hint = "BITEX_MYSQL_HOST / BITEX_MYSQL_PORT"
    start_timeout = 90.0
    stop_timeout = 60.0

    @property
    def address(self) -> tuple[str, int]:
        return self.settings.mysql_host, self.settings.mysql_port

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def socket(self) -> Path:
        path = self.home / "mysqld.sock"
        if len(str(path)) < 100:  # sun_path holds 108 bytes
            return path
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"bitex-mysql-{digest}.sock"

    @property
    def signature(self) -> str:
        return f"--datadir={self.data}"

    @property
    def os_user(self) -> str:
        return "root" if os.geteuid() == 0 else getpass.getuser()

    def probe(self) -> str:
        host, port = self.address
        return "server " + probe_mysql(host, port)

    def missing_packages(self) -> list[str]:
        needed = ("mariadbd", "mariadb-install-db", "mariadb")
        return ["mariadb-server"] if not all(process.which(b) for b in needed) else []

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if (self.data / "mysql").is_dir():
            return
        # Initialise into a scratch directory, then rename: a failed attempt leaves
        # nothing half-made behind.
        scratch = self.home / "data.init"
        shutil.rmtree(scratch, ignore_errors=True)
        process.run_logged(
            [
                process.which("mariadb-install-db") or "mariadb-install-db",
                "--no-defaults",
                f"--datadir={scratch}",
                f"--user={self.os_user}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            what="Initialising the MariaDB data directory (mariadb-install-db)",
            logfile=self.logfile,
        )
        shutil.rmtree(self.data, ignore_errors=True)
        scratch.rename(self.data)

    def command(self) -> list[str]:
        return [
            process.which("mariadbd") or "mariadbd",
            "--no-defaults",
            f"--datadir={self.data}",
            f"--socket={self.socket}",
            f"--pid-file={self.home / 'mariadbd.pid'}",
            f"--port={self.address[1]}",
            f"--bind-address={self.bind_host}",
            f"--user={self.os_user}",
            "--skip-name-resolve",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--max-connections=500",
            "--log-warnings=1",  # no line per probe that disconnects before logging in
        ]

    def after_start(self) -> None:
        s = self.settings
        client = process.which("mariadb") or process.which("mysql") or "mariadb"
        sql = provisioning_sql(s.mysql_database, s.mysql_user, s.mysql_password)
        result = subprocess.run(
            [client, "--no-defaults", f"--socket={self.socket}", "-u", self.os_user],
            input=sql,
            text=True,
            capture_output=True,
        )
        if result.returncode != 0:
            raise process.ServiceError(
                f"Creating the MySQL database {s.mysql_database!r} and user {s.mysql_user!r} "
                f"failed: {result.stderr.strip()}"
            )

    def check_external(self) -> None:
        s = self.settings
        try:
            pymysql = importlib.import_module("pymysql")
        except ImportError:
            process.say("  (PyMySQL is not installed yet: the MySQL credentials are not checked)")
            return
        try:
            conn = pymysql.connect(
                host=s.mysql_host,
                port=s.mysql_port,
                user=s.mysql_user,
                password=s.mysql_password,
                database=s.mysql_database,
                connect_timeout=5,
            )
        except pymysql.err.MySQLError as exc:
            db, account = _sql_name(s.mysql_database), f"{_sql_string(s.mysql_user)}@'%'"
            raise process.ServiceError(
                f"The MySQL on {s.mysql_host}:{s.mysql_port} was not started by BitEx and does "
                f"not accept user {s.mysql_user!r} for database {s.mysql_database!r}: {exc}.\n"
                "  Either create them there, as an administrator:\n"
                f"    CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4;\n"
                f"    CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '<password>';\n"
                f"    GRANT ALL PRIVILEGES ON {db}.* TO {account};\n"
                "  or point BitEx at other credentials (BITEX_MYSQL_USER, BITEX_MYSQL_PASSWORD,\n"
                "  BITEX_MYSQL_DATABASE), or stop that server so that `make up` starts its own."
            ) from exc
        conn.close()
