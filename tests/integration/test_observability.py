"""What an operator sees: every role's probes and metrics, one trace across the roles,
and JSON log lines that carry it and no secret.

Every role runs as its own process, as in production, on an isolated topic
prefix and scratch database; spans are exported to each role's log
(``OTEL_TRACES_EXPORTER=console``), one JSON object per line like the logs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from infra.settings import Settings
from infra.topics import TopicMap
from streams.workers import WriteSide, free_port
from tests.integration.conftest import bitex_cli

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ROLES = ("accounts", "matching", "projections", "gateway")
PASSWORD = "observability horse battery"
OPERATOR = "ops-obs@example.com"
SPANS = {"POST /v1/orders", "accounts process", "matching process", "projections apply"}
"""The spans of one traced order, one per role."""
CLIENT_TRACE_ID = uuid.uuid4().hex
CLIENT_SPAN_ID = uuid.uuid4().hex[:16]


@dataclass
class Session:
    """What the scripted session left behind, for the tests to look for."""

    side: WriteSide
    http: httpx.AsyncClient
    order_id: str
    trace_id: str
    secrets: list[str]

    def lines(self, role: str) -> list[dict[str, Any]]:
        text = self.side.log_path(role).read_text()
        return [orjson.loads(line) for line in text.splitlines() if line.strip()]

    def logged(self, role: str, msg: str) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines(role)
            if line.get("msg") == msg and line.get("trace_id") == self.trace_id
        ]

    def spans(self) -> dict[str, dict[str, Any]]:
        """This trace's spans by name, from every role's log."""
        found = {}
        for role in ROLES:
            for line in self.lines(role):
                if line.get("context", {}).get("trace_id") == f"0x{self.trace_id}":
                    found[line["name"]] = line
        return found


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(
    scratch_db: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Session]:
    topics = TopicMap(prefix=f"it-obs-{uuid.uuid4().hex[:10]}-")
    logs: Path = tmp_path_factory.mktemp("logs")
    port = free_port()
    env = {
        "BITEX_MYSQL_DATABASE": scratch_db.mysql_database,
        "BITEX_HTTP_PORT": str(port),
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    side = WriteSide(scratch_db, topics, logs, env=env)
    await side.create_topics()
    try:
        for role in ROLES:
            side.start(role)
        for role in ROLES:
            await side.wait_ready(role)
        added = await bitex_cli(
            topics, "operator", "add", "--email", OPERATOR, "--password", PASSWORD
        )
        assert added.returncode == 0, added.stderr
        async with httpx.AsyncClient(base_url=side.base_url("gateway"), timeout=30) as http:
            yield await _trade(side, http)
    finally:
        side.stop()
        await side.delete_topics()


async def _trade(side: WriteSide, http: httpx.AsyncClient) -> Session:
    """Two users, funded by the operator, trade; the buy order comes with its own trace."""
    secrets = [PASSWORD]

    async def login(email: str) -> dict[str, str]:
        response = await http.post("/v1/sessions", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        secrets.append(response.json()["token"])
        return {"Authorization": f"Bearer {response.json()['token']}"}

    operator = await login(OPERATOR)
    auth = {}
    for name, asset, amount in (("alice", "USDT", "100000"), ("bob", "BTC", "2")):
        email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
        response = await http.post("/v1/users", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        auth[name] = await login(email)
        deposit = {"email": email, "asset": asset, "amount": amount, "tx_id": uuid.uuid4().hex}
        response = await http.post("/v1/admin/deposits", json=deposit, headers=operator)
        assert response.status_code == 201, response.text
    key = await http.post("/v1/api-keys", json={"permissions": ["read"]}, headers=auth["bob"])
    assert key.status_code == 201, key.text
    secrets.append(key.json()["secret"])

    sell = {"symbol": "BTC-USDT", "side": "sell", "type": "limit", "price": "30000.00"}
    response = await http.post("/v1/orders", json={**sell, "quantity": "1"}, headers=auth["bob"])
    assert response.status_code == 201, response.text
    traceparent = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"
    buy = {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "30000.00"}
    response = await http.post(
        "/v1/orders",
        json={**buy, "quantity": "0.5"},
        headers={**auth["alice"], "traceparent": traceparent},
    )
    assert response.status_code == 201, response.text
    assert response.json()["fills"], "the buy order was meant to trade"
    found = Session(
        side, http, response.json()["order_id"], response.headers["x-trace-id"], secrets
    )
    # Each role exports its spans in the background, a moment after they end.
    deadline = time.monotonic() + 30
    while not (found.logged("projections", "projected") and set(found.spans()) >= SPANS):
        assert time.monotonic() < deadline, f"the trace is not complete: {set(found.spans())}"
        await asyncio.sleep(0.2)
    return found


# -- one trace, gateway to read models --------------------------------------------------


async def test_the_gateway_continues_the_trace_the_client_started(session: Session) -> None:
    assert session.trace_id == CLIENT_TRACE_ID
    [request] = session.logged("gateway", "request")
    assert (request["method"], request["route"], request["status"]) == ("POST", "/v1/orders", 201)


async def test_the_trace_id_is_in_each_processor_and_projection_line_for_the_order(
    session: Session,
) -> None:
    accounts = session.logged("accounts", "processed")
    matching = session.logged("matching", "processed")
    projected = session.logged("projections", "projected")
    assert accounts, "no accounts line carries the order's trace id"
    assert any(session.order_id in line["aggregates"] for line in matching)
    assert any(session.order_id in line["aggregates"] for line in projected)
    other = [
        line
        for role in ("accounts", "matching")
        for line in session.lines(role)
        if line.get("msg") == "processed" and line.get("trace_id") != session.trace_id
    ]
    assert all(session.order_id not in line["aggregates"] for line in other)


async def test_the_spans_form_one_trace_from_the_gateway_to_the_read_models(
    session: Session,
) -> None:
    spans = session.spans()
    gateway = spans["POST /v1/orders"]
    assert gateway["parent_id"] == f"0x{CLIENT_SPAN_ID}"
    assert gateway["attributes"]["http.response.status_code"] == 201
    for name in SPANS - {"POST /v1/orders"}:
        assert spans[name]["parent_id"] == gateway["context"]["span_id"], name
    services = {span["resource"]["attributes"]["service.name"] for span in spans.values()}
    assert services == {"bitex-api", "bitex-accounts", "bitex-matching", "bitex-projections"}


async def test_a_request_without_a_trace_gets_one_of_its_own(session: Session) -> None:
    response = await session.http.post("/v1/orders", json={"symbol": "BTC-USDT"})
    assert response.status_code == 401
    trace_id = response.headers["x-trace-id"]
    assert len(trace_id) == 32
    assert trace_id not in (session.trace_id, "0" * 32)


# -- logs -------------------------------------------------------------------------------


async def test_every_log_line_is_json_and_no_secret_is_in_any(session: Session) -> None:
    for role in ROLES:
        text = session.side.log_path(role).read_text()
        for line in text.splitlines():
            if line.strip():
                assert isinstance(orjson.loads(line), dict), (role, line)
        for secret in session.secrets:
            assert secret not in text, f"{role}'s log holds a secret"


# -- probes and metrics -----------------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


@pytest.mark.parametrize(
    ("role", "checks"),
    [
        ("accounts", {"kafka", "group"}),
        ("matching", {"kafka", "group"}),
        ("projections", {"kafka", "mysql", "redis"}),
        ("gateway", {"kafka", "mysql", "redis"}),
    ],
)
async def test_every_role_answers_its_probes(session: Session, role: str, checks: set[str]) -> None:
    base = session.side.base_url(role)
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        alive = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert set(ready.json()["checks"]) >= checks
    assert set(ready.json()["checks"].values()) == {"ok"}


async def test_every_role_serves_what_it_counts(session: Session) -> None:
    scraped = {}
    for role in ROLES:
        async with httpx.AsyncClient(base_url=session.side.base_url(role), timeout=10) as http:
            response = await http.get("/metrics")
        assert response.status_code == 200, role
        assert response.headers["content-type"].startswith("text/plain"), role
        scraped[role] = _samples(response.text)

    for role in ("accounts", "matching"):
        found = scraped[role]
        assert _total(found, "bitex_records_processed_total", role=role) >= 1, role
        assert _total(found, "bitex_records_written_total", role=role) >= 1, role
        assert _total(found, "bitex_processing_latency_seconds_count", role=role) >= 1, role
        lags = [k for k in found if k[0] == "bitex_consumer_lag"]
        assert lags, f"{role} reports no consumer lag"
        assert all(dict(labels)["role"] == role for _, labels in lags)
    projections = scraped["projections"]
    assert _total(projections, "bitex_events_projected_total") >= 1
    for store in ("mysql", "redis"):
        assert any(
            name == "bitex_projection_lag" and dict(labels)["projection"] == store
            for name, labels in projections
        ), store
    gateway = scraped["gateway"]
    orders = _total(
        gateway, "bitex_http_requests_total", method="POST", route="/v1/orders", status="201"
    )
    assert orders >= 2
    assert _total(gateway, "bitex_orders_total", outcome="accepted") >= 2


@pytest.mark.parametrize(
    ("only", "checks"), [("commands", {"kafka", "mysql", "redis"}), ("queries", {"mysql", "redis"})]
)
async def test_each_gateway_alone_answers_its_probes_and_metrics(
    session: Session, only: str, checks: set[str]
) -> None:
    """``bitex serve --only ...``: the gateways as their own Deployments run them."""
    port = free_port()
    env = {
        **os.environ,
        **session.side.env,
        "BITEX_TOPIC_PREFIX": session.side.topics.prefix,
        "BITEX_HTTP_PORT": str(port),
    }
    command = [sys.executable, "-m", "infra.cli", "serve", "--only", only]
    gateway = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    alive = await http.get("/healthz")
                    break
                except httpx.TransportError:
                    assert gateway.poll() is None, f"serve --only {only} exited"
                    assert time.monotonic() < deadline, f"serve --only {only} never answered"
                    await asyncio.sleep(0.2)
            ready = await http.get("/readyz")
            metrics = await http.get("/metrics")
    finally:
        gateway.terminate()
        gateway.wait(15)
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == checks
    served = _samples(metrics.text)
    assert _total(served, "bitex_http_requests_total", route="/healthz", status="200") >= 1
