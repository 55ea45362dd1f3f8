"""OpenTelemetry tracing from the gateway, through Kafka, to the read models.

A write request starts (or, given a ``traceparent`` header, continues) a
trace at the gateway. The command carries the W3C ``traceparent`` in its
Kafka headers; a processor continues the trace for the records it takes and
copies the header onto everything they cause, forwards included, so the next
processor and the projections continue the same trace. Outputs carry their
input's header unchanged rather than a new span id: a processor that
re-processes an input must re-emit byte-identical records.

Spans are exported only when configured, by the standard variables:
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console`` or ``none``; ``otlp`` when an
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else ``none``), the OTLP endpoint
variables, and ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` (every
trace by default). The trace id is in the log lines either way. While nothing
is exported, a request's server span is only its context (the same ids and
sampling decision), not recorded: recording it would be work for nobody.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.event_records import Headers, header

log = logging.getLogger("bitex.requests")

TRACEPARENT = "traceparent"
"""The W3C trace context header, on HTTP requests and on Kafka records alike."""
TRACESTATE = "tracestate"
"""Vendors' trace state, carried beside ``traceparent`` when a trace has any."""
TRACE_ID_HEADER = b"x-trace-id"
"""Returned on every traced response, so a client can quote it."""
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("bitex")


class UnknownExporter(ValueError):
    pass


def exporter_names(env: Mapping[str, str]) -> list[str]:
    configured = env.get("OTEL_TRACES_EXPORTER")
    if configured is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        configured = "otlp" if endpoint else "none"
    return [name.strip() for name in configured.split(",") if name.strip() not in ("", "none")]


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        # One span per line, so it sits well among the JSON log lines.
        return ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n")
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    msg = f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (use otlp, console or none)"
    raise UnknownExporter(msg)


class _Provider(TracerProvider):
    """The SDK's provider, knowing whether any span it ends goes anywhere."""

    exporting = False

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self.exporting = True


def setup_tracing(service: str, env: Mapping[str, str] | None = None) -> None:
    """Install this process's tracer provider, once; later calls change nothing."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    env = os.environ if env is None else env
    provider = _Provider(resource=Resource.create({"service.name": service}))
    for name in exporter_names(env):
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)


def _server_span(name: str, parent: Context | None) -> Span:
    """A request's span; when nothing would export it, only its context (the ids and
    the sampling decision the SDK would give it), since recording it is wasted work."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, _Provider) or provider.exporting:
        return _tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
    parent_span = trace.get_current_span(parent).get_span_context()
    ids = provider.id_generator
    trace_id = parent_span.trace_id if parent_span.is_valid else ids.generate_trace_id()
    sampling = provider.sampler.should_sample(parent, trace_id, name, SpanKind.SERVER)
    sampled = (
        TraceFlags.SAMPLED
        if sampling.decision is Decision.RECORD_AND_SAMPLE
        else TraceFlags.DEFAULT
    )
    return NonRecordingSpan(
        SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(sampled),
            trace_state=sampling.trace_state,
        )
    )


def trace_headers() -> list[tuple[str, bytes]]:
    """The current trace context as Kafka headers (none outside a trace): what the W3C
    propagator's ``inject`` writes, made directly (every published command carries it)."""
    span = trace.get_current_span().get_span_context()
    if span == trace.INVALID_SPAN_CONTEXT:
        return []
    traceparent = f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}"
    headers = [(TRACEPARENT, traceparent.encode())]
    if span.trace_state:
        headers.append((TRACESTATE, span.trace_state.to_header().encode()))
    return headers


def traceparent_of(headers: Headers | None) -> bytes | None:
    return header(headers, TRACEPARENT)


def _parent(traceparent: bytes) -> Context:
    return _PROPAGATOR.extract({TRACEPARENT: traceparent.decode(errors="replace")})


@contextmanager
def continued_span(
    name: str, traceparent: bytes, attributes: Mapping[str, str | int] | None = None
) -> Iterator[Span]:
    """A span continuing the trace a record carries, current while the block runs.

    ``span.is_recording()`` is false when the trace is not sampled: callers skip
    their per-record log line then, so an unsampled trace costs next to nothing.
    """
    with _tracer.start_as_current_span(
        name, context=_parent(traceparent), kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


def finished_span(
    name: str,
    traceparent: bytes,
    started_ns: int,
    attributes: Mapping[str, str | int] | None = None,
) -> Span:
    """A span of the given trace from ``started_ns`` until now, ended (for work done in
    bulk, like a projection's batch, where one block serves many traces at once).
    Being ended, it records nothing more: its context says whether it was sampled."""
    span = _tracer.start_span(
        name,
        context=_parent(traceparent),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        start_time=started_ns,
    )
    span.end()
    return span


class TraceRequests:
    """ASGI middleware: a server span for every write request, and a log line for it.

    Reads are not traced: they touch no Kafka, and their rate and latency are in
    the metrics. The response carries ``X-Trace-Id``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == b"traceparent"), None)
        method = scope["method"]
        span = _server_span(method, _parent(incoming) if incoming else None)
        if span.is_recording():
            with trace.use_span(span, end_on_exit=True):
                await self._traced(span, scope, receive, send)
            return
        # Nothing to record or end: the span need only be current (``use_span`` costs more).
        token = attach(trace.set_span_in_context(span))
        try:
            await self._traced(span, scope, receive, send)
        finally:
            detach(token)

    async def _traced(self, span: Span, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        trace_id = format(span.get_span_context().trace_id, "032x").encode()
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (TRACE_ID_HEADER, trace_id)]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            if span.is_recording():
                span.update_name(f"{method} {route}")
                span.set_attributes(
                    {
                        "http.request.method": method,
                        "http.route": route,
                        "http.response.status_code": status,
                    }
                )
            if log.isEnabledFor(logging.INFO):
                fields = {
                    "method": method,
                    "route": route,
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                }
                # ``log.info("request", extra=fields)`` without its walk up the stack for
                # the caller's file and line, which no formatter writes (once a request).
                log.handle(
                    log.makeRecord(
                        log.name, logging.INFO, __file__, 0, "request", (), None, extra=fields
                    )
                )
