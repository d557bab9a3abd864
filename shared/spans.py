"""The gateway's own spans, at a fraction of the SDK's price per span.

The SDK's span checks and copies each attribute as it is set, under a lock,
and builds a second, read-only copy of itself when it ends: about 20 µs a
span, two or more a call. The gateway's spans carry only its own attributes
(strings, numbers and booleans, a few dozen at most: `shared/telemetry.py`
sets them all), so `GatewayTracer` starts them as the SDK's tracer would (the
same ids, sampler, flags and trace state) and `GatewaySpan` keeps them in a
plain dict, handing the tracer's span processors the SDK's `ReadableSpan`
when it ends: what the exporters, and the tests' in-memory ones, receive
from any span. The processors' `on_start` is not called: the pipeline's own
(the batch processor) does nothing there.

Imported only when telemetry is on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AnyValue, Attributes

UNSET = Status(StatusCode.UNSET)


class GatewayTracer:
    """Starts `GatewaySpan`s for an SDK tracer, with its sampler, ids, resource and processors."""

    def __init__(self, tracer: trace.Tracer, name: str) -> None:
        if not isinstance(tracer, SdkTracer):
            raise TypeError(f"telemetry records with the OpenTelemetry SDK's tracer, not {type(tracer).__name__}")
        self.sampler = tracer.sampler
        self.ids = tracer.id_generator
        self.resource = tracer.resource
        self.processor = tracer.span_processor
        self.scope = InstrumentationScope(name)

    def start(self, name: str, kind: SpanKind, parent_context: Context | None, attributes: dict[str, Any]) -> Span:
        """A span under `parent_context`'s span (the current one when None), as the SDK's
        tracer would start it; one the sampler leaves unrecorded still parents its children."""
        parent: SpanContext | None = trace.get_current_span(parent_context).get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self.ids.generate_trace_id()
            random_trace_id = self.ids.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_trace_id = parent.trace_flags.random_trace_id
        sampling = self.sampler.should_sample(parent_context, trace_id, name, kind, attributes)
        flags = TraceFlags.SAMPLED if sampling.decision.is_sampled() else TraceFlags.DEFAULT
        if random_trace_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        span_context = SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=sampling.trace_state,
        )
        if not sampling.decision.is_recording():
            return trace.NonRecordingSpan(span_context)
        return GatewaySpan(self, name, kind, span_context, parent, dict(sampling.attributes))


class GatewaySpan(Span):
    """A recording span whose attributes are a plain dict, ended into a `ReadableSpan`.

    The gateway never adds events, links or exceptions to its spans (a failure is
    its `error.type` and status), so those calls are taken and left out, as they
    are for a span the sampler did not record."""

    def __init__(
        self,
        tracer: GatewayTracer,
        name: str,
        kind: SpanKind,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._kind = kind
        self._context = context
        self._parent = parent
        self._attributes = attributes
        self._status = UNSET
        self._start_time = time.time_ns()
        self._ended = False

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        tracer = self._tracer
        tracer.processor.on_end(
            ReadableSpan(
                name=self._name,
                context=self._context,
                parent=self._parent,
                resource=tracer.resource,
                attributes=self._attributes,
                kind=self._kind,
                status=self._status,
                start_time=self._start_time,
                end_time=end_time or time.time_ns(),
                instrumentation_scope=tracer.scope,
            )
        )

    def get_span_context(self) -> SpanContext:
        return self._context

    def set_attributes(self, attributes: Mapping[str, AnyValue]) -> None:
        if not self._ended:
            self._attributes.update(attributes)

    def set_attribute(self, key: str, value: AnyValue) -> None:
        if not self._ended:
            self._attributes[key] = value

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        return None

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        return None

    def update_name(self, name: str) -> None:
        if not self._ended:
            self._name = name

    def is_recording(self) -> bool:
        return not self._ended

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK's span: OK is final; a description goes only with an error."""
        if self._ended or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            self._status = status
        else:
            self._status = Status(status, description if status is StatusCode.ERROR else None)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        return None
