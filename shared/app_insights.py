"""Application Insights envelopes for the gateway's own spans, at an eighth of the exporter's price.

The Azure Monitor trace exporter turns each span into a `TelemetryItem` through
its generated model layer, which validates and converts every field: about
0.2 ms of CPU per span, two spans a call, on a thread that holds the
interpreter lock the event loop needs. The gateway's request and attempt
spans have a fixed shape (`shared/telemetry.py` sets every attribute they
carry), so `GatewayTraceExporter` builds their envelopes directly as the JSON
the exporter would have sent (`tests/test_telemetry.py` holds it to that,
field by field), wrapped in the exporter's own model classes so that sending,
retrying from disk and its statistics work unchanged. Any other span (the
Azure SDK's Cosmos DB and Key Vault calls, or one of ours carrying an
attribute this module does not know) goes through the exporter's converter.

Imported only when telemetry is on.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, cast

from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter
from azure.monitor.opentelemetry.exporter import _utils as exporter_utils
from azure.monitor.opentelemetry.exporter._generated.exporter.models import TelemetryItem
from azure.monitor.opentelemetry.exporter.export.trace import _exporter as trace_exporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind

#: The attributes the gateway's spans carry (and the sampler's rate), none of
#: which the exporter's converter reads except as a custom property, but for
#: the HTTP ones of a request span. A span with any other goes the slow way.
REQUEST_ATTRIBUTES = frozenset(
    {
        "http.request.method",
        "http.route",
        "url.path",
        "http.response.status_code",
        "error.type",
        "gateway.request_id",
        "gateway.project",
        "_MS.sampleRate",
    }
)
#: What names a request (`{method} {route}`), which it must have.
REQUEST_ROUTE = ("http.request.method", "http.route")
ATTEMPT_ATTRIBUTES = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.response.time_to_first_chunk",
        "http.response.status_code",
        "error.type",
        "gateway.operation",
        "gateway.model",
        "gateway.deployment",
        "gateway.project",
        "gateway.stream",
        "gateway.retry_reason",
        "gateway.fallback_from",
        "_MS.sampleRate",
    }
)
#: Those the exporter sends as custom properties: all a span the fast way may carry.
CUSTOM_ATTRIBUTES = frozenset(
    key for key in REQUEST_ATTRIBUTES | ATTEMPT_ATTRIBUTES if not trace_exporter._is_standard_attribute(key)
)
#: The exporter's limits on a property and a name.
MAX_PROPERTY = 8 * 1024
MAX_NAME = 1024
SAMPLE_RATE = "_MS.sampleRate"
SCHEMA_VERSION = 2


class GatewayTraceExporter(AzureMonitorTraceExporter):
    """The Azure Monitor trace exporter, with a fast way for the gateway's own spans."""

    def __init__(self, instrumentation_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._instrumentation_name = instrumentation_name

    def _span_to_envelope(self, span: ReadableSpan) -> TelemetryItem:
        envelope = fast_envelope(span, self._instrumentation_name, self._instrumentation_key or "")
        # The exporter takes the JSON for its model: it reads no more of it than `Json` answers.
        return cast(TelemetryItem, envelope) if envelope is not None else super()._span_to_envelope(span)


@contextlib.contextmanager
def gateway_pipeline(instrumentation_name: str) -> Iterator[None]:
    """Within it, `configure_azure_monitor` builds a trace pipeline that exports with
    `GatewayTraceExporter` and leaves out the GenAI main-agent span processor.

    That processor attributes spans to the agent of a multi-agent system
    (`gen_ai.agent.*` on a parent span); no span here has an agent, yet it
    looks for one on every span's start and end. The distro has no switch
    for either: it builds both by the names it imported, which are pointed
    at the gateway's choices while it does.
    """
    from azure.monitor.opentelemetry import _configure

    distro_choices = _configure.AzureMonitorTraceExporter, _configure._GenAIMainAgentSpanProcessor
    _configure.AzureMonitorTraceExporter = functools.partial(GatewayTraceExporter, instrumentation_name)  # type: ignore[misc,assignment]
    _configure._GenAIMainAgentSpanProcessor = SpanProcessor  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        _configure.AzureMonitorTraceExporter, _configure._GenAIMainAgentSpanProcessor = distro_choices  # type: ignore[misc]


def fast_envelope(span: ReadableSpan, instrumentation_name: str, instrumentation_key: str) -> Json | None:
    """`span`'s envelope as the exporter would build it, or None for a span not of the gateway's shape."""
    scope = span.instrumentation_scope
    attributes = span.attributes or {}
    if scope is None or scope.name != instrumentation_name or span.events or span.links:
        return None
    context = span.context
    if context is None:
        return None
    span_id = f"{context.span_id:016x}"
    if span.kind is SpanKind.SERVER:
        if not REQUEST_ATTRIBUTES.issuperset(attributes) or not all(key in attributes for key in REQUEST_ROUTE):
            return None
        operation = " ".join(str(attributes[key]) for key in REQUEST_ROUTE)
        name, base_type, data = _request(span, span_id, operation, attributes)
    elif span.kind is SpanKind.CLIENT:
        if not ATTEMPT_ATTRIBUTES.issuperset(attributes):
            return None
        operation = span.name
        name, base_type, data = _dependency(span, span_id, operation)
    else:
        return None
    start = span.start_time or 0
    data["duration"] = exporter_utils.ns_to_duration((span.end_time or start) - start if start else 0)
    data["properties"] = {
        key: str(value)[:MAX_PROPERTY]
        for key, value in attributes.items()
        if key in CUSTOM_ATTRIBUTES and value is not None
    }
    tags = dict(_resource_tags(span.resource))
    tags["ai.operation.id"] = f"{context.trace_id:032x}"
    if span.parent is not None and span.parent.span_id:
        tags["ai.operation.parentId"] = f"{span.parent.span_id:016x}"
    tags["ai.operation.name"] = operation
    envelope: dict[str, Any] = {
        "name": name,
        "iKey": instrumentation_key,
        "tags": tags,
        "time": _timestamp(start),
        "data": Json(baseType=base_type, baseData=data),
    }
    if SAMPLE_RATE in attributes:
        envelope["sampleRate"] = attributes[SAMPLE_RATE]
    return Json(envelope)


def _request(span: ReadableSpan, span_id: str, operation: str, attributes: Any) -> tuple[str, str, Json]:
    status = int(attributes.get("http.response.status_code") or 0)
    data = RequestJson(
        {
            "ver": SCHEMA_VERSION,
            "name": operation[:MAX_NAME],
            "id": span_id,
            "responseCode": str(status),
            "success": span.status.is_ok and exporter_utils._is_status_code_success(status, is_trace=True),
            "measurements": {},
            "url": "",  # the exporter's, from a path without scheme and host
        }
    )
    return "Microsoft.ApplicationInsights.Request", "RequestData", data


def _dependency(span: ReadableSpan, span_id: str, operation: str) -> tuple[str, str, Json]:
    data = DependencyJson(
        {
            "ver": SCHEMA_VERSION,
            "name": operation[:MAX_NAME],
            "id": span_id,
            "resultCode": "0",
            "success": span.status.is_ok,
            "measurements": {},
            "type": "N/A",
        }
    )
    return "Microsoft.ApplicationInsights.RemoteDependency", "RemoteDependencyData", data


class Json(dict[str, Any]):
    """Part of an envelope, as the JSON the exporter sends: its encoder writes a dict as
    it is, where each of its models costs a call into Python to become one. It answers
    what the exporter reads of its models besides: the fields its own statistics count
    by (`data.base_type`, `data.base_data.success`) and `as_dict`, what it keeps on disk
    to retry, which holds its models' read-only fields too."""

    #: Read-only fields: kept on disk, not sent.
    readonly: ClassVar[Mapping[str, str]] = {}

    @property
    def data(self) -> Any:
        return self.get("data")

    @property
    def base_type(self) -> Any:
        return self.get("baseType")

    @property
    def base_data(self) -> Any:
        return self.get("baseData")

    @property
    def success(self) -> Any:
        return self.get("success")

    def as_dict(self) -> dict[str, Any]:
        fields = {key: value.as_dict() if isinstance(value, Json) else value for key, value in self.items()}
        return fields | dict(self.readonly)


class RequestJson(Json):
    readonly: ClassVar[Mapping[str, str]] = {"kind": "RequestData"}


class DependencyJson(Json):
    readonly: ClassVar[Mapping[str, str]] = {"kind": "RemoteDependencyData"}


def _resource_tags(resource: Resource) -> dict[str, str]:
    """The tags every envelope of `resource` carries. A provider has one resource, kept
    by identity (hashing a resource serializes it)."""
    global _last_resource
    if _last_resource is None or _last_resource[0] is not resource:
        tags = dict(exporter_utils.azure_monitor_context) | exporter_utils._populate_part_a_fields(resource)
        _last_resource = (resource, tags)
    return _last_resource[1]


_last_resource: tuple[Resource, dict[str, str]] | None = None


def _timestamp(nanoseconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(nanoseconds / 1e9, tz=datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")
