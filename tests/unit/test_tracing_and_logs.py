"""Traces that follow a command through Kafka headers, and the JSON lines that carry them."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra import tracing
from infra.logs import REDACTED, JsonFormatter
from infra.settings import Settings
from infra.topics import TopicMap
from infra.tracing import (
    TRACEPARENT,
    TraceRequests,
    UnknownExporter,
    continued_span,
    exporter_names,
    setup_tracing,
    trace_headers,
    traceparent_of,
)
from infra.worker_http import LOCAL_PORTS, PortInUse, WorkerHttp, metrics_port
from streams.app import MATCHING, ProcessorRuntime
from streams.records import InRecord, OutRecord
from streams.snapshots import Json


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process ends, from the provider the roles install."""
    setup_tracing("bitex-test", env={})
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


@pytest.fixture
def ended(spans: InMemorySpanExporter) -> InMemorySpanExporter:
    spans.clear()
    return spans


def _line(record: logging.LogRecord) -> dict[str, object]:
    parsed: dict[str, object] = orjson.loads(JsonFormatter().format(record))
    return parsed


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("bitex.test", logging.INFO, __file__, 1, msg, None, None)
    record.__dict__.update(extra)
    return record


# -- log lines --------------------------------------------------------------------------


def test_a_log_line_is_one_json_object_with_its_extra_fields() -> None:
    order_id = uuid.uuid4()
    line = _line(_record("placed", order_id=order_id, quantity=3, aggregates=["a", "b"]))
    assert line["msg"] == "placed"
    assert (line["level"], line["logger"]) == ("info", "bitex.test")
    assert (line["order_id"], line["quantity"], line["aggregates"]) == (
        str(order_id),
        3,
        ["a", "b"],
    )
    assert "trace_id" not in line, "no span is current"


@pytest.mark.parametrize("field", ["password", "secret", "token", "Authorization", "password_hash"])
def test_fields_that_could_hold_a_secret_are_never_written(field: str) -> None:
    line = _line(_record("careless", **{field: "hunter2"}))
    assert line[field] == REDACTED
    assert "hunter2" not in orjson.dumps(line).decode()


@pytest.mark.parametrize(
    "created",
    [1764138664.0, 1764138664.000499, 1764138664.0005, 1764138664.9995, 1764138664.9999996],
)
def test_a_line_says_its_time_in_utc_to_the_millisecond(created: float) -> None:
    """As ``datetime.isoformat`` writes it, a microsecond short of a second included."""
    formatter, record = JsonFormatter(), _record("timed")
    record.created = created
    first = orjson.loads(formatter.format(record))["ts"]
    record.created = created + 3600.25  # another hour, with the same formatter
    later = orjson.loads(formatter.format(record))["ts"]
    assert first == datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert later == datetime.fromtimestamp(created + 3600.25, UTC).isoformat(
        timespec="milliseconds"
    )


def test_a_line_written_inside_a_span_names_its_trace(ended: InMemorySpanExporter) -> None:
    with trace.get_tracer("test").start_as_current_span("work") as span:
        line = _line(_record("inside"))
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")


# -- exporters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
    ],
)
def test_spans_are_exported_only_where_configured(env: dict[str, str], names: list[str]) -> None:
    assert exporter_names(env) == names


def test_an_unknown_exporter_is_refused_by_name() -> None:
    from infra import tracing

    with pytest.raises(UnknownExporter, match="zipkin"):
        tracing._exporter("zipkin")


# -- across Kafka -----------------------------------------------------------------------


def test_a_record_continues_the_trace_its_headers_carry(ended: InMemorySpanExporter) -> None:
    assert trace_headers() == [], "outside a trace a command carries no context"
    with trace.get_tracer("test").start_as_current_span("gateway") as gateway:
        headers = trace_headers()
    traceparent = traceparent_of(headers)
    assert traceparent is not None
    with continued_span(
        "processor", traceparent, {"messaging.destination.partition.id": 1}
    ) as current:
        assert current.is_recording()
    [_, processor] = ended.get_finished_spans()
    assert processor.name == "processor"
    assert processor.parent is not None
    assert processor.context is not None
    assert processor.context.trace_id == gateway.get_span_context().trace_id
    assert processor.parent.span_id == gateway.get_span_context().span_id


def test_an_unsampled_trace_records_no_span(ended: InMemorySpanExporter) -> None:
    unsampled = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00".encode()
    with continued_span("processor", unsampled) as span:
        assert not span.is_recording()
    assert ended.get_finished_spans() == ()


class _EchoCore:
    """A core whose outputs are a function of its input, as every core's must be."""

    snapshot_due = False

    def handle(self, record: InRecord) -> list[OutRecord]:
        return [
            OutRecord("events", record.partition, b"k", record.value, [("bitex-id", b"order-1")]),
            OutRecord("outcomes", 0, b"k", record.value, []),
        ]

    def restore(self, stored: object, headers: object) -> None: ...

    def note_processed(self, record: InRecord) -> None: ...

    def snapshot(self) -> Json:
        return {}

    def load(self, state: Json) -> None: ...


def test_a_processor_carries_the_input_trace_onto_every_output_unchanged(
    ended: InMemorySpanExporter,
) -> None:
    runtime = ProcessorRuntime(MATCHING, Settings(), TopicMap(prefix="unit-"), {})
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01".encode()
    record = InRecord(0, 7, b"command", [(TRACEPARENT, traceparent)])
    core = _EchoCore()
    first = runtime._handle_traced(core, record, traceparent)
    again = runtime._handle_traced(core, record, traceparent)
    assert first == again, "re-processing an input must re-emit the very same records"
    for plain, traced in zip(core.handle(record), first, strict=True):
        assert traced.headers == [*plain.headers, (TRACEPARENT, traceparent)]
        assert (traced.topic, traced.key, traced.value) == (plain.topic, plain.key, plain.value)
    assert [span.name for span in ended.get_finished_spans()] == ["matching process"] * 2


# -- the gateway ------------------------------------------------------------------------


async def _created(request: Request) -> Response:
    logging.getLogger("bitex.test").info("handling")
    return JSONResponse({}, status_code=201)


def _gateway() -> httpx.AsyncClient:
    app = Starlette(
        routes=[Route("/v1/things/{thing_id}", _created, methods=["GET", "POST"])],
        middleware=[Middleware(TraceRequests)],
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def test_a_write_request_gets_a_server_span_and_says_its_trace(
    ended: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client_trace = uuid.uuid4().hex
    async with _gateway() as client:
        response = await client.post(
            "/v1/things/42", headers={"traceparent": f"00-{client_trace}-{'ab' * 8}-01"}
        )
    assert response.headers["x-trace-id"] == client_trace
    [span] = ended.get_finished_spans()
    assert span.name == "POST /v1/things/{thing_id}"
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 201
    [request_line] = [r for r in caplog.records if r.getMessage() == "request"]
    assert (request_line.__dict__["route"], request_line.__dict__["status"]) == (
        "/v1/things/{thing_id}",
        201,
    )


def test_a_command_carries_the_trace_context_as_the_w3c_propagator_writes_it() -> None:
    state = TraceState([("vendor", "value"), ("other", "1")])
    propagator = TraceContextTextMapPropagator()
    for context in (
        SpanContext(uuid.uuid4().int, 0xAB, is_remote=False, trace_flags=TraceFlags(1)),
        SpanContext(uuid.uuid4().int, 0xCD, is_remote=True, trace_state=state),
    ):
        with trace.use_span(NonRecordingSpan(context)):
            carrier: dict[str, str] = {}
            propagator.inject(carrier)
            assert trace_headers() == [(key, value.encode()) for key, value in carrier.items()]
    assert trace_headers() == [], "outside a trace"


async def _command_headers(request: Request) -> Response:
    """What a command published here would carry, and the trace the log lines name."""
    context = trace.get_current_span().get_span_context()
    carried = {key: value.decode() for key, value in trace_headers()}
    return JSONResponse({**carried, "logged": format(context.trace_id, "032x")}, status_code=202)


async def test_with_nothing_exported_a_write_still_has_its_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No span is recorded when nothing would export it, but the trace is the same: the
    client's trace continued (sampled or not, as it said), or a sampled one of its own."""
    quiet = tracing._Provider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: quiet)
    app = Starlette(
        routes=[Route("/v1/things", _command_headers, methods=["POST"])],
        middleware=[Middleware(TraceRequests)],
    )
    transport = httpx.ASGITransport(app=app)
    client_trace, client_span = uuid.uuid4().hex, "ab" * 8
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        answers = {
            flags: await client.post(
                "/v1/things", headers={"traceparent": f"00-{client_trace}-{client_span}-{flags}"}
            )
            for flags in ("01", "00")
        }
        fresh = await client.post("/v1/things")
    for flags, answer in answers.items():
        assert answer.headers["x-trace-id"] == client_trace
        version, trace_id, span_id, carried_flags = answer.json()[TRACEPARENT].split("-")
        assert (version, trace_id, carried_flags) == ("00", client_trace, flags)
        assert span_id not in (client_span, "0" * 16), "the gateway's own span"
        assert answer.json()["logged"] == client_trace
    own = fresh.headers["x-trace-id"]
    assert own not in (client_trace, "0" * 32)
    assert fresh.json()[TRACEPARENT].startswith(f"00-{own}-")
    assert fresh.json()[TRACEPARENT].endswith("-01")
    assert not quiet.exporting


async def test_reads_are_not_traced(ended: InMemorySpanExporter) -> None:
    async with _gateway() as client:
        response = await client.get("/v1/things/42")
    assert "x-trace-id" not in response.headers
    assert ended.get_finished_spans() == ()


# -- the workers' probe and metrics server ----------------------------------------------


def test_each_role_has_its_own_local_port_unless_one_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BITEX_METRICS_PORT", raising=False)
    assert [metrics_port(role) for role in LOCAL_PORTS] == [9101, 9102, 9103]
    assert metrics_port("matching", instance=2) == 9122
    monkeypatch.setenv("BITEX_METRICS_PORT", "9100")
    assert metrics_port("accounts") == 9100
    monkeypatch.setenv("BITEX_METRICS_PORT", "0")
    assert metrics_port("accounts") is None


def test_a_port_in_use_stops_the_worker_with_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match="BITEX_METRICS_PORT"):
            WorkerHttp("127.0.0.1", port, dict)
