"""Who is asking: bearer sessions and signed API keys, for both gateways.

Two schemes, both from the product contract:

- **Bearer session.** ``Authorization: Bearer <token>``. The command gateway
  stores each session in Redis under ``keys.session(sha256_hex(token))`` as
  JSON ``{"user_id", "account_id", "role", "email"}`` with a TTL equal to the
  session's expiry; the token itself is never stored. A session carries every
  permission. (The command gateway reads it in its rate-limit script,
  ``infra.rate_limits``, which takes ``user_id`` from that JSON.)
- **Signed API key.** Headers ``BX-KEY`` (the key id), ``BX-TS`` (milliseconds
  since the epoch) and ``BX-SIGN`` = hex HMAC-SHA256(secret, ts + METHOD +
  path_with_query + body). The key's row (table ``api_keys``, joined with
  ``users``) gives its permissions. Its secret is never stored either: it is
  derived from the exchange's master key, ``api_key_secret(master, key_id)``,
  and shown to the user once when the key is created. A request must be signed
  within 5 s of the server's clock, and a signature is accepted once (Redis
  ``SET NX`` on ``keys.seen_signature``, kept longer than the window).

Failures raise :class:`AuthError` with a stable ``code`` and an HTTP status;
the gateways turn it into their error answer. ``Authenticator`` decides who
the caller is; what they may do is ``Principal.require``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio.to_thread
import orjson
import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.engine import Engine

from infra.read_models import api_keys, users
from infra.redis_keys import RedisKeys
from infra.settings import Settings

SIGNING_WINDOW_MS = 5000
"""How far BX-TS may be from the server's clock, either way."""

SEEN_SIGNATURE_SECONDS = 10
"""How long a used signature is remembered: longer than any timestamp it could carry
stays acceptable (2 x the window)."""

KEY_CACHE_SECONDS = 5.0
"""How long an API key's row is trusted in process: a revocation takes effect within this."""

ALL_PERMISSIONS = frozenset({"read", "trade", "withdraw"})

MASTER_KEY_ENV = "BITEX_API_KEY_MASTER"
MASTER_KEY_FILE = "api-key-master"

Via = Literal["session", "api_key"]


class AuthError(Exception):
    """The request is not authenticated (401) or not allowed (403)."""

    def __init__(
        self, code: str, message: str, status: int = 401, *, invalid_token: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.invalid_token = invalid_token

    @property
    def headers(self) -> dict[str, str]:
        """``WWW-Authenticate`` for a 401 (RFC 9110: a 401 names its schemes)."""
        if self.status != 401:
            return {}
        challenge = 'Bearer realm="bitex"'
        if self.invalid_token:
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": f'{challenge}, BX-SIGN realm="bitex"'}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the user, the account they trade from, what they may do."""

    user_id: str
    account_id: str
    role: str
    permissions: frozenset[str]
    via: Via
    key_id: str | None = None
    """The API key that signed the request (``via == "api_key"``)."""

    def require(self, permission: str) -> None:
        """Raise a 403 ``forbidden`` unless the caller holds ``permission``."""
        if permission not in self.permissions:
            raise AuthError("forbidden", f"this API key lacks the {permission!r} permission", 403)


# -- signing -------------------------------------------------------------------


def sha256_hex(token: str) -> str:
    """The digest a session token is stored under (the token itself never is)."""
    return hashlib.sha256(token.encode()).hexdigest()


def api_key_secret(master_key: bytes, key_id: str) -> str:
    """The secret of API key ``key_id``: hex HMAC-SHA256(master_key, key_id)."""
    return hmac.new(master_key, key_id.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, ts: int | str, method: str, path_with_query: str, body: bytes = b"") -> str:
    """``BX-SIGN`` for a request: hex HMAC-SHA256(secret, ts + METHOD + path_with_query + body).

    The method is upper-cased; the path is as sent, with its query string.
    """
    message = f"{ts}{method.upper()}{path_with_query}".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(
    key_id: str,
    secret: str,
    method: str,
    path_with_query: str,
    body: bytes = b"",
    now_ms: int | None = None,
) -> dict[str, str]:
    """The three API-key headers for one request (what a client sends)."""
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    return {
        "BX-KEY": key_id,
        "BX-TS": str(ts),
        "BX-SIGN": sign(secret, ts, method, path_with_query, body),
    }


# -- the master key ------------------------------------------------------------


def load_master_key(settings: Settings, env: Mapping[str, str] | None = None) -> bytes:
    """The key every API-key secret is derived from.

    ``BITEX_API_KEY_MASTER`` (hex, at least 16 bytes) if set (a Kubernetes Secret in
    production); otherwise ``<state_dir>/api-key-master``, created on first use with
    32 random bytes (written as hex, mode 0600). Creation is atomic: concurrent
    first starts of both gateways agree on one key.
    """
    e = os.environ if env is None else env
    raw = e.get(MASTER_KEY_ENV, "").strip()
    if raw:
        return _parse_master(raw, MASTER_KEY_ENV)
    path = settings.state_dir / MASTER_KEY_FILE
    if not path.exists():
        _create_master(path)
    return _parse_master(path.read_text().strip(), str(path))


def _parse_master(raw: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        msg = f"the API key master key in {where} is not hex"
        raise ValueError(msg) from None
    if len(key) < 16:
        msg = f"the API key master key in {where} is shorter than 16 bytes"
        raise ValueError(msg)
    return key


def _create_master(path: Path) -> None:
    """Write a fresh key to a private temporary file, then link it into place.

    ``os.link`` fails if the file exists, so a process that loses the race keeps
    the winner's key, and nobody ever reads a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_bytes(32).hex() + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)  # the first writer wins
    finally:
        os.unlink(temporary)


# -- authenticating a request ---------------------------------------------------


def _expired() -> AuthError:
    return AuthError("unauthorized", "the session token is unknown or expired", invalid_token=True)


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or ``AuthError``."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("unauthorized", "the Authorization header must be 'Bearer <token>'")
    return token


def session_principal(stored: bytes | str | None) -> Principal:
    """The caller a stored session names (as ``open_session`` wrote it), or a 401 if
    there is none or it does not parse."""
    if stored is None:
        raise _expired()
    try:
        session = orjson.loads(stored)
        return Principal(
            user_id=str(session["user_id"]),
            account_id=str(session["account_id"]),
            role=str(session["role"]),
            permissions=ALL_PERMISSIONS,
            via="session",
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise _expired() from None


@dataclass(frozen=True, slots=True)
class _KeyRow:
    key_id: str
    user_id: str
    account_id: str
    role: str
    permissions: frozenset[str]


class Authenticator:
    """Authenticates requests against the sessions in Redis and the API keys in MySQL.

    One per process, shared by every request. API-key rows (and unknown key ids)
    are cached for ``cache_seconds``; ``forget`` drops one at once (the command
    gateway calls it when it revokes a key).
    """

    def __init__(
        self,
        engine: Engine,
        redis: aioredis.Redis,
        keys: RedisKeys,
        master_key: bytes,
        *,
        window_ms: int = SIGNING_WINDOW_MS,
        cache_seconds: float = KEY_CACHE_SECONDS,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.keys = keys
        self.master_key = master_key
        self.window_ms = window_ms
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, _KeyRow | None]] = {}

    async def authenticate(
        self,
        method: str,
        path_with_query: str,
        body: bytes,
        headers: Mapping[str, str],
        now_ms: int | None = None,
    ) -> Principal:
        """The caller of a request, or ``AuthError``.

        A bearer token wins if both schemes are present. ``path_with_query`` is the
        raw path and query string as the client sent and signed them.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        authorization = lowered.get("authorization")
        if authorization is not None:
            return await self._session(authorization)
        if "bx-key" in lowered or "bx-sign" in lowered or "bx-ts" in lowered:
            now = int(time.time() * 1000) if now_ms is None else now_ms
            return await self._api_key(method, path_with_query, body, lowered, now)
        raise AuthError(
            "unauthorized", "authentication required: a bearer token or a signed API key"
        )

    async def authenticate_token(self, token: str) -> Principal:
        """The session of a bare bearer token (a WebSocket ``auth`` message carries one)."""
        return await self._session(f"Bearer {token}")

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    # -- bearer ---------------------------------------------------------------

    async def _session(self, authorization: str) -> Principal:
        token = bearer_token(authorization)
        return session_principal(await self.redis.get(self.keys.session(sha256_hex(token))))

    # -- API keys ---------------------------------------------------------------

    async def _api_key(
        self, method: str, path_with_query: str, body: bytes, headers: Mapping[str, str], now: int
    ) -> Principal:
        key_id = headers.get("bx-key", "")
        ts = headers.get("bx-ts", "")
        signature = headers.get("bx-sign", "").lower()
        if not (key_id and ts and signature):
            raise AuthError("unauthorized", "a signed request needs BX-KEY, BX-TS and BX-SIGN")
        if not (ts.isascii() and ts.isdigit() and len(ts) <= 16):
            raise AuthError("unauthorized", "BX-TS must be milliseconds since the epoch")
        if abs(now - int(ts)) > self.window_ms:
            raise AuthError(
                "stale_timestamp",
                f"BX-TS is more than {self.window_ms} ms from the server's clock",
            )
        row = await self._key_row(key_id)
        if row is None:
            raise AuthError("unknown_key", "the API key is unknown or revoked")
        expected = sign(api_key_secret(self.master_key, key_id), ts, method, path_with_query, body)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise AuthError("bad_signature", "BX-SIGN does not match the request")
        first = await self.redis.set(
            self.keys.seen_signature(key_id, signature), b"1", nx=True, ex=SEEN_SIGNATURE_SECONDS
        )
        if not first:
            raise AuthError("replayed_signature", "this signature was already used")
        return Principal(
            user_id=row.user_id,
            account_id=row.account_id,
            role=row.role,
            permissions=row.permissions,
            via="api_key",
            key_id=key_id,
        )

    async def _key_row(self, key_id: str) -> _KeyRow | None:
        if len(key_id) > 64:
            return None
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = await anyio.to_thread.run_sync(self._load_key, key_id)
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[key_id] = (now + self.cache_seconds, row)
        return row

    def _load_key(self, key_id: str) -> _KeyRow | None:
        query = (
            select(
                api_keys.c.permissions,
                api_keys.c.revoked_at,
                users.c.user_id,
                users.c.account_id,
                users.c.role,
            )
            .join(users, users.c.user_id == api_keys.c.user_id)
            .where(api_keys.c.key_id == key_id)
        )
        with self.engine.connect() as connection:
            found = connection.execute(query).first()
        if found is None or found.revoked_at is not None:
            return None
        permissions = frozenset(p.strip() for p in found.permissions.split(",") if p.strip())
        return _KeyRow(key_id, found.user_id, found.account_id, found.role, permissions)


# -- passwords and sessions -------------------------------------------------------

SESSION_SECONDS = 24 * 3600
"""How long a session token lives (``BITEX_SESSION_SECONDS`` overrides)."""

_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
"""argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane). A stored
hash carries its own parameters, so raising them later still verifies old ones."""

_DECOY_HASH = _HASHER.hash(secrets.token_hex(16))
"""Checked against when the address is unknown, so a failed login takes as long either way."""


def hash_password(password: str) -> str:
    """An argon2id hash (deliberately slow: call it off the event loop)."""
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; with no hash, spend the same time and say no."""
    try:
        return _HASHER.verify(password_hash or _DECOY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def session_seconds(env: Mapping[str, str] | None = None) -> int:
    e = os.environ if env is None else env
    return int(e.get("BITEX_SESSION_SECONDS", SESSION_SECONDS))


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    expires_in: int


async def open_session(
    redis: aioredis.Redis,
    keys: RedisKeys,
    *,
    user_id: str,
    account_id: str,
    role: str,
    email: str,
    seconds: int,
) -> Session:
    """A new bearer token; only its digest is stored, with the session's expiry as TTL."""
    token = secrets.token_urlsafe(32)
    body = {"user_id": user_id, "account_id": account_id, "role": role, "email": email}
    await redis.set(keys.session(sha256_hex(token)), orjson.dumps(body), ex=seconds)
    return Session(token, seconds)


async def close_session(redis: aioredis.Redis, keys: RedisKeys, token: str) -> bool:
    """End a session (logout); False if it had ended already."""
    return bool(await redis.delete(keys.session(sha256_hex(token))))
