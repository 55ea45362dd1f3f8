"""Request authentication (infra/auth.py) without services.

The key table is an in-memory SQLite copy of ``users`` and ``api_keys``; Redis
is a dictionary with the two commands the authenticator uses.
"""

from __future__ import annotations

import hashlib
import hmac
import stat
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy
from sqlalchemy import insert, update
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from infra.auth import (
    ALL_PERMISSIONS,
    Authenticator,
    AuthError,
    Principal,
    api_key_secret,
    load_master_key,
    sha256_hex,
    sign,
    signed_headers,
)
from infra.read_models import api_keys, users
from infra.redis_keys import RedisKeys
from infra.settings import Settings

MASTER = b"m" * 32
KEYS = RedisKeys.for_prefix("unit-")
NOW = 1_770_000_000_000
T0 = datetime(2026, 1, 1)


class FakeRedis:
    """GET and SET (NX, EX) on a dict: all the authenticator asks of Redis."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(
        self, key: str, value: bytes, nx: bool = False, ex: int | None = None
    ) -> bool | None:
        assert ex is not None
        assert ex > 0
        if nx and key in self.data:
            return None
        self.data[key] = value
        return True


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = sqlalchemy.create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    users.metadata.create_all(engine, tables=[users, api_keys])
    with engine.begin() as connection:
        connection.execute(
            insert(users).values(
                user_id="u-1",
                email="alice@example.com",
                password_hash="x",
                role="user",
                account_id="a-1",
                created_at=T0,
            )
        )
        for key_id, permissions in (("k-read", "read"), ("k-trade", "trade,withdraw")):
            connection.execute(
                insert(api_keys).values(
                    key_id=key_id,
                    user_id="u-1",
                    permissions=permissions,
                    label="",
                    created_at=T0,
                )
            )
    yield engine
    engine.dispose()


@pytest.fixture
def redis() -> FakeRedis:
    return FakeRedis()


@pytest.fixture
def auth(engine: Engine, redis: FakeRedis) -> Authenticator:
    return Authenticator(engine, redis, KEYS, MASTER)  # type: ignore[arg-type]


def headers_for(key_id: str, path: str = "/v1/orders", body: bytes = b"", now: int = NOW) -> Any:
    return signed_headers(key_id, api_key_secret(MASTER, key_id), "GET", path, body, now)


async def refused(auth: Authenticator, headers: dict[str, str], **kwargs: Any) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(
            kwargs.get("method", "GET"),
            kwargs.get("path", "/v1/orders"),
            kwargs.get("body", b""),
            headers,
            now_ms=kwargs.get("now", NOW),
        )
    return caught.value


# -- signing ----------------------------------------------------------------------


def test_secret_and_signature_are_the_documented_hmacs() -> None:
    secret = api_key_secret(MASTER, "k-1")
    assert secret == hmac.new(MASTER, b"k-1", hashlib.sha256).hexdigest()
    expected = hmac.new(
        secret.encode(), b'1700000000000POST/v1/orders?x=1{"a":1}', hashlib.sha256
    ).hexdigest()
    assert sign(secret, 1700000000000, "post", "/v1/orders?x=1", b'{"a":1}') == expected
    assert headers_for("k-1", "/v1/orders", b"", 5) == {
        "BX-KEY": "k-1",
        "BX-TS": "5",
        "BX-SIGN": sign(secret, 5, "GET", "/v1/orders"),
    }
    assert sha256_hex("tok") == hashlib.sha256(b"tok").hexdigest()


def test_master_key_from_the_environment(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert load_master_key(settings, {"BITEX_API_KEY_MASTER": "ab" * 32}) == b"\xab" * 32
    with pytest.raises(ValueError, match="not hex"):
        load_master_key(settings, {"BITEX_API_KEY_MASTER": "xyz"})
    with pytest.raises(ValueError, match="shorter"):
        load_master_key(settings, {"BITEX_API_KEY_MASTER": "abcd"})
    assert not (tmp_path / "api-key-master").exists()


def test_master_key_file_is_created_once_private(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    first = load_master_key(settings, {})
    assert len(first) == 32
    path = tmp_path / "state" / "api-key-master"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(settings, {}) == first
    assert [p.name for p in path.parent.iterdir()] == ["api-key-master"]  # no temporaries left
    other = Settings(state_dir=tmp_path / "elsewhere")
    assert load_master_key(other, {}) != first


# -- API keys --------------------------------------------------------------------------


async def test_a_good_signature_names_the_keys_user(auth: Authenticator) -> None:
    body = b'{"symbol":"BTC-USDT"}'
    headers = headers_for("k-read", "/v1/orders?symbol=BTC-USDT", body)
    principal = await auth.authenticate(
        "GET", "/v1/orders?symbol=BTC-USDT", body, headers, now_ms=NOW + 4999
    )
    assert principal == Principal(
        user_id="u-1",
        account_id="a-1",
        role="user",
        permissions=frozenset({"read"}),
        via="api_key",
        key_id="k-read",
    )
    principal.require("read")
    with pytest.raises(AuthError) as caught:
        principal.require("trade")
    assert (caught.value.code, caught.value.status, caught.value.headers) == ("forbidden", 403, {})


async def test_header_names_are_case_insensitive(auth: Authenticator) -> None:
    headers = {name.lower(): value for name, value in headers_for("k-read").items()}
    assert (await auth.authenticate("GET", "/v1/orders", b"", headers, NOW)).key_id == "k-read"


async def test_a_signature_is_accepted_once(auth: Authenticator, redis: FakeRedis) -> None:
    headers = headers_for("k-read")
    await auth.authenticate("GET", "/v1/orders", b"", headers, now_ms=NOW)
    assert (await refused(auth, headers)).code == "replayed_signature"
    assert KEYS.seen_signature("k-read", headers["BX-SIGN"]) in redis.data


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"path": "/v1/orders?symbol=ETH-USDT"}, "bad_signature"),
        ({"method": "DELETE"}, "bad_signature"),
        ({"body": b"{}"}, "bad_signature"),
        ({"now": NOW + 5001}, "stale_timestamp"),
        ({"now": NOW - 5001}, "stale_timestamp"),
    ],
)
async def test_what_the_signature_covers(
    auth: Authenticator, change: dict[str, Any], code: str
) -> None:
    error = await refused(auth, headers_for("k-read"), **change)
    assert (error.code, error.status) == (code, 401)
    assert error.headers["WWW-Authenticate"].startswith("Bearer")


async def test_bad_headers(auth: Authenticator) -> None:
    good = headers_for("k-read")
    assert (await refused(auth, {**good, "BX-SIGN": "f" * 64})).code == "bad_signature"
    assert (await refused(auth, {**good, "BX-SIGN": "é"})).code == "bad_signature"
    assert (await refused(auth, {**good, "BX-TS": "12a"})).code == "unauthorized"
    assert (await refused(auth, {**good, "BX-TS": "-5"})).code == "unauthorized"
    no_sign = {k: v for k, v in good.items() if k != "BX-SIGN"}
    assert (await refused(auth, no_sign)).code == "unauthorized"
    assert (await refused(auth, {})).code == "unauthorized"
    assert (await refused(auth, headers_for("k-nobody"))).code == "unknown_key"
    assert (await refused(auth, headers_for("k" * 65))).code == "unknown_key"


async def test_a_stale_or_bad_request_does_not_burn_the_signature(auth: Authenticator) -> None:
    headers = headers_for("k-read")
    await refused(auth, headers, now=NOW + 60_000)
    await refused(auth, headers, path="/v1/fills")
    await auth.authenticate("GET", "/v1/orders", b"", headers, now_ms=NOW)


async def test_revocation_is_seen_after_the_cache_or_at_once_when_forgotten(
    auth: Authenticator, engine: Engine
) -> None:
    await auth.authenticate("GET", "/v1/orders", b"", headers_for("k-read", now=NOW), NOW)
    with engine.begin() as connection:
        connection.execute(
            update(api_keys).where(api_keys.c.key_id == "k-read").values(revoked_at=T0)
        )
    # Still cached for a few seconds...
    await auth.authenticate("GET", "/v1/orders", b"", headers_for("k-read", now=NOW + 1), NOW + 1)
    auth.forget("k-read")
    error = await refused(auth, headers_for("k-read", now=NOW + 2), now=NOW + 2)
    assert error.code == "unknown_key"

    fresh = Authenticator(auth.engine, auth.redis, KEYS, MASTER, cache_seconds=0)
    assert (await refused(fresh, headers_for("k-read", now=NOW + 3), now=NOW + 3)).code == (
        "unknown_key"
    )


async def test_a_key_signed_with_another_master_is_refused(
    engine: Engine, redis: FakeRedis
) -> None:
    other = Authenticator(engine, redis, KEYS, b"o" * 32)  # type: ignore[arg-type]
    assert (await refused(other, headers_for("k-read"))).code == "bad_signature"


# -- bearer sessions ----------------------------------------------------------------------


async def test_a_session_carries_every_permission(auth: Authenticator, redis: FakeRedis) -> None:
    session = {"user_id": "u-1", "account_id": "a-1", "role": "operator", "email": "a@x"}
    redis.data[KEYS.session(sha256_hex("tok-1"))] = orjson.dumps(session)
    principal = await auth.authenticate("GET", "/v1/orders", b"", {"Authorization": "Bearer tok-1"})
    assert principal == Principal("u-1", "a-1", "operator", ALL_PERMISSIONS, "session")
    assert await auth.authenticate_token("tok-1") == principal
    lower = await auth.authenticate("GET", "/", b"", {"authorization": "bearer  tok-1 "})
    assert lower == principal


@pytest.mark.parametrize(
    "authorization", ["Bearer tok-2", "Bearer ", "Basic dTpw", "tok-1", "Bearer corrupt"]
)
async def test_bad_bearer_tokens(auth: Authenticator, redis: FakeRedis, authorization: str) -> None:
    redis.data[KEYS.session(sha256_hex("corrupt"))] = b"{not json"
    error = await refused(auth, {"Authorization": authorization})
    assert (error.code, error.status) == ("unauthorized", 401)
    assert error.headers["WWW-Authenticate"].startswith('Bearer realm="bitex"')


async def test_no_credentials(auth: Authenticator) -> None:
    error = await refused(auth, {"Accept": "application/json"})
    assert (error.code, error.status) == ("unauthorized", 401)
    assert "invalid_token" not in error.headers["WWW-Authenticate"]


async def test_the_clock_defaults_to_now(auth: Authenticator) -> None:
    now = int(time.time() * 1000)
    headers = headers_for("k-trade", now=now)
    principal = await auth.authenticate("GET", "/v1/orders", b"", headers)
    assert principal.permissions == {"trade", "withdraw"}
