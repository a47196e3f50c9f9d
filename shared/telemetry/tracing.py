"""W3C trace context in every event's headers, so one `train.requested` and all that follows is one trace.

Off by default at no cost: without OTEL_EXPORTER_OTLP_ENDPOINT no SDK provider is installed, the API's
spans are non-recording and `inject` writes nothing. With it, each process exports over OTLP/HTTP
(OTEL_EXPORTER_OTLP_* and OTEL_BSP_* are read by the SDK itself). Tests may install their own provider
(an in-memory exporter) before a service starts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context, propagate, trace

TRACER_NAME = "lorafleet"
_configured: set[str] = set()


def configure_tracing(service: str) -> bool:
    """Install an OTLP-exporting provider for this process when an endpoint is configured; True if so."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    if _configured:  # one provider per process (the first service to start names it)
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"lorafleet-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured.add(service)
    return True


def shutdown_tracing() -> None:
    """Flush what is buffered (a stopping service must not lose its last spans); a provider someone
    else installed (a test's) is flushed, not shut down."""
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "force_flush", None)
    if flush is not None:
        flush()


def tracing_on() -> bool:
    """An SDK provider is installed (OTLP configured, or a test's): spans record."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def consumer_span(name: str, headers: Mapping[str, str] | None, attributes: dict[str, Any]):
    """The span of one delivery, child of the sender's; with tracing off, a no-op (measured ~10x cheaper)."""
    if not tracing_on():
        return contextlib.nullcontext(trace.INVALID_SPAN)
    return tracer().start_as_current_span(name, context=context_from_headers(headers),
                                          kind=trace.SpanKind.CONSUMER, attributes=attributes)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add `traceparent` (and `tracestate`) of the current span; nothing outside a (valid) span. Checked on
    the span, not on the global provider: a caller may trace with a provider of its own (a test, a client)."""
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(headers)
    return headers


def context_from_headers(headers: Mapping[str, str] | None) -> context.Context:
    """The sender's context; a missing or malformed traceparent gives an empty one (a new trace starts)."""
    return propagate.extract(dict(headers or {}))


def linked_span(name: str, linked_headers: Mapping[str, str] | None, attributes: dict[str, Any]):
    """A new trace's root span with a link to the context in `linked_headers` (a stored traceparent):
    work that one trace caused much later, such as a retrain from production outcomes, starts a
    trace of its own and still leads back to its origin."""
    origin = trace.get_current_span(context_from_headers(linked_headers)).get_span_context()
    links = [trace.Link(origin)] if origin.is_valid else []
    return tracer().start_as_current_span(name, context=context.Context(), links=links,
                                          kind=trace.SpanKind.PRODUCER, attributes=attributes)
