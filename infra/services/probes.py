"""Protocol-level "is it really answering?" checks for Kafka, MySQL and Redis.

A TCP connect is not enough: the kernel completes the handshake as soon as a socket
listens, long before Kafka serves requests. Each probe speaks one tiny request of
the real protocol and raises ``ProbeError`` saying what went wrong. Stdlib only.
"""

from __future__ import annotations

import socket
import struct


class ProbeError(Exception):
    """The endpoint does not answer (yet), or answers something unexpected."""


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ProbeError(f"nothing answers on {host}:{port} ({exc.strerror or exc})") from exc


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by the server")
        buf += chunk
    return bytes(buf)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        _connect(host, port, timeout).close()
    except ProbeError:
        return False
    return True


def probe_kafka(host: str, port: int, timeout: float = 3.0) -> int:
    """Send a Kafka Metadata (v4) request; return how many live brokers it reports.

    Raises ProbeError unless at least one broker is registered (i.e. the broker is
    ready to serve clients, not just listening).
    """
    client_id = b"bitex-probe"
    correlation_id = 0x0B17E7
    header = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
    body = struct.pack(">ib", 0, 0)  # topics: empty array (brokers only); no auto-create
    request = header + body
    try:
        with _connect(host, port, timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            payload = _recv_exact(sock, min(size, 12))
        got_id, _throttle, brokers = struct.unpack(">iii", payload)
    except (OSError, struct.error) as exc:
        msg = f"Kafka on {host}:{port} did not answer a metadata request: {exc}"
        raise ProbeError(msg) from exc
    if got_id != correlation_id:
        raise ProbeError(f"{host}:{port} answered, but not like a Kafka broker")
    if brokers < 1:
        raise ProbeError(f"Kafka on {host}:{port} reports no live broker yet")
    return int(brokers)


def probe_mysql(host: str, port: int, timeout: float = 3.0) -> str:
    """Read the MySQL/MariaDB greeting; return the server version string."""
    try:
        with _connect(host, port, timeout) as sock:
            head = _recv_exact(sock, 4)
            length = int.from_bytes(head[:3], "little")
            payload = _recv_exact(sock, length)
    except (OSError, struct.error) as exc:
        raise ProbeError(f"MySQL on {host}:{port} sent no greeting: {exc}") from exc
    if payload[:1] == b"\xff":
        # An error packet instead of a greeting (e.g. "Host ... is not allowed to
        # connect"): the server runs, but will not talk to us from here.
        code = int.from_bytes(payload[1:3], "little")
        message = payload[3:].decode("utf-8", "replace")
        return f"answers with error {code}: {message}"
    if payload[:1] != b"\x0a":
        raise ProbeError(f"{host}:{port} answered, but not like a MySQL server")
    return payload[1:].split(b"\x00", 1)[0].decode("ascii", "replace")


def probe_redis(host: str, port: int, timeout: float = 3.0) -> str:
    """Send PING; return the reply line. A server that wants a password counts as up."""
    try:
        with _connect(host, port, timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        raise ProbeError(f"Redis on {host}:{port} did not answer PING: {exc}") from exc
    line = reply.decode("utf-8", "replace").strip()
    if line == "+PONG" or line.startswith(("-NOAUTH", "-WRONGPASS")):
        return line
    if line.startswith("-LOADING"):
        raise ProbeError(f"Redis on {host}:{port} is still loading its data")
    raise ProbeError(f"{host}:{port} answered {line[:60]!r}, not like a Redis server")
